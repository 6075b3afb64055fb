// Every call the dashboard makes to the service goes through this module.
//
// Auth: with `auth.api_keys` set, the dashboard signs in once (POST /api/session with the key in
// the JSON body) and from then on rides on the HttpOnly session cookie the service sets; fetch and
// EventSource send it on their own (same origin). The key itself is never kept by the page: not in
// a variable that outlives the sign-in request, not in localStorage or sessionStorage, and never
// in a URL. A 401 from any call means the session is gone (expired, signed out, keys rotated):
// the handler set with onUnauthorized() puts the sign-in form back.

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_" + status;
    this.path = err.path || null;
  }
}

const JSON_TYPE = "application/json";
const SESSION_PATH = "/api/session";

/** What the service said about auth: whether keys are required and whether we hold a session. */
export const session = { auth: false, signedIn: true };

let unauthorized = null;
let epoch = 0; // bumped at each sign-in: a 401 to a request sent before it is old news

/** Call `fn` when the service answers 401 (the session is gone). */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

function signedOut() {
  session.auth = true;
  session.signedIn = false;
  if (unauthorized) unauthorized();
}

async function request(method, path, body) {
  const sentIn = epoch;
  const init = { method, headers: { Accept: JSON_TYPE }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = JSON_TYPE;
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { error: { code: "network", message: "the service is unreachable" } });
  }
  let data = null;
  if (resp.status !== 204) {
    const text = await resp.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
  }
  if (resp.status === 401 && path !== SESSION_PATH) {
    if (sentIn === epoch) signedOut();
    throw new ApiError(401, { error: { code: "unauthorized", message: "your session has ended; sign in again" } });
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return { status: resp.status, data };
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

const enc = encodeURIComponent;

export const api = {
  tasks: async () => (await request("GET", "/api/tasks")).data.tasks,
  queues: async () => (await request("GET", "/api/queues")).data.queues,
  jobs: async (params) => (await request("GET", "/api/jobs" + query(params))).data,
  job: async (id) => (await request("GET", `/api/jobs/${enc(id)}`)).data,
  submit: (body) => request("POST", "/api/jobs", body),
  cancel: (id) => request("POST", `/api/jobs/${enc(id)}/cancel`),
  retry: (id) => request("POST", `/api/jobs/${enc(id)}/retry`),
  dead: async (queue) => (await request("GET", `/api/queues/${enc(queue)}/dead`)).data.jobs,
  workers: async () => (await request("GET", "/api/workers")).data.workers,
  trend: async (params) => (await request("GET", "/api/stats/trend" + query(params))).data,
  pause: (queue) => request("POST", `/api/queues/${enc(queue)}/pause`),
  resume: (queue) => request("POST", `/api/queues/${enc(queue)}/resume`),

  // Bulk actions answer { action, dry_run, count, outcomes: { outcome: n }, queue?, results? };
  // with dryRun nothing changes and `count` says how many jobs the action would touch.
  /** Cancel or retry many jobs at once (at most 1000 ids). */
  bulk: async (action, ids, dryRun = false) =>
    (await request("POST", "/api/jobs/bulk" + query({ dry_run: dryRun ? 1 : null }), { action, ids })).data,
  retryDead: async (queue, dryRun = false) =>
    (await request("POST", `/api/queues/${enc(queue)}/dead/retry` + query({ dry_run: dryRun ? 1 : null }))).data,
  purgeDead: async (queue, dryRun = false) =>
    (await request("POST", `/api/queues/${enc(queue)}/dead/purge` + query({ dry_run: dryRun ? 1 : null }))).data,
  /** Delete the queue's jobs that finished before `before` (ms since the epoch). */
  purgeFinished: async (queue, before, dryRun = false) =>
    (
      await request("POST", `/api/queues/${enc(queue)}/purge` + query({ dry_run: dryRun ? 1 : null }), {
        finished_before: before,
      })
    ).data,

  /** GET /api/session: { auth, signed_in }; also remembered in `session`. */
  async session() {
    const { data } = await request("GET", SESSION_PATH);
    session.auth = Boolean(data && data.auth);
    session.signedIn = !session.auth || Boolean(data && data.signed_in);
    return session;
  },
  /** Exchange a key for the session cookie. The key goes in the body, nowhere else. */
  async signIn(key) {
    await request("POST", SESSION_PATH, { key });
    epoch += 1;
    session.auth = true;
    session.signedIn = true;
  },
  async signOut() {
    await request("DELETE", SESSION_PATH);
    session.signedIn = !session.auth;
  },
};

/**
 * Before a stream that the browser gave up on is opened again: with auth on, ask whether the
 * session still holds (an EventSource cannot tell a 401 from any other failure). A lost session
 * calls the onUnauthorized handler, which ends the view and its streams.
 */
export async function checkSession() {
  if (!session.auth || !session.signedIn) return;
  const s = await api.session();
  if (s.auth && !s.signedIn) signedOut();
}

/**
 * The firehose URL: every job's events, optionally filtered by queue and task. `stats`: "1" adds
 * the deployment's figures about once a second (a `stats` event), "only" asks for those alone.
 */
export function firehoseUrl({ queue, task, lastEventId, stats } = {}) {
  return "/api/events" + query({ queue, task, stats, last_event_id: lastEventId });
}

/** A job's own stream: its events_url (which may carry a signed token), resumed after an id. */
export function jobStreamUrl(job, lastEventId) {
  const url = new URL(job.events_url || `/api/jobs/${enc(job.id)}/events`, location.href);
  if (lastEventId) url.searchParams.set("last_event_id", lastEventId);
  else url.searchParams.delete("last_event_id");
  return url.href;
}

/** An EventSource; same-origin cookies go along by default. */
export function openStream(url) {
  return new EventSource(url);
}

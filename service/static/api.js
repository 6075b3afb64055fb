// Every call the dashboard makes to the service goes through this module, so adding auth later
// (an Authorization header, or the HttpOnly session cookie) is a change in one place.

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

async function request(method, path, body) {
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
};

/** The firehose URL: every job's events, optionally filtered by queue and task. */
export function firehoseUrl({ queue, task, lastEventId } = {}) {
  return "/api/events" + query({ queue, task, last_event_id: lastEventId });
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

export const EVENT_TYPES = [
  "queued",
  "scheduled",
  "started",
  "progress",
  "log",
  "retrying",
  "succeeded",
  "failed",
  "cancelled",
  "snapshot",
];
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
export const STATES = ["queued", "scheduled", "running", "succeeded", "failed", "cancelled"];

// <tidings-progress src="EVENTS_URL">: one job's live progress for any page, with no dependencies.
//
//   <script type="module" src="https://tidings.example.com/static/tidings-progress.js"></script>
//   <tidings-progress src="{{ job.events_url }}"></tidings-progress>
//
// It shows an accessible bar (role="progressbar", aria-valuenow, aria-valuemax), the latest
// message and the state; reflects the state on the host as data-state (connecting, queued,
// scheduled, running, succeeded, failed, cancelled, gone, expired, error) and the stream's
// health as data-connection (live, reconnecting, offline, ended); follows the job's
// events with an EventSource, which resumes by itself with Last-Event-ID after a cut or a
// restart of the service; stops at the terminal event; and dispatches bubbling, composed DOM
// events:
//   tidings:event     every event: {type, id, data} (the SSE event, data parsed)
//   tidings:progress  each progress: {job, current, total, percent, message, state}
//   tidings:done      once, at the end: the final job (GET of the status URL, or as the events told)
//   tidings:expired   the link expired and no fresh one came: {job, lastEventId}
//   tidings:error     the link was refused (403): {job, status}
//
// A page on another origin needs that origin in the service's `http.cors_origins`.
//
// Long-lived pages: links carry a watch token that expires (`auth.token_ttl_s`). When the stream
// is refused with 401, the element calls `el.refreshUrl({job, lastEventId})`, a function the page
// supplies (it asks the app's backend, which calls POST /api/jobs/{id}/token with its key) that
// returns a fresh events URL; the element carries on from the last event it showed. Without
// one, it shows "expired" and dispatches tidings:expired.
//
// Styling: custom properties --tidings-bar-color, --tidings-track-color, --tidings-success-color,
// --tidings-failed-color, --tidings-cancelled-color, --tidings-height, --tidings-radius,
// --tidings-gap, --tidings-font; parts ::part(track) (the progressbar), ::part(bar), ::part(text),
// ::part(state), ::part(message), ::part(count).

const EVENT_TYPES = [
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
  "gone",
];
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const MAX_REFRESHES = 3; // fresh URLs in a row refused again: give up rather than loop

const CSS = `
:host { display: block; font: var(--tidings-font, inherit); }
:host([hidden]) { display: none; }
[part~="track"] {
  position: relative; overflow: hidden; height: var(--tidings-height, 0.5rem);
  background: var(--tidings-track-color, #e4e7ec); border-radius: var(--tidings-radius, 999px);
}
[part~="bar"] {
  height: 100%; width: 0; background: var(--tidings-bar-color, #2563eb);
  border-radius: inherit; transition: width 0.2s ease-out;
}
:host([data-state="succeeded"]) [part~="bar"] { background: var(--tidings-success-color, #15803d); }
:host([data-state="failed"]) [part~="bar"],
:host([data-state="error"]) [part~="bar"] { background: var(--tidings-failed-color, #b91c1c); }
:host([data-state="cancelled"]) [part~="bar"],
:host([data-state="gone"]) [part~="bar"],
:host([data-state="expired"]) [part~="bar"] { background: var(--tidings-cancelled-color, #a16207); }
.indeterminate [part~="bar"] { width: 30%; animation: tidings-slide 1.4s ease-in-out infinite; }
@keyframes tidings-slide { from { transform: translateX(-100%); } to { transform: translateX(340%); } }
@media (prefers-reduced-motion: reduce) {
  [part~="bar"] { transition: none; }
  .indeterminate [part~="bar"] { animation: none; width: 100%; opacity: 0.35; }
}
[part~="text"] {
  display: flex; gap: var(--tidings-gap, 0.6em); align-items: baseline;
  margin-top: 0.3em; font-size: 0.875em;
}
[part~="state"] { font-weight: 600; }
[part~="message"] { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
[part~="count"] { font-variant-numeric: tabular-nums; }
`;

const LABELS = {
  connecting: "connecting…",
  queued: "queued",
  scheduled: "scheduled",
  running: "running",
  succeeded: "succeeded",
  failed: "failed",
  cancelled: "cancelled",
  gone: "no longer available",
  expired: "link expired",
  error: "not allowed",
};

let sheet = null;
function styles(root) {
  try {
    if (!sheet) {
      sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
    }
    root.adoptedStyleSheets = [sheet]; // not an inline <style>: fine under a strict CSP
  } catch (e) {
    const style = document.createElement("style");
    style.textContent = CSS;
    root.append(style);
  }
}

function el(tag, attrs) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** A Redis stream id as a comparable pair, or null. */
function idKey(id) {
  const m = /^(\d+)-(\d+)$/.exec(id || "");
  return m ? [Number(m[1]), Number(m[2])] : null;
}

function after(a, b) {
  const x = idKey(a);
  const y = idKey(b);
  if (!x || !y) return true;
  return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]);
}

function fmt(n) {
  return typeof n === "number" ? n.toLocaleString() : "";
}

export class TidingsProgress extends HTMLElement {
  static observedAttributes = ["src"];

  #url = null; // the events URL in use (the src, or a refreshed one)
  #lastId = null;
  #es = null;
  #timer = null;
  #backoff = 500;
  #refreshes = 0;
  #ended = false;
  #doneSent = false;
  #display = null; // expired / error: what the element shows instead of the job's state
  #job = null;
  #parts;
  #refreshUrl = null;

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    styles(root);
    const track = el("div", {
      part: "track",
      role: "progressbar",
      "aria-valuemin": "0",
      "aria-label": "Job progress",
    });
    const bar = el("div", { part: "bar" });
    track.append(bar);
    const text = el("div", { part: "text" });
    const state = el("span", { part: "state", role: "status" });
    const message = el("span", { part: "message" });
    const count = el("span", { part: "count" });
    text.append(state, message, count);
    root.append(track, text);
    this.#parts = { track, bar, state, message, count };
    this.#job = this.#fresh();
    // no attributes on the host here: createElement() forbids it; connectedCallback renders
    // a property the page set before this module defined the element: take it over
    for (const name of ["refreshUrl", "src"]) {
      if (Object.prototype.hasOwnProperty.call(this, name)) {
        const value = this[name];
        delete this[name];
        this[name] = value;
      }
    }
  }

  /** A page-supplied async function ({job, lastEventId}) => a fresh events URL (or null),
   * called when the link in use has expired (401); see the top of this file. */
  get refreshUrl() {
    return this.#refreshUrl;
  }

  set refreshUrl(fn) {
    this.#refreshUrl = typeof fn === "function" ? fn : null;
  }

  /** The events URL (the `src` attribute). Setting another one follows another job. */
  get src() {
    return this.getAttribute("src") || "";
  }

  set src(value) {
    this.setAttribute("src", value);
  }

  /** The job as far as the events told (id, task, queue, state, attempt, progress, ...). */
  get job() {
    return this.#job ? structuredClone(this.#job) : null;
  }

  get state() {
    return this.dataset.state || "";
  }

  get lastEventId() {
    return this.#lastId;
  }

  connectedCallback() {
    const label = this.getAttribute("label");
    if (label) this.#parts.track.setAttribute("aria-label", label);
    this.#render();
    if (this.#ended || this.#es || this.#timer) return;
    if (this.#url) {
      this.#open(); // put back in the document: resume from the last event shown
    } else if (this.src) {
      this.#start(this.src);
    }
  }

  disconnectedCallback() {
    this.#close();
  }

  attributeChangedCallback(name, old, value) {
    if (name !== "src" || old === value || !this.isConnected) return;
    if (value === this.#url) return;
    this.#close();
    this.#reset();
    if (value) this.#start(value);
  }

  #reset() {
    this.#url = null;
    this.#lastId = null;
    this.#ended = false;
    this.#doneSent = false;
    this.#display = null;
    this.#refreshes = 0;
    this.#backoff = 500;
    this.#job = this.#fresh();
    this.#render();
  }

  #fresh() {
    return {
      id: null,
      state: "connecting",
      attempt: 0,
      progress: { current: null, total: null, message: null },
    };
  }

  #start(url) {
    this.#url = url;
    this.#job.id = this.#jobIdFrom(url);
    this.#open();
  }

  #jobIdFrom(url) {
    try {
      const m = /\/api\/jobs\/([^/]+)\/events$/.exec(new URL(url, document.baseURI).pathname);
      return m ? m[1] : null;
    } catch (e) {
      return null;
    }
  }

  /** The job's status URL: the events URL without `/events` (the token opens both). */
  #statusUrl() {
    const u = new URL(this.#url, document.baseURI);
    u.pathname = u.pathname.replace(/\/events$/, "");
    return u.href;
  }

  #open() {
    this.#close();
    const u = new URL(this.#url, document.baseURI);
    // a new EventSource starts without Last-Event-ID: name the position in the URL (the
    // browser's own reconnects send the header, which the service prefers)
    if (this.#lastId) u.searchParams.set("last_event_id", this.#lastId);
    const es = new EventSource(u.href);
    this.#es = es;
    const onEvent = (ev) => this.#onEvent(es, ev);
    for (const t of EVENT_TYPES) es.addEventListener(t, onEvent);
    es.addEventListener("open", () => {
      if (this.#es === es) {
        this.#backoff = 500;
        this.#refreshes = 0; // the link in use works
        this.dataset.connection = "live";
      }
    });
    es.addEventListener("error", () => this.#onError(es));
  }

  #close() {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#es) this.#es.close();
    this.#es = null;
  }

  #onEvent(es, ev) {
    if (es !== this.#es || this.#ended) return;
    const type = ev.type;
    const id = ev.lastEventId || null;
    // resumption is exact; this only guards against a proxy or a page replaying a stream
    if (id && this.#lastId && type !== "gone" && type !== "snapshot" && !after(id, this.#lastId)) {
      return;
    }
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    if (id && type !== "gone") this.#lastId = id;
    this.#apply(type, data);
    this.#render();
    this.#emit("tidings:event", { type, id: type === "gone" ? null : id, data });
    if (type === "progress") {
      const p = this.#job.progress;
      this.#emit("tidings:progress", {
        job: this.#job.id,
        current: p.current,
        total: p.total,
        percent: this.#percent(),
        message: p.message,
        state: this.#job.state,
      });
    }
    const over =
      type === "gone" ||
      FINISHED.has(type) ||
      (type === "snapshot" && FINISHED.has(this.#job.state));
    if (over) this.#finish();
  }

  #apply(type, d) {
    const job = this.#job;
    if (type === "snapshot") {
      for (const [k, v] of Object.entries(d)) {
        if (k === "type" || k === "reason") continue;
        if (k === "job") job.id = v;
        else job[k] = v;
      }
      job.progress = { current: null, total: null, message: null, ...(d.progress || {}) };
      return;
    }
    if (type === "gone") {
      job.state = "gone";
      job.error = { type: "Gone", message: d.reason || "job no longer exists" };
      return;
    }
    if (d.job) job.id = d.job;
    for (const k of ["state", "attempt", "task", "queue"]) if (d[k] !== undefined) job[k] = d[k];
    switch (type) {
      case "queued":
        if (d.attempt === 0) job.progress = { current: null, total: null, message: null };
        if (d.message) job.progress.message = d.message;
        break;
      case "progress":
        job.progress = {
          current: d.current ?? null,
          total: d.total ?? null,
          message: d.message ?? job.progress.message,
        };
        break;
      case "log":
        job.progress = { ...job.progress, message: d.message };
        break;
      case "retrying":
        job.error = d.error;
        break;
      case "succeeded":
        job.result = d.result;
        job.finished_at = d.ts;
        break;
      case "failed":
        job.error = d.error;
        job.finished_at = d.ts;
        break;
      case "cancelled":
        job.finished_at = d.ts;
        break;
      case "started":
        job.started_at = d.ts;
        break;
    }
  }

  #onError(es) {
    if (es !== this.#es) return;
    if (this.#ended) {
      this.#close();
      return;
    }
    if (es.readyState !== EventSource.CLOSED) {
      this.dataset.connection = "reconnecting"; // the browser retries by itself
      return;
    }
    // the browser gave up: an HTTP error (401 expired, 403, 404, 503) or a 204. Ask why.
    this.#close();
    this.dataset.connection = "offline";
    this.#diagnose();
  }

  async #diagnose() {
    const url = this.#url;
    let r;
    try {
      r = await fetch(this.#statusUrl(), { headers: { Accept: "application/json" } });
    } catch (e) {
      r = null; // unreachable (or refused by CORS): try the stream again later
    }
    if (url !== this.#url || this.#ended || !this.isConnected) return;
    if (r && r.status === 401) return this.#refresh();
    if (r && r.status === 403) return this.#giveUp("error", "tidings:error", { status: 403 });
    if (r && r.status === 404) {
      this.#apply("gone", { reason: "job no longer exists" });
      this.#render();
      return this.#finish();
    }
    if (r && r.ok) {
      let job = null;
      try {
        job = await r.json();
      } catch (e) {
        job = null;
      }
      if (job && FINISHED.has(job.state)) {
        this.#apply("snapshot", { ...job, job: job.id });
        this.#render();
        return this.#finish(job);
      }
    }
    this.#later();
  }

  #later() {
    const wait = this.#backoff * (0.5 + Math.random() / 2);
    this.#backoff = Math.min(this.#backoff * 2, 10000);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (!this.#ended && this.isConnected) this.#open();
    }, wait);
  }

  async #refresh() {
    if (!this.#refreshUrl || this.#refreshes >= MAX_REFRESHES) {
      return this.#giveUp("expired", "tidings:expired", { lastEventId: this.#lastId });
    }
    this.#refreshes += 1;
    let fresh = null;
    try {
      fresh = await this.#refreshUrl({ job: this.#job.id, lastEventId: this.#lastId });
    } catch (e) {
      fresh = null;
    }
    if (this.#ended || !this.isConnected) return;
    if (!fresh) return this.#giveUp("expired", "tidings:expired", { lastEventId: this.#lastId });
    this.#url = String(fresh);
    this.#open();
  }

  #giveUp(display, eventName, detail) {
    this.#close();
    this.#display = display;
    this.#render();
    this.#emit(eventName, { job: this.#job.id, ...detail });
  }

  async #finish(final = null) {
    this.#ended = true;
    this.#close();
    this.dataset.connection = "ended";
    if (this.#doneSent) return;
    this.#doneSent = true;
    let job = final;
    if (!job && this.#job.state !== "gone") {
      try {
        const r = await fetch(this.#statusUrl(), { headers: { Accept: "application/json" } });
        if (r.ok) job = await r.json();
      } catch (e) {
        job = null;
      }
    }
    this.#emit("tidings:done", job || this.job);
  }

  #emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  #percent() {
    const { current, total } = this.#job.progress;
    if (typeof total === "number" && total > 0 && typeof current === "number") {
      return Math.max(0, Math.min(100, (100 * current) / total));
    }
    return this.#job.state === "succeeded" ? 100 : null;
  }

  #render() {
    const job = this.#job;
    const state = this.#display || job.state || "connecting";
    this.dataset.state = state;
    const { track, bar, state: stateEl, message, count } = this.#parts;
    const { current, total } = job.progress;
    const pct = this.#percent();
    const known = typeof total === "number" && total > 0 && typeof current === "number";
    if (known) {
      track.setAttribute("aria-valuemax", String(total));
      track.setAttribute("aria-valuenow", String(Math.min(Math.max(current, 0), total)));
    } else if (pct !== null) {
      track.setAttribute("aria-valuemax", "100");
      track.setAttribute("aria-valuenow", String(pct));
    } else {
      track.setAttribute("aria-valuemax", "100");
      track.removeAttribute("aria-valuenow"); // indeterminate
    }
    const msg = job.progress.message || "";
    const amount = known ? `${fmt(current)} of ${fmt(total)} (${Math.round(pct)}%)` : "";
    track.setAttribute("aria-valuetext", [amount || LABELS[state] || state, msg].filter(Boolean).join(" — "));
    track.classList.toggle("indeterminate", pct === null && !FINISHED.has(state) && state !== "gone");
    bar.style.width = pct === null ? "" : `${pct}%`;
    stateEl.textContent = LABELS[state] || state;
    message.textContent = msg;
    message.title = msg;
    count.textContent = known ? `${fmt(current)} / ${fmt(total)}` : typeof current === "number" ? fmt(current) : "";
  }
}

if (!customElements.get("tidings-progress")) {
  customElements.define("tidings-progress", TidingsProgress);
}

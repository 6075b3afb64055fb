// Small DOM helpers. Text always goes in as text nodes (never innerHTML), and styles are set
// through the CSSOM, so the page runs under `Content-Security-Policy: default-src 'self'`.

import { EVENT_TYPES, checkSession, openStream } from "./api.js";

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function setText(el, text) {
  const t = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== t) el.textContent = t;
}

/** Announce a message to screen readers and show it in the toast area. */
export function announce(message, kind = "info") {
  const box = document.getElementById("toast");
  if (!box) return;
  const item = h("div", { class: `toast toast-${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

// -- formatting ----------------------------------------------------------------------------------

export function fmtNum(n) {
  if (n === null || n === undefined || n === "") return "";
  const x = Number(n);
  if (!Number.isFinite(x)) return String(n);
  return Number.isInteger(x) ? x.toLocaleString() : x.toLocaleString(undefined, { maximumFractionDigits: 2 });
}

export function parseTs(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

export function fmtTime(iso) {
  const t = parseTs(iso);
  if (t === null) return "";
  const d = new Date(t);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtDateTime(iso) {
  const t = parseTs(iso);
  if (t === null) return "—";
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, "0");
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${day} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  const hr = Math.floor(m / 60);
  return `${hr} h ${m - hr * 60} min`;
}

export function fmtAge(iso, now = Date.now()) {
  const t = parseTs(iso);
  if (t === null) return "";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ago`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ago`;
  return `${Math.floor(hr / 24)}d ago`;
}

/** A <time> that keeps its "…ago" text fresh (see tickAges). */
export function ageEl(iso) {
  const el = h("time", { class: "age", "data-rel": "" });
  setAge(el, iso);
  return el;
}

export function setAge(el, iso) {
  if (el.dataset.ts === (iso || "")) return;
  el.dataset.ts = iso || "";
  el.dateTime = iso || "";
  el.title = iso ? fmtDateTime(iso) : "";
  setText(el, fmtAge(iso));
}

export function tickAges(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll("time[data-rel]")) setText(el, fmtAge(el.dataset.ts, now));
}

export function jsonText(v) {
  if (v === undefined) return "";
  try {
    return JSON.stringify(v, null, 2);
  } catch (e) {
    return String(v);
  }
}

export function shortJson(v, max = 160) {
  let s;
  try {
    s = JSON.stringify(v);
  } catch (e) {
    s = String(v);
  }
  if (s === undefined) s = "";
  return s.length > max ? s.slice(0, max - 1) + "…" : s;
}

export function errorText(err) {
  if (err === null || err === undefined || err === "") return "";
  if (typeof err === "string") return err;
  if (typeof err === "object") {
    const type = err.type ? `${err.type}: ` : "";
    if (err.message !== undefined) return type + err.message;
  }
  return shortJson(err);
}

// -- state badge and progress bar --------------------------------------------------------------

export function stateBadge(state) {
  const el = h("span", { class: "badge" });
  setState(el, state);
  return el;
}

export function setState(el, state) {
  el.dataset.state = state || "";
  setText(el, state || "unknown");
}

/** The numbers a job's progress bar shows. */
export function progressModel(job) {
  const p = job.progress || {};
  const cur = typeof p.current === "number" ? p.current : null;
  const total = typeof p.total === "number" && p.total > 0 ? p.total : null;
  const msg = p.message || "";
  if (total !== null) {
    const now = Math.min(Math.max(cur || 0, 0), total);
    const pct = (now / total) * 100;
    const text = `${fmtNum(now)} of ${fmtNum(total)} (${Math.floor(pct)}%)` + (msg ? ` — ${msg}` : "");
    return { now, max: total, pct, text, label: msg || `${fmtNum(now)} / ${fmtNum(total)}`, indeterminate: false };
  }
  if (job.state === "succeeded") {
    return { now: 1, max: 1, pct: 100, text: msg || "done", label: msg || "done", indeterminate: false };
  }
  const done = cur !== null ? `${fmtNum(cur)} done` : "";
  const text = [done, msg].filter(Boolean).join(" — ") || job.state || "";
  return { now: 0, max: 1, pct: 0, text, label: text, indeterminate: job.state === "running" };
}

export function progressBar(name) {
  const fill = h("span", { class: "bar-fill" });
  const bar = h(
    "div",
    { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-label": name || "progress" },
    fill,
  );
  return bar;
}

export function setProgress(bar, job) {
  const m = progressModel(job);
  bar.setAttribute("aria-valuemax", String(m.max));
  bar.setAttribute("aria-valuenow", String(m.now));
  bar.setAttribute("aria-valuetext", m.text);
  bar.dataset.state = job.state || "";
  bar.classList.toggle("indeterminate", m.indeterminate);
  bar.firstChild.style.width = `${m.pct}%`;
  return m;
}

// -- live streams ---------------------------------------------------------------------------------

/**
 * An EventSource that keeps going: the browser resumes it with Last-Event-ID after a dropped
 * connection; if the browser gives up (an HTTP error such as 503 while the service restarts), it
 * is opened again after a backoff from the last id seen, unless `finished()` says the stream is
 * over (a job's stream ends after its terminal event, then answers 204).
 */
export class LiveStream {
  constructor({ url, onEvent, onStatus, onOpen, finished, beforeReopen }) {
    this.url = url; // (lastEventId) => string
    this.onEvent = onEvent;
    this.onStatus = onStatus || (() => {});
    this.onOpen = onOpen || (() => {});
    this.finished = finished || (() => false);
    this.beforeReopen = beforeReopen || (async () => {}); // e.g. fetch a fresh signed URL
    this.lastId = null;
    this.es = null;
    this.timer = null;
    this.backoff = 500;
    this.stopped = false;
    this.opened = false;
  }

  start(lastId = this.lastId) {
    this.stopped = false;
    this.lastId = lastId;
    this._open();
  }

  _open() {
    this._closeSource();
    const es = openStream(this.url(this.lastId));
    this.es = es;
    this.onStatus(this.opened ? "reconnecting" : "connecting");
    es.addEventListener("open", () => {
      if (this.es !== es) return;
      this.backoff = 500;
      const first = !this.opened;
      this.opened = true;
      this.onStatus("live");
      this.onOpen(first);
    });
    const handler = (ev) => {
      if (this.es !== es) return;
      if (ev.lastEventId) this.lastId = ev.lastEventId;
      let data = {};
      try {
        data = ev.data ? JSON.parse(ev.data) : {};
      } catch (e) {
        data = { raw: ev.data };
      }
      this.onEvent(ev.type, data, ev.lastEventId || null);
    };
    for (const t of EVENT_TYPES) es.addEventListener(t, handler);
    es.addEventListener("message", handler);
    es.addEventListener("error", () => {
      if (this.es !== es) return;
      if (this.stopped || this.finished()) {
        // a job's stream ends after its terminal event: don't reconnect just to get a 204
        this._closeSource();
        this.onStatus("ended");
        return;
      }
      if (es.readyState === EventSource.CLOSED) {
        this._closeSource();
        this.onStatus("offline");
        this.timer = setTimeout(async () => {
          this.timer = null;
          try {
            await checkSession(); // to an EventSource, a 401 looks like any other failure
          } catch (e) {
            // unreachable: the stream's own attempt tells
          }
          if (this.stopped) return;
          try {
            await this.beforeReopen();
          } catch (e) {
            // still unreachable: the next attempt backs off further
          }
          if (!this.stopped && !this.es && !this.timer) this._open();
        }, this.backoff);
        this.backoff = Math.min(this.backoff * 2, 10000);
      } else {
        this.onStatus("reconnecting");
      }
    });
  }

  _closeSource() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.es) this.es.close();
    this.es = null;
  }

  /** Stop for good (or until start() again). */
  stop(status = "ended") {
    this.stopped = true;
    this._closeSource();
    this.onStatus(status);
  }
}

const STATUS_TEXT = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  offline: "offline, retrying…",
  ended: "stream ended",
};

export function streamBadge() {
  const el = h("span", { class: "stream", role: "status", "aria-live": "polite" });
  setStreamStatus(el, "connecting");
  return el;
}

export function setStreamStatus(el, status, text) {
  el.dataset.status = status;
  setText(el, text || STATUS_TEXT[status] || status);
}

/** Compare two Redis stream ids ("ms-seq"). */
export function compareIds(a, b) {
  const [am, as] = String(a).split("-");
  const [bm, bs] = String(b).split("-");
  const d = Number(am) - Number(bm);
  if (d !== 0) return d < 0 ? -1 : 1;
  const e = Number(as || 0) - Number(bs || 0);
  return e < 0 ? -1 : e > 0 ? 1 : 0;
}

/** Run `fn` once per frame at most (and at least every 250 ms in a background tab). */
export function batcher(fn) {
  let queued = false;
  let timer = null;
  let raf = null;
  const run = () => {
    if (!queued) return;
    queued = false;
    if (raf !== null) cancelAnimationFrame(raf);
    if (timer !== null) clearTimeout(timer);
    raf = timer = null;
    fn();
  };
  const schedule = () => {
    if (queued) return;
    queued = true;
    raf = requestAnimationFrame(run);
    timer = setTimeout(run, 250);
  };
  schedule.flush = run;
  schedule.cancel = () => {
    queued = false;
    if (raf !== null) cancelAnimationFrame(raf);
    if (timer !== null) clearTimeout(timer);
  };
  return schedule;
}

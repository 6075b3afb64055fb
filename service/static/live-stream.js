// The one way the dashboard follows events live, used by the jobs list (the firehose) and the job
// page (one job's stream).
//
// An EventSource that keeps going: the browser resumes it with Last-Event-ID after a dropped
// connection; if the browser gives up (an HTTP error such as 503 while the service restarts), it
// is opened again after a backoff from the last id seen, unless `finished()` says the stream is
// over (a job's stream ends after its terminal event, then answers 204).

import { checkSession, openStream } from "./api.js";
import { EVENT_TYPES } from "./contract.js";

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

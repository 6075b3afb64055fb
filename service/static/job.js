// The job page at "/jobs/{id}": state, progress, timings, payload, result or error, and the full
// event log, live from the job's own event stream. The log shows every event exactly once: the
// browser resumes the stream with Last-Event-ID after a disconnect (a service restart, say), and
// rows are keyed by event id anyway.

import { api, jobStreamUrl, TERMINAL } from "./api.js";
import {
  LiveStream,
  announce,
  batcher,
  clear,
  compareIds,
  errorText,
  fmtDateTime,
  fmtDuration,
  fmtNum,
  fmtTime,
  h,
  jsonText,
  parseTs,
  progressBar,
  setProgress,
  setState,
  setStreamStatus,
  setText,
  stateBadge,
  streamBadge,
} from "./dom.js";
import { applyEvent, eventDetails } from "./model.js";

const MAX_ROWS = 2000; // rows kept in the log; the service itself keeps jobs.max_events per job
const CANCELLABLE = new Set(["queued", "scheduled", "running"]);
const RETRYABLE = new Set(["failed", "cancelled"]);

export function mountJob(root, id) {
  let disposed = false;
  let job = null;
  let stream = null;
  const seen = new Set();
  let pending = [];
  let lastRowId = null;

  const heading = h("h1", { tabindex: "-1" }, h("span", { class: "task-name" }, "Job"));
  const view = h(
    "section",
    { class: "view view-job" },
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/" }, "Jobs"), " / ", h("span", { class: "mono" }, id)),
    h("div", { class: "view-head" }, heading),
    h("p", { class: "muted" }, "Loading…"),
  );
  root.append(view);

  const ui = {};

  function build() {
    clear(view);
    ui.state = stateBadge(job.state);
    ui.status = streamBadge();
    ui.cancel = h("button", { type: "button", class: "danger", onclick: doCancel }, "Cancel");
    ui.retry = h("button", { type: "button", onclick: doRetry }, "Retry");
    ui.bar = progressBar(`progress of job ${job.id}`);
    ui.barText = h("p", { class: "bar-text" });
    ui.facts = {};
    const fact = (key, label) => {
      ui.facts[key] = h("dd");
      return h("div", null, h("dt", null, label), ui.facts[key]);
    };
    ui.payload = h("pre", { class: "json", tabindex: "0", "aria-label": "payload" });
    ui.resultCard = h("section", { class: "card card-result", hidden: true });
    ui.result = h("pre", { class: "json", tabindex: "0", "aria-label": "result" });
    ui.resultCard.append(h("h2", null, "Result"), ui.result);
    ui.errorCard = h("section", { class: "card card-error", hidden: true });
    ui.errorTitle = h("h2", null, "Error");
    ui.errorMsg = h("p", { class: "error-msg" });
    ui.traceback = h("pre", { class: "traceback", tabindex: "0" });
    ui.traceBox = h("details", null, h("summary", null, "Traceback"), ui.traceback);
    ui.errorCard.append(ui.errorTitle, ui.errorMsg, ui.traceBox);
    ui.count = h("span", { class: "muted count" });
    ui.trimmed = 0;
    ui.trimNote = h("p", { class: "muted small", hidden: true });
    ui.log = h("tbody");
    setText(heading.firstChild, job.task);

    view.append(
      h(
        "nav",
        { class: "crumbs", "aria-label": "Breadcrumb" },
        h("a", { href: "/" }, "Jobs"),
        " / ",
        h("span", { class: "mono" }, job.id),
      ),
      h(
        "div",
        { class: "view-head" },
        heading,
        ui.state,
        ui.status,
        h("span", { class: "spacer" }),
        h("div", { class: "actions" }, ui.cancel, ui.retry),
      ),
      h("div", { class: "job-progress" }, ui.bar, ui.barText),
      h(
        "div",
        { class: "cards" },
        h(
          "section",
          { class: "card card-facts" },
          h("h2", null, "Details"),
          h(
            "dl",
            { class: "facts" },
            fact("queue", "Queue"),
            fact("attempt", "Attempt"),
            fact("created", "Created"),
            fact("started", "Started"),
            fact("finished", "Finished"),
            fact("waited", "Waited"),
            fact("ran", "Ran"),
            fact("timeout", "Timeout"),
          ),
        ),
        h("section", { class: "card card-payload" }, h("h2", null, "Payload"), ui.payload),
        ui.resultCard,
        ui.errorCard,
      ),
      h(
        "section",
        { class: "card card-log", "aria-labelledby": "log-h" },
        h("h2", { id: "log-h" }, "Events ", ui.count),
        ui.trimNote,
        h(
          "div",
          { class: "table-scroll" },
          h(
            "table",
            { class: "events" },
            h(
              "thead",
              null,
              h(
                "tr",
                null,
                h("th", { scope: "col" }, "Time"),
                h("th", { scope: "col" }, "Event"),
                h("th", { scope: "col" }, "Attempt"),
                h("th", { scope: "col" }, "Details"),
              ),
            ),
            ui.log,
          ),
        ),
      ),
    );
    render();
  }

  function render() {
    if (!ui.state) return;
    setState(ui.state, job.state);
    const m = setProgress(ui.bar, job);
    setText(ui.barText, m.text);
    ui.cancel.hidden = !CANCELLABLE.has(job.state);
    ui.retry.hidden = !RETRYABLE.has(job.state);
    const f = ui.facts;
    setText(f.queue, job.queue);
    setText(f.attempt, `${job.attempt} of ${job.max_attempts ?? "?"}`);
    setText(f.created, fmtDateTime(job.created_at));
    setText(f.started, fmtDateTime(job.started_at));
    setText(f.finished, fmtDateTime(job.finished_at));
    renderDurations();
    setText(f.timeout, job.timeout_s ? fmtDuration(job.timeout_s * 1000) : "none");
    if (ui.shownPayload !== job.payload) {
      ui.shownPayload = job.payload;
      setText(ui.payload, jsonText(job.payload));
    }
    const hasResult = job.state === "succeeded";
    ui.resultCard.hidden = !hasResult;
    if (hasResult && ui.shownResult !== job.result) {
      ui.shownResult = job.result;
      setText(ui.result, jsonText(job.result));
    }
    const err = job.error;
    const hasError = err !== null && err !== undefined && err !== "";
    ui.errorCard.hidden = !hasError;
    if (hasError) {
      setText(ui.errorTitle, job.state === "failed" ? "Error" : "Last error");
      setText(ui.errorMsg, errorText(err));
      const tb = typeof err === "object" && err.traceback ? err.traceback : "";
      ui.traceBox.hidden = !tb;
      setText(ui.traceback, tb);
    }
    setText(ui.count, `(${fmtNum(seen.size)})`);
    document.title = `${job.task} · ${job.state} · Tidings`;
  }

  function renderDurations() {
    const f = ui.facts;
    const created = parseTs(job.created_at);
    const started = parseTs(job.started_at);
    const finished = parseTs(job.finished_at);
    const now = Date.now();
    setText(f.waited, started !== null && created !== null ? fmtDuration(started - created) : "—");
    if (started === null) setText(f.ran, "—");
    else if (finished !== null) setText(f.ran, fmtDuration(finished - started));
    else if (job.state === "running") setText(f.ran, `${fmtDuration(now - started)} so far`);
    else setText(f.ran, "—");
  }

  // -- the event log -------------------------------------------------------------------------------
  function logRow(e) {
    const d = e.data;
    return h(
      "tr",
      { dataset: { eventId: e.id ?? "", event: e.type } },
      h("td", { class: "c-time" }, h("time", { datetime: d.ts || "", title: d.ts || "" }, fmtTime(d.ts))),
      h("td", { class: "c-event" }, h("span", { class: "ev", dataset: { event: e.type } }, e.type)),
      h("td", { class: "c-attempt", "data-label": "attempt" }, d.attempt ?? ""),
      h("td", { class: "c-details" }, eventDetails(e.type, d)),
    );
  }

  const flush = batcher(() => {
    if (!ui.log) return;
    const batch = pending;
    pending = [];
    const frag = document.createDocumentFragment();
    for (const e of batch) {
      const tr = logRow(e);
      if (lastRowId === null || e.id === null || compareIds(e.id, lastRowId) > 0) {
        frag.append(tr);
        if (e.id !== null) lastRowId = e.id;
      } else {
        // out of order (should not happen: ids of one job strictly increase): put it in place
        ui.log.append(frag);
        let before = null;
        for (const other of ui.log.children) {
          if (other.dataset.eventId && compareIds(other.dataset.eventId, e.id) > 0) {
            before = other;
            break;
          }
        }
        ui.log.insertBefore(tr, before);
      }
    }
    ui.log.append(frag);
    let dropped = 0;
    while (ui.log.children.length > MAX_ROWS) {
      ui.log.firstElementChild.remove();
      dropped += 1;
    }
    if (dropped) {
      ui.trimmed += dropped;
      ui.trimNote.hidden = false;
      setText(ui.trimNote, `${fmtNum(ui.trimmed)} earlier events are not shown; the latest ${fmtNum(MAX_ROWS)} are.`);
    }
    render();
  });

  function onEvent(type, data, eventId) {
    if (disposed) return;
    const dup = eventId !== null && seen.has(eventId);
    if (type === "snapshot") {
      applyEvent(job, type, data); // the current state, whatever we saw before
    } else if (dup) {
      return;
    } else {
      applyEvent(job, type, data);
    }
    if (!dup) {
      if (eventId !== null) seen.add(eventId);
      pending.push({ id: eventId, type, data });
    }
    flush();
  }

  function onStatus(s) {
    if (!ui.status) return;
    const text = s === "ended" && TERMINAL.has(job.state) ? "finished" : undefined;
    setStreamStatus(ui.status, s, text);
  }

  function startStream() {
    if (!stream) {
      stream = new LiveStream({
        url: (lastEventId) => jobStreamUrl(job, lastEventId),
        onEvent,
        onStatus,
        finished: () => TERMINAL.has(job.state),
        beforeReopen: async () => {
          // the events_url may carry a signed, expiring token: get a fresh one
          const fresh = await api.job(job.id);
          if (fresh.events_url) job.events_url = fresh.events_url;
        },
      });
    }
    stream.start(stream.lastId);
  }

  // -- actions --------------------------------------------------------------------------------------
  async function doCancel() {
    ui.cancel.disabled = true;
    try {
      const res = await api.cancel(job.id);
      announce(res.status === 202 ? "Cancellation requested: the worker stops the job shortly." : "Job cancelled.");
    } catch (e) {
      announce(`Could not cancel: ${e.message}`, "error");
    } finally {
      ui.cancel.disabled = false;
    }
  }

  async function doRetry() {
    ui.retry.disabled = true;
    try {
      const res = await api.retry(job.id);
      announce("Job queued again.");
      // not finished any more: the stream must go on (its 'queued' event follows)
      job.state = res.data.state;
      render();
      if (stream && !stream.es) startStream(); // resume after the last event we saw
    } catch (e) {
      announce(`Could not retry: ${e.message}`, "error");
    } finally {
      ui.retry.disabled = false;
    }
  }

  // -- start ------------------------------------------------------------------------------------------
  api
    .job(id)
    .then((j) => {
      if (disposed) return;
      job = j;
      build();
      startStream();
    })
    .catch((e) => {
      if (disposed) return;
      clear(view);
      view.append(
        h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/" }, "Jobs")),
        h("div", { class: "view-head" }, heading),
        h(
          "p",
          { class: "banner banner-error", role: "alert" },
          e.status === 404 ? "No such job. Finished jobs expire after the retention period." : `Could not load the job: ${e.message}`,
        ),
      );
      setText(heading.firstChild, "Job not found");
    });

  const ticker = setInterval(() => {
    if (job && ui.facts && job.state === "running") renderDurations();
  }, 1000);

  return {
    title: "Job",
    focus: heading,
    dispose() {
      disposed = true;
      clearInterval(ticker);
      flush.cancel();
      if (stream) stream.stop();
    },
  };
}

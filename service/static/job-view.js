// The job page at "/jobs/{id}": state, progress, timings, payload, result or error, and the full
// event log, live from the job's own event stream. The log shows every event exactly once: the
// browser resumes the stream with Last-Event-ID after a disconnect (a service restart, say), and
// rows are keyed by event id anyway. This module loads the job and wires the parts together.

import { api } from "./api.js";
import { clear, h } from "./dom.js";
import { jobActions } from "./job-actions.js";
import { jobDetails } from "./job-details.js";
import { eventLog } from "./job-log.js";
import { applyEvent } from "./job-model.js";
import { jobStream } from "./job-stream.js";
import { crumbs, jobHeading, jobSummary, setHeading } from "./job-summary.js";

export function mountJob(root, id) {
  let disposed = false;
  let job = null;
  let parts = null; // once the job is loaded: { summary, details, actions, log }
  let stream = null;
  const workers = new Map(); // attempt -> the worker that ran it (from the started events)

  const heading = jobHeading();
  const view = h(
    "section",
    { class: "view view-job" },
    crumbs(id),
    h("div", { class: "view-head" }, heading),
    h("p", { class: "muted" }, "Loading…"),
  );
  root.append(view);

  function build() {
    clear(view);
    const actions = jobActions(job, { onRetried });
    const summary = jobSummary(job, heading, actions.el);
    const details = jobDetails();
    const log = eventLog({ onFlushed: render });
    parts = { summary, details, actions, log };
    view.append(...summary.els, details.el, log.el);
    details.renderWorkers(workers);
    render();
  }

  function render() {
    if (!parts) return;
    parts.summary.render(job);
    parts.actions.render(job);
    parts.details.render(job);
    parts.log.renderCount();
    document.title = `${job.task} · ${job.state} · Tidings`;
  }

  function onEvent(type, data, eventId) {
    if (disposed) return;
    const dup = parts.log.has(eventId);
    if (dup && type !== "snapshot") return;
    applyEvent(job, type, data); // a snapshot is the current state, whatever we saw before
    if (type === "started" && data.worker) {
      workers.set(data.attempt, data.worker);
      parts.details.renderWorkers(workers);
    } else if (type === "snapshot" && data.worker && data.attempt && !workers.has(data.attempt)) {
      workers.set(data.attempt, data.worker);
      parts.details.renderWorkers(workers);
    }
    if (!dup) parts.log.push(eventId, type, data);
    parts.log.schedule();
  }

  function onRetried(state) {
    // not finished any more: the stream must go on (its 'queued' event follows)
    job.state = state;
    render();
    stream.resume(); // after the last event we saw
  }

  api
    .job(id)
    .then((j) => {
      if (disposed) return;
      job = j;
      build();
      stream = jobStream(job, { onEvent, status: parts.summary.status });
      stream.start();
    })
    .catch((e) => {
      if (disposed) return;
      clear(view);
      const missing = e.status === 404;
      view.append(
        crumbs(null),
        h("div", { class: "view-head" }, heading),
        h(
          "p",
          { class: "banner banner-error", role: "alert" },
          missing ? "No such job. Finished jobs expire after the retention period." : `Could not load the job: ${e.message}`,
        ),
        // anything but a 404 may pass: offer to try again
        missing ? null : h("p", null, h("a", { href: `/jobs/${encodeURIComponent(id)}` }, "Try again")),
      );
      setHeading(heading, missing ? "Job not found" : "Job unavailable");
    });

  const ticker = setInterval(() => {
    if (job && parts && job.state === "running") parts.details.renderDurations(job);
  }, 1000);

  return {
    title: "Job",
    focus: heading,
    dispose() {
      disposed = true;
      clearInterval(ticker);
      if (parts) {
        parts.log.dispose();
        parts.actions.dispose();
      }
      if (stream) stream.stop();
    },
  };
}

// The job page's cards: facts (queue, attempt, the worker of each attempt, times, durations,
// timeout), payload, and the result or the error with its traceback.

import { clear, h, setText } from "./dom.js";
import { errorText, fmtDateTime, fmtDuration, jsonText, parseTs } from "./format.js";

export function jobDetails() {
  const facts = {};
  const fact = (key, label) => {
    facts[key] = h("dd");
    return h("div", null, h("dt", null, label), facts[key]);
  };
  const payload = h("pre", { class: "json", tabindex: "0", "aria-label": "payload" });
  const resultCard = h("section", { class: "card card-result", hidden: true });
  const result = h("pre", { class: "json", tabindex: "0", "aria-label": "result" });
  resultCard.append(h("h2", null, "Result"), result);
  const errorCard = h("section", { class: "card card-error", hidden: true });
  const errorTitle = h("h2", null, "Error");
  const errorMsg = h("p", { class: "error-msg" });
  const traceback = h("pre", { class: "traceback", tabindex: "0" });
  const traceBox = h("details", null, h("summary", null, "Traceback"), traceback);
  errorCard.append(errorTitle, errorMsg, traceBox);
  let shownPayload;
  let shownResult;

  const el = h(
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
        fact("workers", "Worker"),
        fact("created", "Created"),
        fact("started", "Started"),
        fact("finished", "Finished"),
        fact("waited", "Waited"),
        fact("ran", "Ran"),
        fact("timeout", "Timeout"),
      ),
    ),
    h("section", { class: "card card-payload" }, h("h2", null, "Payload"), payload),
    resultCard,
    errorCard,
  );

  /** Waited and Ran; a running job's Ran grows, so this is also called every second. */
  function renderDurations(job) {
    const created = parseTs(job.created_at);
    const started = parseTs(job.started_at);
    const finished = parseTs(job.finished_at);
    const now = Date.now();
    setText(facts.waited, started !== null && created !== null ? fmtDuration(started - created) : "—");
    if (started === null) setText(facts.ran, "—");
    else if (finished !== null) setText(facts.ran, fmtDuration(finished - started));
    else if (job.state === "running") setText(facts.ran, `${fmtDuration(now - started)} so far`);
    else setText(facts.ran, "—");
  }

  function render(job) {
    setText(facts.queue, job.queue);
    setText(facts.attempt, `${job.attempt} of ${job.max_attempts ?? "?"}`);
    setText(facts.created, fmtDateTime(job.created_at));
    setText(facts.started, fmtDateTime(job.started_at));
    setText(facts.finished, fmtDateTime(job.finished_at));
    renderDurations(job);
    setText(facts.timeout, job.timeout_s ? fmtDuration(job.timeout_s * 1000) : "none");
    if (shownPayload !== job.payload) {
      shownPayload = job.payload;
      setText(payload, jsonText(job.payload));
    }
    const hasResult = job.state === "succeeded";
    resultCard.hidden = !hasResult;
    if (hasResult && shownResult !== job.result) {
      shownResult = job.result;
      setText(result, jsonText(job.result));
    }
    const err = job.error;
    const hasError = err !== null && err !== undefined && err !== "";
    errorCard.hidden = !hasError;
    if (hasError) {
      setText(errorTitle, job.state === "failed" ? "Error" : "Last error");
      setText(errorMsg, errorText(err));
      const tb = typeof err === "object" && err.traceback ? err.traceback : "";
      traceBox.hidden = !tb;
      setText(traceback, tb);
    }
  }

  /** The worker of each attempt (attempt number -> worker name), from the started events. */
  function renderWorkers(byAttempt) {
    clear(facts.workers);
    if (!byAttempt.size) {
      facts.workers.append("—");
      return;
    }
    const list = h("ol", { class: "attempt-workers" });
    for (const [attempt, worker] of [...byAttempt].sort((a, b) => a[0] - b[0])) {
      list.append(h("li", { dataset: { attempt: String(attempt) } }, `attempt ${attempt}: `, h("span", { class: "mono" }, worker)));
    }
    facts.workers.append(list);
  }

  return { el, render, renderDurations, renderWorkers };
}

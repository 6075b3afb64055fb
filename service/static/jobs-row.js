// One row of the jobs table: a selection box, the job's task and full id (with a copy button),
// queue, state, attempt, age, runtime and progress.

import { ageEl, runtimeEl, setAge, setRuntime } from "./age.js";
import { copyButton } from "./copy-button.js";
import { h, setText } from "./dom.js";
import { errorText } from "./format.js";
import { progressBar, setProgress } from "./progress-bar.js";
import { setState, stateBadge } from "./state-badge.js";

/** The table's order is newest first: rows are sorted by this key, descending. */
export function sortKey(job) {
  return `${job.created_at || "9999"}|${job.id}`;
}

/** A row for `job`: { job, tr, parts }, already rendered. `onSelect(id, on)` when its box is
 * ticked or unticked. */
export function makeRow(job, { selected = false, onSelect } = {}) {
  const link = h("a", { href: `/jobs/${job.id}`, class: "job-link" }, h("span", { class: "task-name" }));
  const select = h("input", { type: "checkbox", class: "select", "aria-label": `Select job ${job.id}` });
  select.checked = selected;
  select.addEventListener("change", () => onSelect && onSelect(job.id, select.checked));
  const parts = {
    task: link.firstChild,
    select,
    queue: h("span"),
    state: stateBadge(job.state),
    attempt: h("span"),
    age: ageEl(job.created_at),
    runtime: runtimeEl(),
    bar: progressBar(`progress of job ${job.id}`),
    msg: h("span", { class: "bar-msg" }),
  };
  const tr = h(
    "tr",
    { dataset: { jobId: job.id } },
    h("td", { class: "c-select" }, select),
    h(
      "td",
      { class: "c-task", "data-label": "Task" },
      link,
      h("div", { class: "id-line" }, h("span", { class: "job-id" }, job.id), copyButton(job.id, `job id ${job.id}`)),
    ),
    h("td", { class: "c-queue", "data-label": "queue" }, parts.queue),
    h("td", { class: "c-state", "data-label": "State" }, parts.state),
    h("td", { class: "c-attempt", "data-label": "attempt" }, parts.attempt),
    h("td", { class: "c-age", "data-label": "" }, parts.age),
    h("td", { class: "c-runtime", "data-label": "ran" }, parts.runtime),
    h("td", { class: "c-progress", "data-label": "Progress" }, h("div", { class: "bar-wrap" }, parts.bar, parts.msg)),
  );
  const row = { job, tr, parts };
  renderRow(row);
  return row;
}

/** Bring a row's cells up to date with its job. */
export function renderRow(row) {
  const { job, tr, parts } = row;
  tr.dataset.state = job.state;
  setText(parts.task, job.task);
  setText(parts.queue, job.queue);
  setState(parts.state, job.state);
  setText(parts.attempt, job.max_attempts ? `${job.attempt}/${job.max_attempts}` : String(job.attempt ?? ""));
  setAge(parts.age, job.created_at);
  setRuntime(parts.runtime, job.started_at, job.finished_at, job.state === "running");
  const m = setProgress(parts.bar, job);
  // a failed job says why, a cancelled one nothing: the last progress text would mislead
  if (job.state === "failed") setText(parts.msg, errorText(job.error));
  else if (job.state === "cancelled") setText(parts.msg, "");
  else setText(parts.msg, m.label);
  parts.msg.classList.toggle("bar-error", job.state === "failed");
}

/** Tick or untick the row's box. */
export function setSelected(row, on) {
  row.parts.select.checked = on;
  row.tr.classList.toggle("is-selected", on);
}

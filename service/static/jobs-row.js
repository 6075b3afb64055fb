// One row of the jobs table: a job's task, queue, state, attempt, age and progress.

import { ageEl, setAge } from "./age.js";
import { h, setText } from "./dom.js";
import { progressBar, setProgress } from "./progress-bar.js";
import { setState, stateBadge } from "./state-badge.js";

/** The table's order is newest first: rows are sorted by this key, descending. */
export function sortKey(job) {
  return `${job.created_at || "9999"}|${job.id}`;
}

/** A row for `job`: { job, tr, parts }, already rendered. */
export function makeRow(job) {
  const link = h(
    "a",
    { href: `/jobs/${job.id}`, class: "job-link" },
    h("span", { class: "task-name" }),
    " ",
    h("span", { class: "job-id" }, job.id.slice(-8)),
  );
  link.title = job.id;
  const parts = {
    task: link.firstChild,
    queue: h("span"),
    state: stateBadge(job.state),
    attempt: h("span"),
    age: ageEl(job.created_at),
    bar: progressBar(`progress of job ${job.id}`),
    msg: h("span", { class: "bar-msg" }),
  };
  const tr = h(
    "tr",
    { dataset: { jobId: job.id } },
    h("td", { class: "c-task", "data-label": "Task" }, link),
    h("td", { class: "c-queue", "data-label": "queue" }, parts.queue),
    h("td", { class: "c-state", "data-label": "State" }, parts.state),
    h("td", { class: "c-attempt", "data-label": "attempt" }, parts.attempt),
    h("td", { class: "c-age", "data-label": "" }, parts.age),
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
  const m = setProgress(parts.bar, job);
  setText(parts.msg, m.label);
}

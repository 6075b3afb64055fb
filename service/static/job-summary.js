// The top of the job page: breadcrumb with the full job id (and a button to copy it), task name,
// state badge, stream status, the action buttons' place, and the progress bar with its text.

import { copyButton } from "./copy-button.js";
import { h, setText } from "./dom.js";
import { progressBar, setProgress } from "./progress-bar.js";
import { setState, stateBadge } from "./state-badge.js";
import { streamBadge } from "./stream-badge.js";

/** Jobs / {id} [Copy]; without an id, only the way back to the list. */
export function crumbs(id, { copy = false } = {}) {
  return h(
    "nav",
    { class: "crumbs", "aria-label": "Breadcrumb" },
    h("a", { href: "/" }, "Jobs"),
    id ? [" / ", h("span", { class: "mono job-full-id" }, id)] : null,
    id && copy ? [" ", copyButton(id, "job id")] : null,
  );
}

/** The page's heading, there before the job is loaded: <h1><span class="task-name">. */
export function jobHeading() {
  return h("h1", { tabindex: "-1" }, h("span", { class: "task-name" }, "Job"));
}

export function setHeading(heading, text) {
  setText(heading.firstChild, text);
}

/** The summary of a loaded job; `actions` is the element holding its buttons. */
export function jobSummary(job, heading, actions) {
  const state = stateBadge(job.state);
  const status = streamBadge();
  const bar = progressBar(`progress of job ${job.id}`);
  const barText = h("p", { class: "bar-text" });
  setHeading(heading, job.task);
  const els = [
    crumbs(job.id, { copy: true }),
    h("div", { class: "view-head" }, heading, state, status, h("span", { class: "spacer" }), actions),
    h("div", { class: "job-progress" }, bar, barText),
  ];
  return {
    els,
    status,
    render(job) {
      setState(state, job.state);
      const m = setProgress(bar, job);
      setText(barText, m.text);
    },
  };
}

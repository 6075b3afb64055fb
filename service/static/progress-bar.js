// A job's progress bar: an ARIA progressbar whose fill width is set through the CSSOM.

import { h } from "./dom.js";
import { progressModel } from "./progress.js";

export function progressBar(name) {
  const fill = h("span", { class: "bar-fill" });
  const bar = h(
    "div",
    { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-label": name || "progress" },
    fill,
  );
  return bar;
}

/** Show `job`'s progress on `bar`; returns the numbers and words shown (see progressModel). */
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

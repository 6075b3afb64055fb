// Times that move: "…ago" ages (<time>) and the runtime of running jobs, kept fresh by tickAges.

import { h, setText } from "./dom.js";
import { fmtAge, fmtDateTime, fmtDuration, parseTs } from "./format.js";

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

/** How long a job ran (or has been running: kept fresh by tickAges). */
export function runtimeEl() {
  return h("span", { class: "runtime" });
}

export function setRuntime(el, startedIso, finishedIso, running) {
  const from = parseTs(startedIso);
  const to = parseTs(finishedIso);
  if (from === null || (!running && to === null)) {
    delete el.dataset.runFrom;
    setText(el, "—");
    return;
  }
  if (running) {
    el.dataset.runFrom = String(from);
    setText(el, fmtDuration(Date.now() - from));
  } else {
    delete el.dataset.runFrom;
    setText(el, fmtDuration(to - from));
  }
}

export function tickAges(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll("time[data-rel]")) setText(el, fmtAge(el.dataset.ts, now));
  for (const el of root.querySelectorAll("[data-run-from]")) setText(el, fmtDuration(now - Number(el.dataset.runFrom)));
}

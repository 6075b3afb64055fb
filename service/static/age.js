// "…ago" times: a <time> element that says how long ago something was, kept fresh by tickAges.

import { h, setText } from "./dom.js";
import { fmtAge, fmtDateTime } from "./format.js";

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

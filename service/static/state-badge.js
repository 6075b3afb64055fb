// The badge that shows a job's state (styled by its data-state).

import { h, setText } from "./dom.js";

export function stateBadge(state) {
  const el = h("span", { class: "badge" });
  setState(el, state);
  return el;
}

export function setState(el, state) {
  el.dataset.state = state || "";
  setText(el, state || "unknown");
}

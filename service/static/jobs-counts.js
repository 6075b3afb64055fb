// Jobs per state above the list, from the firehose's `stats` event: unfinished jobs and failed
// ones still kept (the service counts those exactly), and for the other finished states the
// last hour's count. Each is a toggle that filters the list on its state. With a queue filter the
// counts are that queue's; they do not follow the task filter (the service counts per queue).

import { STATES } from "./contract.js";
import { h, setText } from "./dom.js";
import { fmtNum } from "./format.js";

/** `onPick(state)`: filter on `state` ("" for any). */
export function stateCounts(filters, { onPick }) {
  const items = new Map();
  const list = h("ul", { class: "state-counts" });
  for (const s of STATES) {
    const n = h("span", { class: "n" }, "–");
    const when = h("span", { class: "when" });
    const btn = h("button", { type: "button", class: "state-count", dataset: { state: s }, "aria-pressed": "false" }, h("span", { class: "badge", dataset: { state: s } }, s), n, when);
    btn.addEventListener("click", () => onPick(filters.state === s ? "" : s));
    items.set(s, { btn, n, when });
    list.append(h("li", null, btn));
  }
  const el = h("nav", { class: "counts", "aria-label": "Job counts" }, list);

  function mark() {
    for (const [s, it] of items) it.btn.setAttribute("aria-pressed", String(filters.state === s));
  }

  return {
    el,
    /** The counts of a `stats` event, for all queues or the one filtered on. */
    update(stats) {
      const queues = (stats.queues || []).filter((q) => !filters.queue || q.name === filters.queue);
      const kept = {};
      for (const s of Object.keys(stats.states || {})) kept[s] = 0;
      for (const q of queues) {
        if ("queued" in kept) kept.queued += q.queued || 0;
        if ("running" in kept) kept.running += q.running || 0;
        if ("scheduled" in kept) kept.scheduled += q.scheduled || 0;
        if ("failed" in kept) kept.failed += q.dead || 0;
      }
      const hour = {};
      for (const [name, outs] of Object.entries(stats.last_hour || {})) {
        if (filters.queue && name !== filters.queue) continue;
        for (const [s, n] of Object.entries(outs)) hour[s] = (hour[s] || 0) + n;
      }
      for (const [s, it] of items) {
        const isKept = s in kept;
        setText(it.n, fmtNum(isKept ? kept[s] : hour[s] || 0));
        setText(it.when, isKept ? "" : "last hour");
        it.btn.title = isKept ? `${s} jobs now` : `jobs ${s} in the last hour`;
      }
      mark();
    },
    mark,
  };
}

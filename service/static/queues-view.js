// The queues page at "/?view=queues": every queue's figures, live (the firehose's `stats` event),
// and what an operator does to a queue: pause or resume it, retry or purge its dead letters,
// purge its finished jobs older than some age.

import { ageEl, setAge } from "./age.js";
import { h, setText, syncKeyed } from "./dom.js";
import { fmtNum } from "./format.js";
import { FIGS } from "./jobs-queues.js";
import { queueActions } from "./queue-actions.js";
import { statsStream } from "./stats-stream.js";
import { streamBadge } from "./stream-badge.js";

function queueRow(name) {
  const q = encodeURIComponent(name);
  const row = { figs: {} };
  row.paused = h("span", { class: "badge badge-paused", hidden: true }, "paused");
  row.oldest = ageEl(null);
  row.actions = queueActions(name);
  const cells = FIGS.map((k) => {
    row.figs[k] = h("span", { class: "fig-n" });
    const inner = k === "dead" ? h("a", { href: `/?view=dead&queue=${q}` }, row.figs[k]) : row.figs[k];
    return h("td", { class: `num c-${k}`, "data-label": k }, inner);
  });
  row.tr = h(
    "tr",
    { dataset: { queue: name } },
    h(
      "th",
      { scope: "row", class: "c-name" },
      h("a", { href: `/?queue=${q}` }, name),
      " ",
      row.paused,
      h("a", { class: "small trend-link", href: `/?view=trend&queue=${q}` }, "trend"),
    ),
    cells,
    h("td", { class: "c-oldest", "data-label": "oldest waiting" }, row.oldest),
    h("td", { class: "c-actions" }, row.actions.el),
  );
  return row;
}

export function mountQueues(root) {
  const heading = h("h1", { tabindex: "-1" }, "Queues");
  const status = streamBadge();
  const rows = new Map();
  const tbody = h("tbody");
  const note = h("p", { class: "muted" }, "Loading…");
  const table = h(
    "table",
    { class: "queues-table" },
    h("caption", { class: "sr-only" }, "Queues and their figures, updated live"),
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        h("th", { scope: "col" }, "Queue"),
        FIGS.map((k) => h("th", { scope: "col", class: "num" }, k)),
        h("th", { scope: "col" }, "Oldest waiting"),
        h("th", { scope: "col" }, "Actions"),
      ),
    ),
    tbody,
  );
  root.append(
    h(
      "section",
      { class: "view view-queues" },
      h("div", { class: "view-head" }, heading, status),
      h(
        "p",
        { class: "muted" },
        "A paused queue keeps taking jobs, but workers start none from it until it is resumed; running jobs finish. Purged jobs are deleted for good.",
      ),
      h("div", { class: "table-scroll" }, table),
      note,
    ),
  );

  function update(stats) {
    const queues = stats.queues || [];
    table.dataset.statsAt = stats.ts || "";
    setText(note, queues.length ? "" : "No queues yet: a queue is created by the first job submitted to it.");
    syncKeyed(rows, queues, (q) => q.name, {
      make(q) {
        const row = queueRow(q.name);
        tbody.append(row.tr);
        return row;
      },
      render(row, q) {
        for (const k of FIGS) setText(row.figs[k], fmtNum(q[k] ?? 0));
        row.paused.hidden = !q.paused;
        row.tr.dataset.paused = q.paused ? "true" : "false";
        row.tr.classList.toggle("has-dead", q.dead > 0);
        setAge(row.oldest, q.oldest_queued_ms ? new Date(q.oldest_queued_ms).toISOString() : null);
        row.actions.render(q);
      },
      nodeOf: (row) => row.tr,
    });
  }

  const stream = statsStream({ onStats: update, status });
  return {
    title: "Queues",
    focus: heading,
    dispose() {
      stream.stop();
    },
  };
}

// The jobs list at "/": recent jobs newest first, driven live by one EventSource on the firehose.
// This module lays the parts out and wires them together; each part is its own module.

import { h } from "./dom.js";
import { filtersBar, filtersUrl, readFilters } from "./jobs-filters.js";
import { jobsLive } from "./jobs-live.js";
import { jobsLoader } from "./jobs-loader.js";
import { queueCards } from "./jobs-queues.js";
import { jobsTable } from "./jobs-table.js";
import { streamBadge } from "./stream-badge.js";

export function mountJobs(root, params, nav) {
  const filters = readFilters(params); // changed in place by the filters bar
  const status = streamBadge();
  const heading = h("h1", { tabindex: "-1" }, "Jobs");

  // the parts call each other through these (all set before anything runs)
  let loader = null;
  let live = null;
  const table = jobsTable({
    onChange: () => loader.updateEmpty(),
    onEvict: () => loader.noteEvicted(),
  });
  loader = jobsLoader({
    filters,
    table,
    apply: (type, data) => live.apply(type, data),
    onWindowChange: () => live.forgetIgnored(),
  });
  live = jobsLive({ filters, table, loader, status });
  const bar = filtersBar(filters, {
    onChange(streamChanged) {
      nav.replace(filtersUrl(filters));
      queues.markSelected();
      loader.forgetCursor();
      if (streamChanged) live.connect();
      else loader.reload();
    },
  });
  const queues = queueCards(filters, { onQueues: (names) => bar.setQueues(names) });

  root.append(
    h(
      "section",
      { class: "view view-jobs" },
      h(
        "div",
        { class: "view-head" },
        heading,
        status,
        h("span", { class: "spacer" }),
        h("a", { class: "button", href: "/?view=new" }, "New job"),
      ),
      queues.el,
      bar.el,
      loader.errorBox,
      table.el,
      loader.empty,
      loader.moreBox,
    ),
  );

  bar.start();
  live.connect();
  queues.start();

  return {
    title: "Jobs",
    focus: heading,
    dispose() {
      bar.dispose();
      loader.dispose();
      live.dispose();
      table.dispose();
      queues.dispose();
    },
  };
}

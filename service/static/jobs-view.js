// The jobs list at "/": recent jobs newest first, driven live by one EventSource on the firehose,
// which also brings the queue figures and the counts per state. Find a job by its id or the first
// characters of it, filter, select rows and cancel or retry them at once. This module lays the
// parts out and wires them together; each part is its own module.

import { h } from "./dom.js";
import { stateCounts } from "./jobs-counts.js";
import { filtersBar, filtersUrl, readFilters } from "./jobs-filters.js";
import { jobsLive } from "./jobs-live.js";
import { jobsLoader } from "./jobs-loader.js";
import { queueCards } from "./jobs-queues.js";
import { jobSelection } from "./jobs-select.js";
import { jobsTable } from "./jobs-table.js";
import { streamBadge } from "./stream-badge.js";

export function mountJobs(root, params, nav) {
  const filters = readFilters(params); // changed in place by the filters bar
  const status = streamBadge();
  const heading = h("h1", { tabindex: "-1" }, "Jobs");

  // the parts call each other through these (all set before anything runs)
  let loader = null;
  let live = null;
  let table = null;
  let lastStats = null;
  const selection = jobSelection({
    rows: () => (table ? table.rows() : []),
    show: (id, on) => table && table.showSelected(id, on),
  });
  table = jobsTable({
    onChange: () => {
      loader.updateEmpty();
      selection.sync();
    },
    onEvict: () => loader.noteEvicted(),
    selection,
  });
  loader = jobsLoader({
    filters,
    table,
    apply: (type, data) => live.apply(type, data),
    onWindowChange: () => live.forgetIgnored(),
  });
  const bar = filtersBar(filters, {
    onChange(streamChanged) {
      nav.replace(filtersUrl(filters));
      queues.markSelected();
      if (lastStats) counts.update(lastStats);
      else counts.mark();
      loader.forgetCursor();
      if (streamChanged) live.connect();
      else loader.reload();
    },
  });
  const queues = queueCards(filters, { onQueues: (names) => bar.setQueues(names) });
  const counts = stateCounts(filters, { onPick: (state) => bar.setState(state) });
  live = jobsLive({
    filters,
    table,
    loader,
    status,
    onStats(stats) {
      lastStats = stats;
      queues.update(stats);
      counts.update(stats);
    },
    onOffline: (offline) => queues.stale(offline),
  });

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
      counts.el,
      loader.errorBox,
      selection.bar,
      table.el,
      loader.empty,
      loader.moreBox,
    ),
  );

  bar.start();
  live.connect();

  return {
    title: "Jobs",
    focus: heading,
    dispose() {
      bar.dispose();
      loader.dispose();
      live.dispose();
      table.dispose();
    },
  };
}

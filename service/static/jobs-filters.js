// The jobs list's filters bar (state, task, queue), and the filters as the URL carries them.

import { api } from "./api.js";
import { STATES } from "./contract.js";
import { h } from "./dom.js";

/** The filters a jobs-list URL names: { state, task, queue }, "" when unset. */
export function readFilters(params) {
  return {
    state: params.get("state") || "",
    task: params.get("task") || "",
    queue: params.get("queue") || "",
  };
}

/** The jobs-list URL for these filters. */
export function filtersUrl(filters) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  return "/" + (q.toString() ? "?" + q : "");
}

export function anyFilter(filters) {
  return filters.state || filters.task || filters.queue;
}

export function matches(filters, job) {
  return (
    (!filters.state || job.state === filters.state) &&
    (!filters.task || job.task === filters.task) &&
    (!filters.queue || job.queue === filters.queue)
  );
}

/** Add the missing options to a <select> (keeping the selected value, even an unknown one). */
function syncOptions(select, values, selected) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const v of values) if (!have.has(v)) select.append(h("option", { value: v }, v));
  if (selected && !have.has(selected) && !values.includes(selected)) {
    select.append(h("option", { value: selected }, selected));
  }
  select.value = selected;
}

/**
 * The filters bar. A change updates `filters` in place, then calls `onChange(streamChanged)`:
 * streamChanged when the task or queue changed (the firehose is filtered by those two).
 */
export function filtersBar(filters, { onChange }) {
  let disposed = false;
  const stateSel = h(
    "select",
    { id: "f-state", name: "state" },
    h("option", { value: "" }, "any state"),
    STATES.map((s) => h("option", { value: s }, s)),
  );
  const taskSel = h("select", { id: "f-task", name: "task" }, h("option", { value: "" }, "any task"));
  const queueSel = h("select", { id: "f-queue", name: "queue" }, h("option", { value: "" }, "any queue"));
  const resetLink = h("a", { href: "/", class: "reset" }, "Clear filters");
  const el = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter jobs" },
    h("div", { class: "field" }, h("label", { for: "f-state" }, "State"), stateSel),
    h("div", { class: "field" }, h("label", { for: "f-task" }, "Task"), taskSel),
    h("div", { class: "field" }, h("label", { for: "f-queue" }, "Queue"), queueSel),
    resetLink,
  );

  el.addEventListener("submit", (ev) => ev.preventDefault());
  el.addEventListener("change", () => {
    const streamChanged = taskSel.value !== filters.task || queueSel.value !== filters.queue;
    filters.state = stateSel.value;
    filters.task = taskSel.value;
    filters.queue = queueSel.value;
    onChange(streamChanged);
  });

  return {
    el,
    /** Once the form is in the page: select the state, and fill the task and queue lists. */
    start() {
      stateSel.value = filters.state;
      api
        .tasks()
        .then((tasks) => {
          if (!disposed) syncOptions(taskSel, tasks.map((t) => t.name), filters.task);
        })
        .catch(() => {
          if (!disposed) syncOptions(taskSel, [], filters.task);
        });
      syncOptions(queueSel, [], filters.queue);
    },
    /** The queues that exist now (sorted names). */
    setQueues(names) {
      syncOptions(queueSel, names, filters.queue);
    },
    dispose() {
      disposed = true;
    },
  };
}

// The jobs list's filters bar (job id or prefix, state, task, queue, created between), and the
// filters as the URL carries them.

import { api } from "./api.js";
import { STATES } from "./contract.js";
import { h } from "./dom.js";
import { parseTs } from "./format.js";

const KEYS = ["q", "state", "task", "queue", "since", "until"];
const ID_CHARS = /^[0-9a-z]{0,26}$/;

/** The filters a jobs-list URL names: { q, state, task, queue, since, until } ("" when unset;
 * since and until are ms since the epoch, as the API takes them). */
export function readFilters(params) {
  const out = {};
  for (const k of KEYS) out[k] = params.get(k) || "";
  return out;
}

/** The jobs-list URL for these filters. */
export function filtersUrl(filters) {
  const q = new URLSearchParams();
  for (const k of KEYS) if (filters[k]) q.set(k, filters[k]);
  return "/" + (q.toString() ? "?" + q : "");
}

export function anyFilter(filters) {
  return KEYS.some((k) => filters[k]);
}

export function matches(filters, job) {
  if (filters.state && job.state !== filters.state) return false;
  if (filters.task && job.task !== filters.task) return false;
  if (filters.queue && job.queue !== filters.queue) return false;
  if (filters.q && !job.id.startsWith(filters.q)) return false;
  if (filters.since || filters.until) {
    const t = parseTs(job.created_at) ?? Date.now();
    if (filters.since && t < Number(filters.since)) return false;
    if (filters.until && t > Number(filters.until)) return false;
  }
  return true;
}

/** A datetime-local input's value for ms since the epoch (local time), and back. */
function toLocalInput(ms) {
  if (!ms) return "";
  const d = new Date(Number(ms));
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fromLocalInput(value) {
  if (!value) return "";
  const t = new Date(value).getTime();
  return Number.isFinite(t) ? String(t) : "";
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
  let typing = null;
  const search = h("input", {
    type: "search",
    id: "f-q",
    name: "q",
    class: "mono",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "full id or first characters",
    "aria-describedby": "f-q-err",
  });
  const searchErr = h("p", { class: "field-error", id: "f-q-err", hidden: true });
  const stateSel = h(
    "select",
    { id: "f-state", name: "state" },
    h("option", { value: "" }, "any state"),
    STATES.map((s) => h("option", { value: s }, s)),
  );
  const taskSel = h("select", { id: "f-task", name: "task" }, h("option", { value: "" }, "any task"));
  const queueSel = h("select", { id: "f-queue", name: "queue" }, h("option", { value: "" }, "any queue"));
  const since = h("input", { type: "datetime-local", id: "f-since", name: "since", step: "1" });
  const until = h("input", { type: "datetime-local", id: "f-until", name: "until", step: "1" });
  const resetLink = h("a", { href: "/", class: "reset" }, "Clear filters");
  const el = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Find jobs" },
    h("div", { class: "field field-q" }, h("label", { for: "f-q" }, "Job id"), search, searchErr),
    h("div", { class: "field" }, h("label", { for: "f-state" }, "State"), stateSel),
    h("div", { class: "field" }, h("label", { for: "f-task" }, "Task"), taskSel),
    h("div", { class: "field" }, h("label", { for: "f-queue" }, "Queue"), queueSel),
    h("div", { class: "field field-time" }, h("label", { for: "f-since" }, "Created from"), since),
    h("div", { class: "field field-time" }, h("label", { for: "f-until" }, "Created to"), until),
    resetLink,
  );

  /** The search text as the API takes it, or null (with the error shown) when it cannot be an id. */
  function searchValue() {
    const v = search.value.trim().toLowerCase();
    const ok = ID_CHARS.test(v);
    searchErr.hidden = ok;
    searchErr.textContent = ok ? "" : "A job id has only digits and the letters a–z (26 at most).";
    if (ok) search.removeAttribute("aria-invalid");
    else search.setAttribute("aria-invalid", "true");
    return ok ? v : null;
  }

  function apply() {
    clearTimeout(typing);
    const q = searchValue();
    if (q === null) return;
    const next = {
      q,
      state: stateSel.value,
      task: taskSel.value,
      queue: queueSel.value,
      since: fromLocalInput(since.value),
      until: fromLocalInput(until.value),
    };
    if (KEYS.every((k) => next[k] === filters[k])) return;
    const streamChanged = next.task !== filters.task || next.queue !== filters.queue;
    Object.assign(filters, next);
    onChange(streamChanged);
  }

  el.addEventListener("submit", (ev) => {
    ev.preventDefault();
    apply();
  });
  el.addEventListener("change", apply);
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(apply, 300);
  });

  return {
    el,
    /** Once the form is in the page: show the filters, and fill the task and queue lists. */
    start() {
      search.value = filters.q;
      stateSel.value = filters.state;
      since.value = toLocalInput(filters.since);
      until.value = toLocalInput(filters.until);
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
    /** Filter on this state (from the counts above the list). */
    setState(state) {
      stateSel.value = state;
      apply();
    },
    dispose() {
      disposed = true;
      clearTimeout(typing);
    },
  };
}

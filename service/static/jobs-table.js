// The jobs table: its rows newest first, at most CAP of them, re-rendered at most once a frame.
// Rows can be selected for a bulk action (`selection`, see jobs-select.js).

import { batcher } from "./batcher.js";
import { h } from "./dom.js";
import { makeRow, renderRow, setSelected, sortKey } from "./jobs-row.js";

const CAP = 1000; // rows kept at most; the oldest go first

/**
 * `onChange()` is called after rows are added or removed; `onEvict()` after the oldest row made
 * way for a newer one (the table no longer holds everything up to its oldest row). `selection`
 * keeps which rows are ticked (its `headBox` goes in the header).
 */
export function jobsTable({ onChange, onEvict, selection }) {
  const rows = new Map(); // id -> { job, tr, parts }
  const dirty = new Set();
  const tbody = h("tbody");
  const el = h(
    "table",
    { class: "jobs" },
    h("caption", { class: "sr-only" }, "Recent jobs, newest first, updated live"),
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        h("th", { scope: "col", class: "c-select" }, selection.headBox),
        h("th", { scope: "col" }, "Task and id"),
        h("th", { scope: "col" }, "Queue"),
        h("th", { scope: "col" }, "State"),
        h("th", { scope: "col" }, "Attempt"),
        h("th", { scope: "col" }, "Age"),
        h("th", { scope: "col" }, "Runtime"),
        h("th", { scope: "col", class: "c-progress" }, "Progress"),
      ),
    ),
    tbody,
  );

  function place(row) {
    const key = sortKey(row.job);
    let before = null;
    for (const tr of tbody.children) {
      const other = rows.get(tr.dataset.jobId);
      if (other && other !== row && sortKey(other.job) < key) {
        before = tr;
        break;
      }
    }
    if (row.tr.parentNode !== tbody || row.tr.nextSibling !== before) tbody.insertBefore(row.tr, before);
  }

  const rowOptions = (id) => ({ selected: selection.has(id), onSelect: (jid, on) => selection.set(jid, on) });

  function add(job) {
    const row = makeRow(job, rowOptions(job.id));
    rows.set(job.id, row);
    place(row);
    while (rows.size > CAP) {
      const last = tbody.lastElementChild;
      if (!last) break;
      remove(last.dataset.jobId);
      onEvict();
    }
    onChange();
    return row;
  }

  function remove(id) {
    const row = rows.get(id);
    if (!row) return;
    row.tr.remove();
    rows.delete(id);
    dirty.delete(id);
    selection.forget(id);
    onChange();
  }

  const flush = batcher(() => {
    for (const id of dirty) {
      const row = rows.get(id);
      if (row) renderRow(row);
    }
    dirty.clear();
  });

  return {
    el,
    get: (id) => rows.get(id),
    has: (id) => rows.has(id),
    get size() {
      return rows.size;
    },
    /** Every row shown, in no particular order. */
    rows: () => rows.values(),
    /** Tick or untick a row's box (the selection changed). */
    showSelected(id, on) {
      const row = rows.get(id);
      if (row) setSelected(row, on);
    },
    add,
    remove,
    /** The job in the last (oldest) row, or null. */
    oldest() {
      const last = tbody.lastElementChild;
      const row = last && rows.get(last.dataset.jobId);
      return row ? row.job : null;
    },
    /** Render this row with the next batch. */
    markDirty(id) {
      dirty.add(id);
      flush();
    },
    /** A fresher copy of a shown job: render it now and move it to its place. */
    update(row, job) {
      row.job = job;
      renderRow(row);
      place(row);
    },
    /** Show exactly these jobs, in this order (a page freshly loaded). */
    replace(jobs) {
      const keep = new Set();
      for (const job of jobs) {
        keep.add(job.id);
        const row = rows.get(job.id);
        if (row) {
          row.job = job;
          renderRow(row);
        } else {
          rows.set(job.id, makeRow(job, rowOptions(job.id)));
        }
      }
      for (const id of [...rows.keys()]) if (!keep.has(id)) remove(id);
      for (const job of jobs) tbody.append(rows.get(job.id).tr);
      onChange();
    },
    dispose() {
      flush.cancel();
    },
  };
}

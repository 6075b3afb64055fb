// The job page's event log: one row per event, in event id order, each event once (rows are
// keyed by event id), the latest MAX_ROWS kept. New rows are added at most once a frame.
// Consecutive progress events fold into one line that says how many there are and the latest
// value, and opens to show them all; everything else (starts, logs, retries, the end) always
// shows, so a job of thousands of steps still has a short page.

import { batcher } from "./batcher.js";
import { h, setText } from "./dom.js";
import { compareIds } from "./event-ids.js";
import { eventDetails } from "./event-text.js";
import { fmtNum, fmtTime } from "./format.js";

const MAX_ROWS = 2000; // rows kept in the log; the service itself keeps jobs.max_events per job
const FOLDED = "progress";

function logRow(e) {
  const d = e.data;
  return h(
    "tr",
    { dataset: { eventId: e.id ?? "", event: e.type } },
    h("td", { class: "c-time" }, h("time", { datetime: d.ts || "", title: d.ts || "" }, fmtTime(d.ts))),
    h("td", { class: "c-event" }, h("span", { class: "ev", dataset: { event: e.type } }, e.type)),
    h("td", { class: "c-attempt", "data-label": "attempt" }, d.attempt ?? ""),
    h("td", { class: "c-details" }, eventDetails(e.type, d)),
  );
}

/** A run of consecutive progress rows behind one line. */
function makeFold() {
  const toggle = h("button", { type: "button", class: "fold-toggle secondary", "aria-expanded": "false" });
  const text = h("span", { class: "fold-text" });
  const tr = h("tr", { class: "fold", dataset: { fold: "" } }, h("td", { colspan: "4" }, toggle, " ", text));
  const fold = { tr, toggle, text, rows: [], last: null, open: false };
  toggle.addEventListener("click", () => {
    fold.open = !fold.open;
    for (const row of fold.rows) row.hidden = !fold.open;
    renderFold(fold);
  });
  return fold;
}

function renderFold(fold) {
  const n = fold.rows.length;
  fold.toggle.setAttribute("aria-expanded", String(fold.open));
  setText(fold.toggle, `${fold.open ? "Hide" : "Show"} ${fmtNum(n)} progress event${n === 1 ? "" : "s"}`);
  setText(fold.text, fold.last ? `latest: ${eventDetails(FOLDED, fold.last)}` : "");
}

/** `onFlushed()` is called after each batch of rows is in. */
export function eventLog({ onFlushed }) {
  const seen = new Set();
  const foldOf = new WeakMap(); // row -> its fold
  let pending = [];
  let lastRowId = null;
  let tail = null; // the fold the next progress row joins (null: the last row is not progress)
  let rowsShown = 0;
  let trimmed = 0;
  const count = h("span", { class: "muted count" });
  const trimNote = h("p", { class: "muted small", hidden: true });
  const tbody = h("tbody");
  const el = h(
    "section",
    { class: "card card-log", "aria-labelledby": "log-h" },
    h("h2", { id: "log-h" }, "Events ", count),
    trimNote,
    h(
      "div",
      { class: "table-scroll" },
      h(
        "table",
        { class: "events" },
        h(
          "thead",
          null,
          h(
            "tr",
            null,
            h("th", { scope: "col" }, "Time"),
            h("th", { scope: "col" }, "Event"),
            h("th", { scope: "col" }, "Attempt"),
            h("th", { scope: "col" }, "Details"),
          ),
        ),
        tbody,
      ),
    ),
  );

  function dropOldest() {
    const first = tbody.querySelector("tr[data-event-id]");
    if (!first) return;
    first.remove();
    rowsShown -= 1;
    const fold = foldOf.get(first);
    if (fold) {
      fold.rows.splice(fold.rows.indexOf(first), 1);
      if (!fold.rows.length) {
        fold.tr.remove();
        if (tail === fold) tail = null;
      } else {
        renderFold(fold);
      }
    }
  }

  const flush = batcher(() => {
    const batch = pending;
    pending = [];
    const touched = new Set();
    const frag = document.createDocumentFragment();
    for (const e of batch) {
      const tr = logRow(e);
      rowsShown += 1;
      if (lastRowId === null || e.id === null || compareIds(e.id, lastRowId) > 0) {
        if (e.type === FOLDED) {
          if (!tail) {
            tail = makeFold();
            frag.append(tail.tr);
          }
          tail.rows.push(tr);
          tail.last = e.data;
          tr.hidden = !tail.open;
          foldOf.set(tr, tail);
          touched.add(tail);
        } else {
          tail = null;
        }
        frag.append(tr);
        if (e.id !== null) lastRowId = e.id;
      } else {
        // out of order (should not happen: ids of one job strictly increase): put it in place,
        // unfolded
        tbody.append(frag);
        let before = null;
        for (const other of tbody.querySelectorAll("tr[data-event-id]")) {
          if (other.dataset.eventId && compareIds(other.dataset.eventId, e.id) > 0) {
            before = other;
            break;
          }
        }
        tbody.insertBefore(tr, before);
      }
    }
    tbody.append(frag);
    for (const fold of touched) renderFold(fold);
    let dropped = 0;
    while (rowsShown > MAX_ROWS) {
      dropOldest();
      dropped += 1;
    }
    if (dropped) {
      trimmed += dropped;
      trimNote.hidden = false;
      setText(trimNote, `${fmtNum(trimmed)} earlier events are not shown; the latest ${fmtNum(MAX_ROWS)} are.`);
    }
    onFlushed();
  });

  return {
    el,
    /** Whether the event with this id is in the log already. */
    has: (eventId) => eventId !== null && seen.has(eventId),
    /** Add an event (shown with the next batch). */
    push(eventId, type, data) {
      if (eventId !== null) seen.add(eventId);
      pending.push({ id: eventId, type, data });
    },
    /** Show what was pushed, at the next frame. */
    schedule: () => flush(),
    renderCount() {
      setText(count, `(${fmtNum(seen.size)})`);
    },
    dispose() {
      flush.cancel();
    },
  };
}

// The job page's event log: one row per event, in event id order, each event once (rows are
// keyed by event id), the latest MAX_ROWS kept. New rows are added at most once a frame.

import { batcher } from "./batcher.js";
import { h, setText } from "./dom.js";
import { compareIds } from "./event-ids.js";
import { eventDetails } from "./event-text.js";
import { fmtNum, fmtTime } from "./format.js";

const MAX_ROWS = 2000; // rows kept in the log; the service itself keeps jobs.max_events per job

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

/** `onFlushed()` is called after each batch of rows is in. */
export function eventLog({ onFlushed }) {
  const seen = new Set();
  let pending = [];
  let lastRowId = null;
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

  const flush = batcher(() => {
    const batch = pending;
    pending = [];
    const frag = document.createDocumentFragment();
    for (const e of batch) {
      const tr = logRow(e);
      if (lastRowId === null || e.id === null || compareIds(e.id, lastRowId) > 0) {
        frag.append(tr);
        if (e.id !== null) lastRowId = e.id;
      } else {
        // out of order (should not happen: ids of one job strictly increase): put it in place
        tbody.append(frag);
        let before = null;
        for (const other of tbody.children) {
          if (other.dataset.eventId && compareIds(other.dataset.eventId, e.id) > 0) {
            before = other;
            break;
          }
        }
        tbody.insertBefore(tr, before);
      }
    }
    tbody.append(frag);
    let dropped = 0;
    while (tbody.children.length > MAX_ROWS) {
      tbody.firstElementChild.remove();
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

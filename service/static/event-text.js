// Pure: how an event reads in a job's event log (one line of details per event type). No DOM.

import { errorText, fmtNum, fmtTime, shortJson } from "./format.js";

/** One line describing an event for the job's event log. */
export function eventDetails(type, d) {
  switch (type) {
    case "queued":
      return d.attempt ? `back in queue ${d.queue || ""}`.trim() : `submitted to queue ${d.queue || ""}`.trim();
    case "scheduled":
      return d.due ? `due at ${fmtTime(d.due)}` : "scheduled";
    case "started":
      return `attempt ${d.attempt ?? "?"} started` + (d.worker ? ` on ${d.worker}` : "");
    case "progress": {
      const parts = [];
      if (d.current !== undefined && d.current !== null) {
        parts.push(d.total ? `${fmtNum(d.current)} / ${fmtNum(d.total)}` : fmtNum(d.current));
      }
      if (d.message) parts.push(d.message);
      return parts.join(" — ");
    }
    case "log":
      return d.message ?? "";
    case "retrying":
      return errorText(d.error) + (d.due ? ` — next attempt at ${fmtTime(d.due)}` : "");
    case "succeeded":
      return d.result === undefined || d.result === null ? "done" : shortJson(d.result);
    case "failed":
      return errorText(d.error);
    case "cancelled":
      return d.reason || "cancelled";
    case "snapshot":
      return `current state: ${d.state || "?"} (earlier events are no longer stored)`;
    default:
      return shortJson(d);
  }
}

// Pure: the numbers and words a job's progress bar shows. No DOM.

import { fmtNum } from "./format.js";

/** The numbers a job's progress bar shows. */
export function progressModel(job) {
  const p = job.progress || {};
  const cur = typeof p.current === "number" ? p.current : null;
  const total = typeof p.total === "number" && p.total > 0 ? p.total : null;
  const msg = p.message || "";
  if (total !== null) {
    const now = Math.min(Math.max(cur || 0, 0), total);
    const pct = (now / total) * 100;
    const text = `${fmtNum(now)} of ${fmtNum(total)} (${Math.floor(pct)}%)` + (msg ? ` — ${msg}` : "");
    return { now, max: total, pct, text, label: msg || `${fmtNum(now)} / ${fmtNum(total)}`, indeterminate: false };
  }
  if (job.state === "succeeded") {
    return { now: 1, max: 1, pct: 100, text: msg || "done", label: msg || "done", indeterminate: false };
  }
  const done = cur !== null ? `${fmtNum(cur)} done` : "";
  const text = [done, msg].filter(Boolean).join(" — ") || job.state || "";
  return { now: 0, max: 1, pct: 0, text, label: text, indeterminate: job.state === "running" };
}

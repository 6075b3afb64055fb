// Selecting rows of the jobs list and acting on them at once: the header's "select all" box, and
// a bar with Cancel and Retry for the selected jobs. The service does the work in one request
// (POST /api/jobs/bulk), first as a dry run so the confirmation can say how many jobs it touches.

import { api } from "./api.js";
import { confirmAction } from "./confirm.js";
import { h, setText } from "./dom.js";
import { fmtNum } from "./format.js";
import { announce } from "./toast.js";

const plural = (n, one, many) => `${fmtNum(n)} ${n === 1 ? one : many}`;

/** `rows()`: the rows shown; `show(id, on)`: tick or untick one row's box. */
export function jobSelection({ rows, show }) {
  const ids = new Set();
  const headBox = h("input", { type: "checkbox", class: "select", "aria-label": "Select all jobs shown" });
  const count = h("span", { class: "selected-count", role: "status" });
  const cancelBtn = h("button", { type: "button", class: "danger" }, "Cancel selected");
  const retryBtn = h("button", { type: "button" }, "Retry selected");
  const clearBtn = h("button", { type: "button", class: "secondary" }, "Clear selection");
  const bar = h("div", { class: "bulk-bar", role: "toolbar", hidden: true, "aria-label": "Selected jobs" }, count, cancelBtn, retryBtn, clearBtn);

  function sync() {
    const shown = [...rows()];
    const n = ids.size;
    bar.hidden = n === 0;
    setText(count, `${plural(n, "job", "jobs")} selected`);
    headBox.checked = n > 0 && shown.length > 0 && shown.every((r) => ids.has(r.job.id));
    headBox.indeterminate = n > 0 && !headBox.checked;
  }

  function set(id, on) {
    if (on) ids.add(id);
    else ids.delete(id);
    show(id, on);
    sync();
  }

  function clear() {
    for (const id of [...ids]) set(id, false);
  }

  headBox.addEventListener("change", () => {
    const on = headBox.checked;
    for (const r of [...rows()]) set(r.job.id, on);
  });
  clearBtn.addEventListener("click", clear);

  async function act(action, btn) {
    const list = [...ids];
    btn.disabled = true;
    try {
      const dry = await api.bulk(action, list, true);
      const left = list.length - dry.count;
      if (dry.count === 0) {
        announce(action === "cancel" ? "None of the selected jobs can be cancelled: they have finished." : "None of the selected jobs can be retried: only failed or cancelled jobs can.", "error");
        return;
      }
      const running = dry.outcomes.requested || 0;
      const message =
        action === "cancel"
          ? `${plural(dry.count, "job is", "jobs are")} cancelled` +
            (running ? ` (${fmtNum(running)} running: their workers are asked to stop)` : "") +
            "." +
            (left ? ` ${plural(left, "selected job has", "selected jobs have")} finished and stay${left === 1 ? "s" : ""} as ${left === 1 ? "it is" : "they are"}.` : "")
          : `${plural(dry.count, "job goes", "jobs go")} back to ${dry.count === 1 ? "its queue" : "their queues"} with fresh attempts.` +
            (left ? ` ${plural(left, "selected job is", "selected jobs are")} not failed or cancelled and stay${left === 1 ? "s" : ""} as ${left === 1 ? "it is" : "they are"}.` : "");
      const ok = await confirmAction({
        title: action === "cancel" ? `Cancel ${plural(dry.count, "job", "jobs")}?` : `Retry ${plural(dry.count, "job", "jobs")}?`,
        message,
        confirm: action === "cancel" ? `Cancel ${plural(dry.count, "job", "jobs")}` : `Retry ${plural(dry.count, "job", "jobs")}`,
        danger: action === "cancel",
      });
      if (!ok) return;
      const res = await api.bulk(action, list);
      const o = res.outcomes;
      if (action === "cancel") {
        const parts = [];
        if (o.cancelled) parts.push(`${plural(o.cancelled, "job", "jobs")} cancelled`);
        if (o.requested) parts.push(`${fmtNum(o.requested)} running asked to stop`);
        announce(parts.join(", ") + ".");
      } else {
        announce(`${plural(o.retried || 0, "job", "jobs")} queued again.`);
      }
      clear();
    } catch (e) {
      announce(`Could not ${action}: ${e.message}`, "error");
    } finally {
      btn.disabled = false;
    }
  }
  cancelBtn.addEventListener("click", () => act("cancel", cancelBtn));
  retryBtn.addEventListener("click", () => act("retry", retryBtn));

  return {
    bar,
    headBox,
    has: (id) => ids.has(id),
    set,
    /** A row left the table: it is no longer selected. */
    forget(id) {
      if (ids.delete(id)) sync();
    },
    /** Rows came or went: the header box follows. */
    sync,
  };
}

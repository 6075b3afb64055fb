// The job page's Cancel and Retry buttons, each shown only in the states it applies to. Cancel
// asks first. A toast that announces a state still to come ("cancellation requested") goes away
// as soon as the job reaches it.

import { api } from "./api.js";
import { confirmAction } from "./confirm.js";
import { CANCELLABLE, RETRYABLE, TERMINAL } from "./contract.js";
import { h } from "./dom.js";
import { announce } from "./toast.js";

/** `onRetried(state)`: the job was queued again and is now in `state`. */
export function jobActions(job, { onRetried }) {
  const cancel = h("button", { type: "button", class: "danger", onclick: doCancel }, "Cancel");
  const retry = h("button", { type: "button", onclick: doRetry }, "Retry");
  let awaiting = null; // the toast saying the job is being stopped

  async function doCancel() {
    const running = job.state === "running";
    const ok = await confirmAction({
      title: "Cancel this job?",
      message: running
        ? `The worker running ${job.task} is asked to stop it; the task sees the cancellation within about a second.`
        : `${job.task} will not run. You can retry it later.`,
      confirm: "Cancel job",
      danger: true,
    });
    if (!ok) {
      cancel.focus();
      return;
    }
    cancel.disabled = true;
    try {
      const res = await api.cancel(job.id);
      if (res.status === 202) {
        if (awaiting) awaiting.dismiss();
        awaiting = announce("Cancellation requested: the worker stops the job shortly.", "info", { sticky: true });
        if (TERMINAL.has(job.state)) awaiting.dismiss(); // it got there while we asked
      } else {
        announce("Job cancelled.");
      }
    } catch (e) {
      announce(`Could not cancel: ${e.message}`, "error");
    } finally {
      cancel.disabled = false;
    }
  }

  async function doRetry() {
    retry.disabled = true;
    try {
      const res = await api.retry(job.id);
      announce("Job queued again.");
      onRetried(res.data.state);
    } catch (e) {
      announce(`Could not retry: ${e.message}`, "error");
    } finally {
      retry.disabled = false;
    }
  }

  return {
    el: h("div", { class: "actions" }, cancel, retry),
    render(job) {
      cancel.hidden = !CANCELLABLE.has(job.state);
      retry.hidden = !RETRYABLE.has(job.state);
      if (awaiting && TERMINAL.has(job.state)) {
        awaiting.dismiss();
        awaiting = null;
      }
    },
    dispose() {
      if (awaiting) awaiting.dismiss();
    },
  };
}

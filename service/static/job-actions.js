// The job page's Cancel and Retry buttons, each shown only in the states it applies to.

import { api } from "./api.js";
import { CANCELLABLE, RETRYABLE } from "./contract.js";
import { h } from "./dom.js";
import { announce } from "./toast.js";

/** `onRetried(state)`: the job was queued again and is now in `state`. */
export function jobActions(job, { onRetried }) {
  const cancel = h("button", { type: "button", class: "danger", onclick: doCancel }, "Cancel");
  const retry = h("button", { type: "button", onclick: doRetry }, "Retry");

  async function doCancel() {
    cancel.disabled = true;
    try {
      const res = await api.cancel(job.id);
      announce(res.status === 202 ? "Cancellation requested: the worker stops the job shortly." : "Job cancelled.");
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
    },
  };
}

// Dead letters at "/?view=dead&queue=NAME": jobs that failed for good, with a retry button each,
// and for the whole queue "Retry all" and "Purge all" (one request each, done by the service in
// batches, after a confirmation that says how many jobs they touch).

import { ageEl } from "./age.js";
import { api } from "./api.js";
import { clear, h, setText } from "./dom.js";
import { errorText, fmtNum } from "./format.js";
import { purgeDead, retryDead, runQueueAction } from "./queue-actions.js";
import { announce } from "./toast.js";

export function mountDead(root, params, nav) {
  let disposed = false;
  let queue = params.get("queue") || "";
  const heading = h("h1", { tabindex: "-1" }, "Dead letters");
  const queueSel = h("select", { id: "dead-queue", name: "queue" });
  const refresh = h("button", { type: "button", class: "secondary" }, "Refresh");
  const retryAll = h("button", { type: "button", hidden: true }, "Retry all");
  const purgeAll = h("button", { type: "button", class: "danger", hidden: true }, "Purge all");
  const note = h("p", { class: "muted" });
  const list = h("ul", { class: "dead-list" });
  const errorBox = h("p", { class: "banner banner-error", role: "alert", hidden: true });
  root.append(
    h(
      "section",
      { class: "view view-dead" },
      h("div", { class: "view-head" }, heading),
      h(
        "p",
        { class: "muted" },
        "Jobs that used up their attempts. Retrying puts a job back in its queue with fresh attempts.",
      ),
      h(
        "form",
        { class: "filters", "aria-label": "Choose a queue", onsubmit: (ev) => ev.preventDefault() },
        h("div", { class: "field" }, h("label", { for: "dead-queue" }, "Queue"), queueSel),
        refresh,
        h("span", { class: "spacer" }),
        retryAll,
        purgeAll,
      ),
      errorBox,
      note,
      list,
    ),
  );

  function row(job) {
    const retry = h("button", { type: "button" }, "Retry");
    const outcome = h("span", { class: "outcome", role: "status" });
    const li = h(
      "li",
      { class: "dead-item card", dataset: { jobId: job.id } },
      h(
        "div",
        { class: "dead-head" },
        h("a", { href: `/jobs/${job.id}`, class: "job-link" }, h("span", { class: "task-name" }, job.task), " ", h("span", { class: "job-id" }, job.id)),
        h("span", { class: "muted small" }, `attempt ${job.attempt} of ${job.max_attempts}`, " · failed ", ageEl(job.finished_at)),
        h("span", { class: "spacer" }),
        outcome,
        retry,
      ),
      h("p", { class: "error-msg" }, errorText(job.error) || "no error recorded"),
    );
    retry.setAttribute("aria-label", `Retry ${job.task} job ${job.id}`);
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      try {
        await api.retry(job.id);
        li.classList.add("done");
        retry.remove();
        clear(outcome);
        outcome.append("Queued again — ", h("a", { href: `/jobs/${job.id}` }, "watch it"));
        announce(`${job.task} job queued again.`);
      } catch (e) {
        retry.disabled = false;
        setText(outcome, `Could not retry: ${e.message}`);
      }
    });
    return li;
  }

  async function load() {
    errorBox.hidden = true;
    refresh.disabled = true;
    try {
      const queues = await api.queues();
      if (disposed) return;
      if (!queue) {
        const withDead = queues.find((q) => q.dead > 0);
        queue = withDead ? withDead.name : queues.length ? queues[0].name : "default";
      }
      clear(queueSel);
      const names = queues.map((q) => q.name);
      if (!names.includes(queue)) names.push(queue);
      for (const name of names.sort()) {
        const q = queues.find((x) => x.name === name);
        queueSel.append(h("option", { value: name }, q ? `${name} (${q.dead} dead)` : name));
      }
      queueSel.value = queue;
      const jobs = await api.dead(queue);
      if (disposed) return;
      const total = Math.max(jobs.length, (queues.find((x) => x.name === queue) || {}).dead || 0);
      clear(list);
      for (const job of jobs) list.append(row(job));
      retryAll.hidden = purgeAll.hidden = total === 0;
      setText(retryAll, `Retry all ${fmtNum(total)}`);
      setText(purgeAll, `Purge all ${fmtNum(total)}`);
      let text = `No dead jobs in queue ${queue}.`;
      if (jobs.length) {
        text =
          total > jobs.length
            ? `${fmtNum(total)} dead jobs in queue ${queue}; the ${fmtNum(jobs.length)} most recent are shown.`
            : `${fmtNum(jobs.length)} dead job${jobs.length === 1 ? "" : "s"} in queue ${queue}, most recent first.`;
      }
      setText(note, text);
    } catch (e) {
      if (disposed) return;
      errorBox.hidden = false;
      setText(errorBox, `Could not load dead letters: ${e.message}`);
    } finally {
      refresh.disabled = false;
    }
  }

  queueSel.addEventListener("change", () => {
    queue = queueSel.value;
    nav.replace(`/?view=dead&queue=${encodeURIComponent(queue)}`);
    load();
  });
  refresh.addEventListener("click", load);
  for (const [btn, make] of [
    [retryAll, retryDead],
    [purgeAll, purgeDead],
  ]) {
    btn.addEventListener("click", async () => {
      btn.disabled = true;
      try {
        if (await runQueueAction(make(queue))) await load();
      } catch (e) {
        announce(`Could not do it: ${e.message}`, "error");
      } finally {
        btn.disabled = false;
      }
    });
  }
  load();

  return {
    title: "Dead letters",
    focus: heading,
    dispose() {
      disposed = true;
    },
  };
}

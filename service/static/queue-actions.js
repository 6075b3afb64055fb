// What an operator does to a whole queue: pause and resume it, retry or purge its dead letters,
// purge its finished jobs older than some age. The service does each in one request, in bounded
// batches; the actions that cannot be undone first ask it for a dry run, so the confirmation says
// how many jobs they touch.

import { api } from "./api.js";
import { confirmAction } from "./confirm.js";
import { h } from "./dom.js";
import { fmtNum } from "./format.js";
import { announce } from "./toast.js";

const jobs = (n) => `${fmtNum(n)} job${n === 1 ? "" : "s"}`;
const letters = (n) => `${fmtNum(n)} dead letter${n === 1 ? "" : "s"}`;

export const AGES = [
  { label: "older than 1 hour", when: "that finished more than 1 hour ago", ms: 3_600_000 },
  { label: "older than 6 hours", when: "that finished more than 6 hours ago", ms: 6 * 3_600_000 },
  { label: "older than 1 day", when: "that finished more than a day ago", ms: 86_400_000 },
  { label: "of any age", when: "", ms: 0 },
];

/**
 * The bulk actions on a queue, each as { dry(), ask(n), run(), said(res) }: how to count, what to
 * ask, how to do it, and what to say after.
 */
const ACTIONS = {
  retryDead: (queue) => ({
    dry: () => api.retryDead(queue, true),
    ask: (n) => ({
      title: `Retry ${letters(n)}?`,
      message: `${n === 1 ? "It goes" : "They go"} back to queue ${queue} with fresh attempts.`,
      confirm: `Retry ${letters(n)}`,
    }),
    run: () => api.retryDead(queue),
    said: (res) => `${letters(res.count)} of ${queue} queued again.`,
    none: `No dead letters in ${queue}.`,
  }),
  purgeDead: (queue) => ({
    dry: () => api.purgeDead(queue, true),
    ask: (n) => ({
      title: `Delete ${letters(n)} for good?`,
      message: `The failed jobs of queue ${queue}, with their payloads, errors and events, are deleted. This cannot be undone.`,
      confirm: `Delete ${letters(n)}`,
      danger: true,
    }),
    run: () => api.purgeDead(queue),
    said: (res) => `${letters(res.count)} of ${queue} deleted.`,
    none: `No dead letters in ${queue}.`,
  }),
  purgeFinished: (queue, age) => {
    const before = () => Date.now() - age.ms;
    let at = 0; // the cutoff the user confirmed: the same one is purged
    return {
      dry: () => api.purgeFinished(queue, (at = before()), true),
      ask: (n) => ({
        title: `Delete ${jobs(n)} for good?`,
        message: `The finished jobs of queue ${queue} (succeeded, failed or cancelled) ${age.when ? age.when + " " : ""}are deleted with their events. This cannot be undone.`,
        confirm: `Delete ${jobs(n)}`,
        danger: true,
      }),
      run: () => api.purgeFinished(queue, at),
      said: (res) => `${jobs(res.count)} of ${queue} deleted.`,
      none: `No finished jobs in ${queue} ${age.label}.`,
    };
  },
};

/** Count, confirm, do, tell. Resolves to the service's answer, or null when nothing was done. */
export async function runQueueAction(action) {
  const dry = await action.dry();
  if (!dry.count) {
    announce(action.none);
    return null;
  }
  if (!(await confirmAction(action.ask(dry.count)))) return null;
  const res = await action.run();
  announce(action.said(res));
  return res;
}

/** A button that runs one of ACTIONS; `onDone(res)` after it did something. */
export function actionButton(label, make, { danger = false, onDone = () => {}, title } = {}) {
  const btn = h("button", { type: "button", class: danger ? "danger" : "secondary", title }, label);
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    try {
      const res = await runQueueAction(make());
      if (res) onDone(res);
    } catch (e) {
      announce(`Could not do it: ${e.message}`, "error");
    } finally {
      btn.disabled = false;
    }
  });
  return btn;
}

export const retryDead = (queue) => ACTIONS.retryDead(queue);
export const purgeDead = (queue) => ACTIONS.purgeDead(queue);

/** Every action on one queue, for the queues page: { el, render(q) } with q its figures. */
export function queueActions(name, { onDone = () => {} } = {}) {
  let paused = false;
  const pause = h("button", { type: "button", class: "secondary" }, "Pause");
  pause.addEventListener("click", async () => {
    pause.disabled = true;
    const want = !paused;
    try {
      const res = want ? await api.pause(name) : await api.resume(name);
      paused = Boolean(res.data && res.data.paused);
      render({ paused });
      announce(
        paused
          ? `Queue ${name} paused: workers start no new job from it; running jobs finish.`
          : `Queue ${name} resumed.`,
      );
      onDone(res.data);
    } catch (e) {
      announce(`Could not ${want ? "pause" : "resume"} ${name}: ${e.message}`, "error");
    } finally {
      pause.disabled = false;
    }
  });
  const retry = actionButton("Retry dead", () => retryDead(name), { onDone });
  const purge = actionButton("Purge dead", () => purgeDead(name), { danger: true, onDone });
  const ageSel = h(
    "select",
    { "aria-label": `Finished jobs of ${name} to purge` },
    AGES.map((a, i) => h("option", { value: String(i) }, `finished, ${a.label}`)),
  );
  const purgeOld = actionButton("Purge", () => ACTIONS.purgeFinished(name, AGES[Number(ageSel.value)]), {
    danger: true,
    onDone,
  });
  retry.setAttribute("aria-label", `Retry the dead letters of ${name}`);
  purge.setAttribute("aria-label", `Purge the dead letters of ${name}`);
  purgeOld.setAttribute("aria-label", `Purge finished jobs of ${name}`);

  function render(q) {
    paused = Boolean(q.paused);
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-label", `${paused ? "Resume" : "Pause"} queue ${name}`);
    pause.setAttribute("aria-pressed", String(paused));
    if ("dead" in q) {
      retry.disabled = purge.disabled = !q.dead;
    }
  }

  const el = h("div", { class: "queue-actions" }, pause, retry, purge, h("span", { class: "purge-old" }, ageSel, purgeOld));
  return { el, render };
}

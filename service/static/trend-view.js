// The trend page at "/?view=trend&queue=&task=&minutes=": over the last hour (or 15 minutes, or
// two hours), finished jobs per minute by outcome, and wait and run time percentiles, for every
// queue and task or one of each (GET /api/stats/trend, read again every REFRESH_MS: it moves by
// the minute). Did failures start an hour ago? The bars say.

import { api } from "./api.js";
import { clear, h, setText } from "./dom.js";
import { fmtDuration, fmtNum } from "./format.js";
import { legend, latencyChart, OUTCOMES, throughputChart } from "./trend-chart.js";

const REFRESH_MS = 15_000;
const WINDOWS = [15, 60, 120];

function syncOptions(select, values, selected, anyLabel) {
  clear(select);
  select.append(h("option", { value: "" }, anyLabel));
  const all = [...new Set([...values, ...(selected ? [selected] : [])])].sort();
  for (const v of all) select.append(h("option", { value: v }, v));
  select.value = selected;
}

function percentileText(p) {
  return p ? `p50 ${fmtDuration(p.p50)} · p95 ${fmtDuration(p.p95)} · p99 ${fmtDuration(p.p99)}` : "no jobs";
}

export function mountTrend(root, params, nav) {
  let disposed = false;
  let timer = null;
  const sel = {
    queue: params.get("queue") || "",
    task: params.get("task") || "",
    minutes: WINDOWS.includes(Number(params.get("minutes"))) ? Number(params.get("minutes")) : 60,
  };
  const heading = h("h1", { tabindex: "-1" }, "Trend");
  const queueSel = h("select", { id: "t-queue" });
  const taskSel = h("select", { id: "t-task" });
  const minutesSel = h(
    "select",
    { id: "t-minutes" },
    WINDOWS.map((m) => h("option", { value: String(m) }, m === 120 ? "last 2 hours" : m === 60 ? "last hour" : `last ${m} minutes`)),
  );
  minutesSel.value = String(sel.minutes);
  syncOptions(queueSel, [], sel.queue, "every queue");
  syncOptions(taskSel, [], sel.task, "every task");
  const errorBox = h("p", { class: "banner banner-error", role: "alert", hidden: true });
  const totals = h("dl", { class: "facts trend-totals" });
  const charts = {
    done: h("div", { class: "chart-box" }),
    wait: h("div", { class: "chart-box" }),
    run: h("div", { class: "chart-box" }),
  };
  root.append(
    h(
      "section",
      { class: "view view-trend" },
      h("div", { class: "view-head" }, heading),
      h(
        "form",
        { class: "filters", "aria-label": "Choose what the trend shows", onsubmit: (ev) => ev.preventDefault() },
        h("div", { class: "field" }, h("label", { for: "t-queue" }, "Queue"), queueSel),
        h("div", { class: "field" }, h("label", { for: "t-task" }, "Task"), taskSel),
        h("div", { class: "field" }, h("label", { for: "t-minutes" }, "Window"), minutesSel),
      ),
      errorBox,
      h("section", { class: "card" }, h("h2", null, "Totals"), totals),
      h("section", { class: "card chart-card" }, h("h2", null, "Finished jobs per minute"), legend(OUTCOMES, "bar"), charts.done),
      h("section", { class: "card chart-card" }, h("h2", null, "Wait before start"), legend(["p50", "p95"], "line"), charts.wait),
      h("section", { class: "card chart-card" }, h("h2", null, "Run time"), legend(["p50", "p95"], "line"), charts.run),
    ),
  );

  function fact(label, value, key) {
    return h("div", { dataset: { total: key } }, h("dt", null, label), h("dd", null, value));
  }

  async function load() {
    clearTimeout(timer);
    try {
      const t = await api.trend({ minutes: sel.minutes, queue: sel.queue, task: sel.task });
      if (disposed) return;
      errorBox.hidden = true;
      syncOptions(queueSel, t.queues, sel.queue, "every queue");
      syncOptions(taskSel, t.tasks, sel.task, "every task");
      clear(totals);
      for (const o of OUTCOMES) totals.append(fact(o, fmtNum(t.total[o]), o));
      totals.append(fact("wait", percentileText(t.total.wait_ms), "wait"), fact("run", percentileText(t.total.run_ms), "run"));
      clear(charts.done).append(throughputChart(t.points));
      clear(charts.wait).append(latencyChart(t.points, "wait_ms", "Wait before start, per minute"));
      clear(charts.run).append(latencyChart(t.points, "run_ms", "Run time, per minute"));
    } catch (e) {
      if (disposed) return;
      errorBox.hidden = false;
      setText(errorBox, `Could not load the trend: ${e.message}`);
    }
    if (!disposed) timer = setTimeout(load, REFRESH_MS);
  }

  function onChange() {
    sel.queue = queueSel.value;
    sel.task = taskSel.value;
    sel.minutes = Number(minutesSel.value);
    const q = new URLSearchParams({ view: "trend" });
    if (sel.queue) q.set("queue", sel.queue);
    if (sel.task) q.set("task", sel.task);
    if (sel.minutes !== 60) q.set("minutes", String(sel.minutes));
    nav.replace(`/?${q}`);
    load();
  }
  for (const el of [queueSel, taskSel, minutesSel]) el.addEventListener("change", onChange);
  load();

  return {
    title: "Trend",
    focus: heading,
    dispose() {
      disposed = true;
      clearTimeout(timer);
    },
  };
}

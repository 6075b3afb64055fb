// The workers page at "/?view=workers": every live worker process (host, pid, version, queues,
// concurrency, the jobs it runs now, when it started, its last heartbeat). Workers are not on
// the firehose: presence is a heartbeat, so the list is read again every few seconds, and a
// worker that stopped beating (killed, or its machine gone) drops off once its heartbeat expires.

import { ageEl, setAge } from "./age.js";
import { api } from "./api.js";
import { clear, h, setText, syncKeyed } from "./dom.js";
import { fmtDateTime, fmtNum } from "./format.js";

const REFRESH_MS = 2000;

function workerRow(w) {
  const row = {
    running: h("td", { class: "c-running", "data-label": "running" }),
    busy: h("td", { class: "num c-busy", "data-label": "busy" }),
    beat: ageEl(w.heartbeat_at),
    queues: h("td", { class: "c-queues", "data-label": "queues" }),
  };
  row.tr = h(
    "tr",
    { dataset: { worker: w.name } },
    h("th", { scope: "row", class: "c-name mono" }, w.name),
    h("td", { class: "c-host", "data-label": "host" }, w.host),
    h("td", { class: "num c-pid", "data-label": "pid" }, String(w.pid)),
    h("td", { class: "c-version", "data-label": "version" }, w.version || "—"),
    row.queues,
    row.busy,
    row.running,
    h("td", { class: "c-started", "data-label": "started" }, h("time", { datetime: w.started_at || "" }, fmtDateTime(w.started_at))),
    h("td", { class: "c-beat", "data-label": "last heartbeat" }, row.beat),
  );
  return row;
}

function renderWorker(row, w) {
  setText(row.queues, (w.queues || []).join(", "));
  const running = w.running || [];
  setText(row.busy, `${fmtNum(running.length)} / ${fmtNum(w.concurrency)}`);
  if (row.running.dataset.jobs !== running.join(",")) {
    row.running.dataset.jobs = running.join(",");
    clear(row.running);
    if (!running.length) row.running.append(h("span", { class: "muted" }, "idle"));
    const list = h("ul", { class: "running-jobs" });
    for (const id of running) list.append(h("li", null, h("a", { href: `/jobs/${id}`, class: "mono" }, id)));
    if (running.length) row.running.append(list);
  }
  setAge(row.beat, w.heartbeat_at);
}

export function mountWorkers(root) {
  let disposed = false;
  let timer = null;
  const heading = h("h1", { tabindex: "-1" }, "Workers");
  const rows = new Map();
  const tbody = h("tbody");
  const note = h("p", { class: "muted", role: "status" }, "Loading…");
  const errorBox = h("p", { class: "banner banner-error", role: "alert", hidden: true });
  const table = h(
    "table",
    { class: "workers-table" },
    h("caption", { class: "sr-only" }, "Live worker processes"),
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        ["Worker", "Host", "PID", "Version", "Queues", "Busy", "Running now", "Started", "Last heartbeat"].map((t) => h("th", { scope: "col" }, t)),
      ),
    ),
    tbody,
  );
  root.append(
    h(
      "section",
      { class: "view view-workers" },
      h("div", { class: "view-head" }, heading),
      h("p", { class: "muted" }, "Worker processes with a fresh heartbeat. A job's page names the worker of each of its attempts."),
      errorBox,
      h("div", { class: "table-scroll" }, table),
      note,
    ),
  );

  async function refresh() {
    if (document.hidden) return;
    let workers;
    try {
      workers = await api.workers();
    } catch (e) {
      if (disposed) return;
      errorBox.hidden = false;
      setText(errorBox, `Could not load the workers: ${e.message}`);
      return;
    }
    if (disposed) return;
    errorBox.hidden = true;
    workers.sort((a, b) => a.name.localeCompare(b.name));
    syncKeyed(rows, workers, (w) => w.name, {
      make: workerRow,
      render: renderWorker,
      nodeOf: (row) => row.tr,
    });
    // in name order, moving rows only when that changed (a moved row loses the focus in it)
    const order = workers.map((w) => rows.get(w.name).tr);
    if (order.some((tr, i) => tbody.children[i] !== tr)) for (const tr of order) tbody.append(tr);
    setText(note, workers.length ? `${fmtNum(workers.length)} worker process${workers.length === 1 ? "" : "es"}.` : "No live workers: jobs wait in their queues until one starts.");
  }

  const schedule = () => {
    timer = setTimeout(async () => {
      await refresh();
      if (!disposed) schedule();
    }, REFRESH_MS);
  };
  const onVisible = () => {
    if (!document.hidden) refresh();
  };
  refresh().then(() => {
    if (!disposed) schedule();
  });
  document.addEventListener("visibilitychange", onVisible);

  return {
    title: "Workers",
    focus: heading,
    dispose() {
      disposed = true;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisible);
    },
  };
}

// The jobs list at "/": recent jobs newest first, driven live by one EventSource on the firehose.

import { api, firehoseUrl, STATES } from "./api.js";
import {
  LiveStream,
  ageEl,
  announce,
  batcher,
  clear,
  h,
  progressBar,
  setAge,
  setProgress,
  setState,
  setStreamStatus,
  setText,
  stateBadge,
  streamBadge,
} from "./dom.js";
import { applyEvent, jobFromEvent } from "./model.js";

const LIMIT = 50;
const CAP = 1000; // rows kept at most; the oldest go first
const QUEUE_REFRESH_MS = 3000;
const FETCH_CONCURRENCY = 4;
const FETCH_BACKLOG = 200;

function sortKey(job) {
  return `${job.created_at || "9999"}|${job.id}`;
}

export function mountJobs(root, params, nav) {
  const filters = {
    state: params.get("state") || "",
    task: params.get("task") || "",
    queue: params.get("queue") || "",
  };
  const rows = new Map(); // id -> { job, tr, parts }
  const dirty = new Set();
  let loading = true;
  let buffer = [];
  let next = null;
  let reloadGen = 0;
  let reloadAgain = false;
  let reloading = false;
  let loadedOnce = false;
  const inflight = new Map(); // id -> events that arrived while its details were being fetched
  const ignored = new Set(); // jobs older than the window: their events are not shown
  const fetchQueue = [];
  let fetching = 0;
  let disposed = false;

  // -- skeleton ----------------------------------------------------------------------------------
  const status = streamBadge();
  const heading = h("h1", { tabindex: "-1" }, "Jobs");
  const queueList = h("ul", { class: "queue-cards" });
  const queueNote = h("p", { class: "muted small" });
  const stateSel = h(
    "select",
    { id: "f-state", name: "state" },
    h("option", { value: "" }, "any state"),
    STATES.map((s) => h("option", { value: s }, s)),
  );
  const taskSel = h("select", { id: "f-task", name: "task" }, h("option", { value: "" }, "any task"));
  const queueSel = h("select", { id: "f-queue", name: "queue" }, h("option", { value: "" }, "any queue"));
  const resetLink = h("a", { href: "/", class: "reset" }, "Clear filters");
  const filterForm = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter jobs" },
    h("div", { class: "field" }, h("label", { for: "f-state" }, "State"), stateSel),
    h("div", { class: "field" }, h("label", { for: "f-task" }, "Task"), taskSel),
    h("div", { class: "field" }, h("label", { for: "f-queue" }, "Queue"), queueSel),
    resetLink,
  );
  const tbody = h("tbody");
  const table = h(
    "table",
    { class: "jobs" },
    h("caption", { class: "sr-only" }, "Recent jobs, newest first, updated live"),
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        h("th", { scope: "col" }, "Task"),
        h("th", { scope: "col" }, "Queue"),
        h("th", { scope: "col" }, "State"),
        h("th", { scope: "col" }, "Attempt"),
        h("th", { scope: "col" }, "Age"),
        h("th", { scope: "col", class: "c-progress" }, "Progress"),
      ),
    ),
    tbody,
  );
  const empty = h("p", { class: "empty", hidden: true });
  const errorBox = h("p", { class: "banner banner-error", role: "alert", hidden: true });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load older jobs");

  root.append(
    h(
      "section",
      { class: "view view-jobs" },
      h(
        "div",
        { class: "view-head" },
        heading,
        status,
        h("span", { class: "spacer" }),
        h("a", { class: "button", href: "/?view=new" }, "New job"),
      ),
      h(
        "section",
        { class: "queues", "aria-labelledby": "queues-h" },
        h("h2", { id: "queues-h", class: "sr-only" }, "Queues"),
        queueList,
        queueNote,
      ),
      filterForm,
      errorBox,
      table,
      empty,
      h("div", { class: "more" }, more),
    ),
  );
  stateSel.value = filters.state;

  // -- rows ----------------------------------------------------------------------------------------
  function matches(job) {
    return (
      (!filters.state || job.state === filters.state) &&
      (!filters.task || job.task === filters.task) &&
      (!filters.queue || job.queue === filters.queue)
    );
  }

  function makeRow(job) {
    const link = h(
      "a",
      { href: `/jobs/${job.id}`, class: "job-link" },
      h("span", { class: "task-name" }),
      " ",
      h("span", { class: "job-id" }, job.id.slice(-8)),
    );
    link.title = job.id;
    const parts = {
      task: link.firstChild,
      queue: h("span"),
      state: stateBadge(job.state),
      attempt: h("span"),
      age: ageEl(job.created_at),
      bar: progressBar(`progress of job ${job.id}`),
      msg: h("span", { class: "bar-msg" }),
    };
    const tr = h(
      "tr",
      { dataset: { jobId: job.id } },
      h("td", { class: "c-task", "data-label": "Task" }, link),
      h("td", { class: "c-queue", "data-label": "queue" }, parts.queue),
      h("td", { class: "c-state", "data-label": "State" }, parts.state),
      h("td", { class: "c-attempt", "data-label": "attempt" }, parts.attempt),
      h("td", { class: "c-age", "data-label": "" }, parts.age),
      h("td", { class: "c-progress", "data-label": "Progress" }, h("div", { class: "bar-wrap" }, parts.bar, parts.msg)),
    );
    const row = { job, tr, parts };
    renderRow(row);
    return row;
  }

  function renderRow(row) {
    const { job, tr, parts } = row;
    tr.dataset.state = job.state;
    setText(parts.task, job.task);
    setText(parts.queue, job.queue);
    setState(parts.state, job.state);
    setText(parts.attempt, job.max_attempts ? `${job.attempt}/${job.max_attempts}` : String(job.attempt ?? ""));
    setAge(parts.age, job.created_at);
    const m = setProgress(parts.bar, job);
    setText(parts.msg, m.label);
  }

  function placeRow(row) {
    const key = sortKey(row.job);
    let before = null;
    for (const tr of tbody.children) {
      const other = rows.get(tr.dataset.jobId);
      if (other && other !== row && sortKey(other.job) < key) {
        before = tr;
        break;
      }
    }
    if (row.tr.parentNode !== tbody || row.tr.nextSibling !== before) tbody.insertBefore(row.tr, before);
  }

  function inWindow(job) {
    if (rows.size < LIMIT || next === null) return true;
    const last = tbody.lastElementChild;
    const oldest = last && rows.get(last.dataset.jobId);
    return !oldest || sortKey(job) >= sortKey(oldest.job);
  }

  function addRow(job) {
    const row = makeRow(job);
    rows.set(job.id, row);
    placeRow(row);
    while (rows.size > CAP) {
      const last = tbody.lastElementChild;
      if (!last) break;
      removeRow(last.dataset.jobId);
      if (next === null) next = "";
    }
    updateEmpty();
    return row;
  }

  function removeRow(id) {
    const row = rows.get(id);
    if (!row) return;
    row.tr.remove();
    rows.delete(id);
    dirty.delete(id);
    updateEmpty();
  }

  const flush = batcher(() => {
    for (const id of dirty) {
      const row = rows.get(id);
      if (row) renderRow(row);
    }
    dirty.clear();
  });

  function markDirty(id) {
    dirty.add(id);
    flush();
  }

  function updateEmpty() {
    const any = rows.size > 0;
    empty.hidden = any || loading;
    if (!any) {
      clear(empty);
      const filtered = filters.state || filters.task || filters.queue;
      empty.append(
        filtered ? "No jobs match these filters. " : "No jobs yet. ",
        h("a", { href: "/?view=new" }, "Submit one"),
        " and watch it here.",
      );
    }
    more.hidden = !next;
  }

  // -- events ----------------------------------------------------------------------------------------
  function onEvent(type, d) {
    if (type === "snapshot" && !d.job) {
      // the stream could not resume exactly: refetch the list
      reload();
      return;
    }
    if (loading) {
      buffer.push([type, d]);
      return;
    }
    apply(type, d);
  }

  function apply(type, d) {
    const id = d.job;
    if (!id) return;
    const stash = inflight.get(id);
    if (stash) {
      stash.push([type, d]);
      return;
    }
    const row = rows.get(id);
    if (row) {
      applyEvent(row.job, type, d);
      if (matches(row.job)) markDirty(id);
      else removeRow(id);
      return;
    }
    if (ignored.has(id)) return;
    const job = applyEvent(jobFromEvent(d), type, d);
    if (!matches(job)) return;
    if ((type === "queued" || type === "scheduled") && d.attempt === 0) {
      // most likely a new job: show it at once, then fetch its details (it may be an old job
      // retried by hand, which then moves to its place or out of the window)
      job.created_at = d.ts || new Date().toISOString();
      addRow(job);
      enqueueFetch(id);
    } else if (!fetchQueue.includes(id)) {
      enqueueFetch(id);
    }
  }

  function enqueueFetch(id) {
    if (fetchQueue.length >= FETCH_BACKLOG) return;
    fetchQueue.push(id);
    pump();
  }

  function pump() {
    while (!disposed && fetching < FETCH_CONCURRENCY && fetchQueue.length) {
      const id = fetchQueue.shift();
      if (inflight.has(id)) continue;
      fetching += 1;
      inflight.set(id, []);
      api
        .job(id)
        .then(
          (job) => merge(job),
          () => null,
        )
        .finally(() => {
          fetching -= 1;
          const stash = inflight.get(id) || [];
          inflight.delete(id);
          if (!disposed) for (const [t, d] of stash) apply(t, d);
          pump();
        });
    }
  }

  function merge(job) {
    if (disposed) return;
    const row = rows.get(job.id);
    if (!inWindow(job)) ignored.add(job.id);
    if (!matches(job) || !inWindow(job)) {
      if (row) removeRow(job.id);
      return;
    }
    if (row) {
      row.job = job;
      renderRow(row);
      placeRow(row);
    } else {
      addRow(job);
    }
  }

  // -- loading ---------------------------------------------------------------------------------------
  async function reload() {
    if (reloading) {
      reloadAgain = true;
      return;
    }
    reloading = true;
    loading = true;
    const gen = ++reloadGen;
    try {
      const res = await api.jobs({ ...filters, limit: LIMIT });
      if (disposed || gen !== reloadGen) return;
      ignored.clear();
      errorBox.hidden = true;
      replaceRows(res.jobs);
      next = res.next;
      loadedOnce = true;
    } catch (e) {
      if (disposed) return;
      errorBox.hidden = false;
      setText(errorBox, `Could not load jobs: ${e.message}`);
    } finally {
      reloading = false;
      loading = false;
      const pending = buffer;
      buffer = [];
      if (!disposed) {
        for (const [t, d] of pending) apply(t, d);
        updateEmpty();
        if (reloadAgain) {
          reloadAgain = false;
          reload();
        }
      }
    }
  }

  function replaceRows(jobs) {
    const keep = new Set();
    for (const job of jobs) {
      keep.add(job.id);
      const row = rows.get(job.id);
      if (row) {
        row.job = job;
        renderRow(row);
      } else {
        rows.set(job.id, makeRow(job));
      }
    }
    for (const id of [...rows.keys()]) if (!keep.has(id)) removeRow(id);
    for (const job of jobs) tbody.append(rows.get(job.id).tr);
    updateEmpty();
  }

  async function loadMore() {
    if (!next) return;
    more.disabled = true;
    try {
      const res = await api.jobs({ ...filters, limit: LIMIT, cursor: next });
      for (const job of res.jobs) if (!rows.has(job.id)) addRow(job);
      next = res.next;
      ignored.clear();
    } catch (e) {
      announce(`Could not load more jobs: ${e.message}`, "error");
    } finally {
      more.disabled = false;
      updateEmpty();
    }
  }
  more.addEventListener("click", loadMore);

  // -- the firehose ------------------------------------------------------------------------------------
  let stream = null;
  function connect() {
    if (stream) stream.stop();
    stream = new LiveStream({
      url: (lastEventId) => firehoseUrl({ queue: filters.queue, task: filters.task, lastEventId }),
      onEvent,
      onStatus: (s) => {
        setStreamStatus(status, s);
        if (s === "offline" && !loadedOnce) reload();
      },
      onOpen: (first) => {
        if (first) reload();
      },
    });
    loading = true;
    buffer = [];
    stream.start(null);
  }

  // -- queues --------------------------------------------------------------------------------------------
  const queueCards = new Map();
  async function refreshQueues() {
    if (document.hidden) return;
    let queues;
    try {
      queues = await api.queues();
    } catch (e) {
      setText(queueNote, `Queue figures unavailable: ${e.message}`);
      return;
    }
    if (disposed) return;
    setText(queueNote, queues.length ? "" : "No queues yet.");
    const names = new Set();
    for (const q of queues) {
      names.add(q.name);
      let card = queueCards.get(q.name);
      if (!card) {
        card = makeQueueCard(q.name);
        queueCards.set(q.name, card);
        queueList.append(card.li);
      }
      for (const k of ["queued", "running", "scheduled", "dead", "workers"]) setText(card[k], String(q[k] ?? 0));
      card.li.classList.toggle("has-dead", (q.dead || 0) > 0);
      card.li.classList.toggle("no-workers", !q.workers);
      card.li.classList.toggle("selected", filters.queue === q.name);
    }
    for (const [name, card] of queueCards) {
      if (!names.has(name)) {
        card.li.remove();
        queueCards.delete(name);
      }
    }
    syncOptions(queueSel, [...names].sort(), filters.queue);
  }

  function makeQueueCard(name) {
    const card = {};
    const fig = (key, label, href) => {
      card[key] = h("span", { class: "fig-n" });
      const inner = [card[key], h("span", { class: "fig-l" }, label)];
      return h("li", { class: `fig fig-${key}` }, href ? h("a", { href }, inner) : inner);
    };
    const q = encodeURIComponent(name);
    card.li = h(
      "li",
      { class: "queue-card", dataset: { queue: name } },
      h("h3", null, h("a", { href: `/?queue=${q}`, title: `Show jobs in queue ${name}` }, name)),
      h(
        "ul",
        { class: "figs", "aria-label": `queue ${name}` },
        fig("queued", "queued"),
        fig("running", "running"),
        fig("scheduled", "scheduled"),
        fig("dead", "dead", `/?view=dead&queue=${q}`),
        fig("workers", "workers"),
      ),
    );
    return card;
  }

  function syncOptions(select, values, selected) {
    const have = new Set([...select.options].map((o) => o.value));
    for (const v of values) if (!have.has(v)) select.append(h("option", { value: v }, v));
    if (selected && !have.has(selected) && !values.includes(selected)) {
      select.append(h("option", { value: selected }, selected));
    }
    select.value = selected;
  }

  api
    .tasks()
    .then((tasks) => {
      if (!disposed) syncOptions(taskSel, tasks.map((t) => t.name), filters.task);
    })
    .catch(() => {
      if (!disposed) syncOptions(taskSel, [], filters.task);
    });
  syncOptions(queueSel, [], filters.queue);

  // -- filters ---------------------------------------------------------------------------------------------
  filterForm.addEventListener("submit", (ev) => ev.preventDefault());
  filterForm.addEventListener("change", () => {
    const streamChanged = taskSel.value !== filters.task || queueSel.value !== filters.queue;
    filters.state = stateSel.value;
    filters.task = taskSel.value;
    filters.queue = queueSel.value;
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    nav.replace("/" + (q.toString() ? "?" + q : ""));
    for (const card of queueCards.values()) card.li.classList.toggle("selected", card.li.dataset.queue === filters.queue);
    next = null;
    if (streamChanged) connect();
    else reload();
  });

  connect();
  refreshQueues();
  const timer = setInterval(refreshQueues, QUEUE_REFRESH_MS);
  const onVisible = () => {
    if (!document.hidden) refreshQueues();
  };
  document.addEventListener("visibilitychange", onVisible);

  return {
    title: "Jobs",
    focus: heading,
    dispose() {
      disposed = true;
      if (stream) stream.stop();
      flush.cancel();
      clearInterval(timer);
      document.removeEventListener("visibilitychange", onVisible);
    },
  };
}

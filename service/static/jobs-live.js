// The jobs list's live firehose subscription: each event updates its job's row, adds the rows
// of new jobs, and fetches the details of jobs first seen on the stream (a few at a time). The
// same stream brings the deployment's figures (`stats`, about once a second) for the queue cards
// and the counts per state.

import { api, firehoseUrl } from "./api.js";
import { matches } from "./jobs-filters.js";
import { applyEvent, jobFromEvent } from "./job-model.js";
import { LiveStream } from "./live-stream.js";
import { setStreamStatus } from "./stream-badge.js";

const FETCH_CONCURRENCY = 4;
const FETCH_BACKLOG = 200;

/** `status` is the stream badge to keep up to date; `onStats(stats)` gets each `stats` event,
 * `onOffline(isOffline)` hears when the stream goes down and comes back. */
export function jobsLive({ filters, table, loader, status, onStats, onOffline }) {
  let disposed = false;
  let stream = null;
  const inflight = new Map(); // id -> events that arrived while its details were being fetched
  const ignored = new Set(); // jobs older than the window: their events are not shown
  const fetchQueue = [];
  let fetching = 0;

  function onEvent(type, d) {
    if (type === "stats") {
      onStats(d);
      return;
    }
    if (type === "snapshot" && !d.job) {
      // the stream could not resume exactly: refetch the list
      loader.reload();
      return;
    }
    if (loader.loading) {
      loader.hold(type, d);
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
    const row = table.get(id);
    if (row) {
      applyEvent(row.job, type, d);
      if (matches(filters, row.job)) table.markDirty(id);
      else table.remove(id);
      return;
    }
    if (ignored.has(id)) return;
    const job = applyEvent(jobFromEvent(d), type, d);
    if (!matches(filters, job)) return;
    if ((type === "queued" || type === "scheduled") && d.attempt === 0) {
      // most likely a new job: show it at once, then fetch its details (it may be an old job
      // retried by hand, which then moves to its place or out of the window)
      job.created_at = d.ts || new Date().toISOString();
      table.add(job);
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
    const row = table.get(job.id);
    if (!loader.inWindow(job)) ignored.add(job.id);
    if (!matches(filters, job) || !loader.inWindow(job)) {
      if (row) table.remove(job.id);
      return;
    }
    if (row) table.update(row, job);
    else table.add(job);
  }

  return {
    apply,
    /** (Re)subscribe with the current task and queue filters; the list reloads once it is open. */
    connect() {
      if (stream) stream.stop();
      stream = new LiveStream({
        url: (lastEventId) => firehoseUrl({ queue: filters.queue, task: filters.task, lastEventId, stats: 1 }),
        onEvent,
        onStatus: (s) => {
          setStreamStatus(status, s);
          onOffline(s !== "live");
          if (s === "offline" && !loader.loadedOnce) loader.reload();
        },
        onOpen: (first) => {
          if (first) loader.reload();
        },
      });
      loader.restart();
      stream.start(null);
    },
    /** The table covers other jobs now: events of jobs skipped before may be shown. */
    forgetIgnored() {
      ignored.clear();
    },
    dispose() {
      disposed = true;
      if (stream) stream.stop();
    },
  };
}

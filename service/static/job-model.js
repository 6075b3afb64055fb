// Pure: how one SSE event changes a job as the dashboard shows it (as the server's
// apply_event in service/core/wire.py does; states come from the generated contract.js). No DOM.

export function emptyProgress() {
  return { current: null, total: null, message: null };
}

/** A job as far as one firehose event tells (for jobs first seen on the stream). */
export function jobFromEvent(d) {
  return {
    id: d.job,
    task: d.task || "",
    queue: d.queue || "",
    state: d.state || "queued",
    attempt: typeof d.attempt === "number" ? d.attempt : 0,
    max_attempts: null,
    progress: emptyProgress(),
    created_at: null,
  };
}

/** Apply an event's data to a job object in place. Events arrive in order per job. */
export function applyEvent(job, type, d) {
  if (type === "snapshot") {
    for (const [k, v] of Object.entries(d)) {
      if (k !== "job" && k !== "type" && k !== "ts") job[k] = v;
    }
    if (!job.progress) job.progress = emptyProgress();
    return job;
  }
  if (d.state) job.state = d.state;
  if (typeof d.attempt === "number") job.attempt = d.attempt;
  if (d.task) job.task = d.task;
  if (d.queue) job.queue = d.queue;
  switch (type) {
    case "queued":
      if (d.attempt === 0 && (job.finished_at || job.result != null || job.error != null)) {
        // retried by hand: fresh attempts, as the service does
        job.progress = emptyProgress();
        job.result = null;
        job.error = null;
        job.finished_at = null;
      }
      break;
    case "started":
      job.started_at = d.ts || job.started_at;
      job.finished_at = null;
      break;
    case "progress":
      job.progress = {
        current: d.current ?? null,
        total: d.total ?? null,
        message: d.message ?? null,
      };
      break;
    case "retrying":
      if (d.error !== undefined) job.error = d.error;
      break;
    case "succeeded":
      job.result = d.result ?? null;
      job.error = null;
      job.finished_at = d.ts || job.finished_at;
      break;
    case "failed":
      if (d.error !== undefined) job.error = d.error;
      job.finished_at = d.ts || job.finished_at;
      break;
    case "cancelled":
      job.finished_at = d.ts || job.finished_at;
      break;
    default:
      break;
  }
  return job;
}

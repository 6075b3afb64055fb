// The job contract as the server defines it (service/contract.py and service/tidings.lua), copied
// by hand: job states, which of them are final, which events exist and the states a job can be in
// right after each. Everything else in the dashboard reads these from here.
//
// Soon the server will serve them: GET /api/contract is planned to return
// {"states": [...], "terminal": [...], "events": {...}}. Until then, keep this file in step with
// the server by hand. (The endpoint does not exist yet; nothing here fetches it.)

/** Every state a job can be in, in the order the filters list them. */
export const STATES = ["queued", "scheduled", "running", "succeeded", "failed", "cancelled"];

/** The final states: a job's event stream ends after one of these. */
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/** Each stored event type and the states a job is in right after it (as tidings.lua emits them). */
export const EVENTS = {
  queued: ["queued"],
  scheduled: ["scheduled"],
  started: ["running"],
  progress: ["running"],
  log: ["running"],
  retrying: ["running", "scheduled"],
  succeeded: ["succeeded"],
  failed: ["failed"],
  cancelled: ["cancelled"],
};

/** Sent on a stream only (never stored): the job's current state, when its log cannot be replayed. */
export const SNAPSHOT = "snapshot";

/** Every event type a stream can carry. */
export const EVENT_TYPES = [...Object.keys(EVENTS), SNAPSHOT];

/** States from which POST /api/jobs/{id}/cancel acts (running: the worker is asked to stop). */
export const CANCELLABLE = new Set(["queued", "scheduled", "running"]);

/** States from which POST /api/jobs/{id}/retry puts the job back in its queue. */
export const RETRYABLE = new Set(["failed", "cancelled"]);

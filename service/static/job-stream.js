// One job's live event stream (its events_url, resumed after the last event seen). It ends after
// the job's terminal event, and goes on again after a retry.

import { api, jobStreamUrl } from "./api.js";
import { TERMINAL } from "./contract.js";
import { LiveStream } from "./live-stream.js";
import { setStreamStatus } from "./stream-badge.js";

/** Follow `job` (which onEvent keeps up to date); `status` is the stream badge to keep current. */
export function jobStream(job, { onEvent, status }) {
  let stream = null;

  function onStatus(s) {
    const text = s === "ended" && TERMINAL.has(job.state) ? "finished" : undefined;
    setStreamStatus(status, s, text);
  }

  function start() {
    if (!stream) {
      stream = new LiveStream({
        url: (lastEventId) => jobStreamUrl(job, lastEventId),
        onEvent,
        onStatus,
        finished: () => TERMINAL.has(job.state),
        beforeReopen: async () => {
          // the events_url may carry a signed, expiring token: get a fresh one
          const fresh = await api.job(job.id);
          if (fresh.events_url) job.events_url = fresh.events_url;
        },
      });
    }
    stream.start(stream.lastId);
  }

  return {
    start,
    /** After a retry: if the stream ended, go on after the last event seen. */
    resume() {
      if (stream && !stream.es) start();
    },
    stop() {
      if (stream) stream.stop();
    },
  };
}

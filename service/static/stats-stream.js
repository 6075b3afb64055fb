// The deployment's figures, live: the firehose with `stats=only` (no job events), for pages that
// show queue figures without a jobs list.

import { firehoseUrl } from "./api.js";
import { LiveStream } from "./live-stream.js";
import { setStreamStatus } from "./stream-badge.js";

/** Calls `onStats(stats)` about once a second; keeps the `status` badge current. */
export function statsStream({ onStats, status }) {
  const stream = new LiveStream({
    url: () => firehoseUrl({ stats: "only" }),
    onEvent: (type, d) => {
      if (type === "stats") onStats(d);
    },
    onStatus: (s) => setStreamStatus(status, s),
  });
  stream.start(null);
  return { stop: () => stream.stop() };
}

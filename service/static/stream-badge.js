// The badge that tells whether a live stream is connected (a polite live region).

import { h, setText } from "./dom.js";

const STATUS_TEXT = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  offline: "offline, retrying…",
  ended: "stream ended",
};

export function streamBadge() {
  const el = h("span", { class: "stream", role: "status", "aria-live": "polite" });
  setStreamStatus(el, "connecting");
  return el;
}

export function setStreamStatus(el, status, text) {
  el.dataset.status = status;
  setText(el, text || STATUS_TEXT[status] || status);
}

// Toasts: short messages shown in #toast, which screen readers announce (role=status).

import { h } from "./dom.js";

/** Announce a message to screen readers and show it in the toast area. */
export function announce(message, kind = "info") {
  const box = document.getElementById("toast");
  if (!box) return;
  const item = h("div", { class: `toast toast-${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

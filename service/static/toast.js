// Toasts: short messages shown in #toast, which screen readers announce (role=status). Each goes
// after a few seconds, when closed, or when its owner dismisses it: a toast that announces a state
// ("cancellation requested") is dismissed once that state is reached, so it never lingers over
// the page saying something that is no longer true.

import { h } from "./dom.js";

const SHOWN_MS = 6000;

/**
 * Announce a message and show it in the toast area. Returns { dismiss() }. A `sticky` toast
 * stays until its owner dismisses it (at most five times as long as others).
 */
export function announce(message, kind = "info", { sticky = false } = {}) {
  const box = document.getElementById("toast");
  if (!box) return { dismiss() {} };
  const close = h("button", { type: "button", class: "toast-close", "aria-label": "Dismiss" }, "×");
  const item = h("div", { class: `toast toast-${kind}` }, h("span", { class: "toast-text" }, message), close);
  const dismiss = () => {
    clearTimeout(timer);
    item.remove();
  };
  const timer = setTimeout(dismiss, sticky ? SHOWN_MS * 5 : SHOWN_MS);
  close.addEventListener("click", dismiss);
  box.append(item);
  return { dismiss };
}

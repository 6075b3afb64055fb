// A small "Copy" button that puts a text (a job id) on the clipboard and says so.

import { h, setText } from "./dom.js";

/** A button copying `text`; `label` names what it copies for screen readers. */
export function copyButton(text, label) {
  const btn = h("button", { type: "button", class: "copy", title: `Copy ${label}`, "aria-label": `Copy ${label}` }, "Copy");
  let timer = null;
  btn.addEventListener("click", async (ev) => {
    ev.preventDefault();
    ev.stopPropagation();
    let ok = true;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      ok = false; // no clipboard (an insecure origin): the id is still there to select by hand
    }
    setText(btn, ok ? "Copied" : "Copy failed");
    btn.dataset.copied = ok ? "yes" : "no";
    clearTimeout(timer);
    timer = setTimeout(() => {
      setText(btn, "Copy");
      delete btn.dataset.copied;
    }, 1500);
  });
  return btn;
}

// A confirmation before an action that cannot be undone: a native modal <dialog> that says what
// the action does and to how many jobs, and waits for the answer. Escape, "Go back" or a click
// outside the box answers no; the safe answer has the focus.

import { h } from "./dom.js";

let uid = 0;

/** Ask; resolves true when the user confirms. `confirm` is the confirm button's label. */
export function confirmAction({ title, message, confirm, danger = false }) {
  const n = ++uid;
  return new Promise((resolve) => {
    const no = h("button", { type: "button", class: "secondary", value: "no" }, "Go back");
    const yes = h("button", { type: "button", class: danger ? "danger" : "", value: "yes" }, confirm);
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": `confirm-${n}-h`, "aria-describedby": `confirm-${n}-m` },
      h("h2", { id: `confirm-${n}-h` }, title),
      h("p", { id: `confirm-${n}-m` }, message),
      h("div", { class: "confirm-actions" }, no, yes),
    );
    let answer = false;
    const done = (value) => {
      answer = value;
      dialog.close();
    };
    no.addEventListener("click", () => done(false));
    yes.addEventListener("click", () => done(true));
    dialog.addEventListener("click", (ev) => {
      if (ev.target === dialog) done(false); // the backdrop
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

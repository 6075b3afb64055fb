// The sign-in form, shown instead of the page when the service requires an API key and this
// browser has no session. The key is posted once in a JSON body to /api/session, which answers
// with an HttpOnly cookie; then the field is emptied and the key dropped. The input has no `name`
// and the form posts, so even a native submission could not put the key in a URL.

import { api } from "./api.js";
import { h, setText } from "./dom.js";

const NOTES = {
  expired: "Your session has ended. Sign in again to go on where you were.",
  "signed-out": "You are signed out.",
};

export function mountSignIn(root, { reason, onSignedIn }) {
  let disposed = false;
  const heading = h("h1", { id: "signin-h", tabindex: "-1" }, "Sign in");
  const note = h("p", { class: "signin-note", id: "signin-note" }, NOTES[reason] || "");
  note.hidden = !NOTES[reason];
  const input = h("input", {
    type: "password",
    id: "signin-key",
    autocomplete: "current-password",
    autocapitalize: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": (NOTES[reason] ? "signin-note " : "") + "signin-err signin-hint",
  });
  const error = h("p", { class: "field-error", id: "signin-err", role: "alert", hidden: true });
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "signin-form", method: "post", "aria-labelledby": "signin-h", novalidate: true },
    h(
      "div",
      { class: "field" },
      h("label", { for: "signin-key" }, "API key"),
      input,
      h(
        "p",
        { class: "hint", id: "signin-hint" },
        "One of the service's auth.api_keys. It is exchanged for a session cookie and not stored by this page.",
      ),
      error,
    ),
    button,
  );
  root.append(
    h(
      "section",
      { class: "view view-signin" },
      h("div", { class: "card signin" }, heading, note, h("p", { class: "muted" }, "This Tidings service needs an API key."), form),
    ),
  );

  function fail(message) {
    error.hidden = false;
    setText(error, message);
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (button.disabled) return;
    error.hidden = true;
    input.removeAttribute("aria-invalid");
    if (!input.value) {
      fail("Enter an API key.");
      return;
    }
    button.disabled = true;
    setText(button, "Signing in…");
    let message = null;
    try {
      const key = input.value;
      input.value = ""; // forget it: the request below is the only place it goes
      await api.signIn(key);
      // a 200 sets the cookie; make sure the browser kept it before leaving this form
      const s = await api.session();
      if (!s.signedIn) message = "Signed in, but this browser did not keep the session cookie. Are cookies blocked?";
    } catch (e) {
      if (e.status === 403) message = "That key was not accepted. Check it and try again.";
      else if (e.status === 429) message = "Too many attempts. Wait a moment and try again.";
      else message = `Could not sign in: ${e.message}`;
    } finally {
      button.disabled = false;
      setText(button, "Sign in");
    }
    if (disposed) return;
    if (message) fail(message);
    else onSignedIn();
  });

  return {
    title: "Sign in",
    focus: input,
    dispose() {
      disposed = true;
    },
  };
}

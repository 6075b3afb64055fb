// Showing validation errors on the submit form: a message under a field (tied to it with
// aria-invalid and aria-describedby), and clearing them all before the next try.

import { setText } from "./dom.js";

/** Show `message` in `errorEl` and mark `input` invalid; returns the input (to focus). */
export function showError(input, errorEl, message) {
  errorEl.hidden = false;
  setText(errorEl, message);
  input.setAttribute("aria-invalid", "true");
  return input;
}

/** Hide every field error in `form` and the form-wide error `formErr`. */
export function clearErrors(form, formErr) {
  for (const el of form.querySelectorAll(".field-error")) {
    el.hidden = true;
    setText(el, "");
  }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  formErr.hidden = true;
}

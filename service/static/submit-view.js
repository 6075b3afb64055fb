// The submit form at "/?view=new": pick a task, fill a form built from its payload's JSON Schema
// (or edit the payload as JSON), submit, land on the job page. Validation is the server's: a 422
// is shown next to the field its path names. This module lays the parts out and submits the job.

import { api } from "./api.js";
import { h, setText } from "./dom.js";
import { clearErrors } from "./submit-errors.js";
import { jobOptions } from "./submit-options.js";
import { payloadEditor } from "./submit-payload.js";
import { taskPicker } from "./submit-task.js";

let uid = 0;

export function mountSubmit(root, params, nav) {
  let disposed = false;
  const n = ++uid;

  const heading = h("h1", { tabindex: "-1" }, "New job");
  const task = taskPicker(n, {
    onChange() {
      clearFormErrors();
      const q = new URLSearchParams({ view: "new", task: task.selected() });
      nav.replace(`/?${q}`);
      buildFields();
    },
  });
  const payload = payloadEditor(n, { clearErrors: () => clearFormErrors() });
  const options = jobOptions(n);
  const formErr = h("p", { class: "banner banner-error", role: "alert", hidden: true });
  const submitBtn = h("button", { type: "submit" }, "Submit job");
  const form = h(
    "form",
    { class: "submit-form", novalidate: true, "aria-labelledby": "submit-h" },
    task.el,
    payload.el,
    options.el,
    formErr,
    h("div", { class: "form-actions" }, submitBtn, h("a", { href: "/", class: "secondary-link" }, "Cancel")),
  );
  heading.id = "submit-h";
  root.append(h("section", { class: "view view-submit" }, h("div", { class: "view-head" }, heading), form));

  function clearFormErrors() {
    clearErrors(form, formErr);
  }

  function buildFields() {
    const current = task.current();
    task.describe(current);
    payload.build(current);
  }

  /** Put a 422 next to the field its path names; returns the input to focus. */
  function placeError(err) {
    const path = err.path || "";
    const msg = err.message || "invalid";
    const input = payload.placeError(path, msg);
    if (input) return input;
    if (path === "$.task") return task.showError(msg);
    const option = options.placeError(path, msg);
    if (option) return option;
    formErr.hidden = false;
    setText(formErr, path ? `${msg} (at ${path})` : msg);
    return null;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearFormErrors();
    const body = { task: task.value() };
    const read = payload.read();
    if (!read.ok) return;
    body.payload = read.payload;
    options.read(body);
    submitBtn.disabled = true;
    setText(submitBtn, "Submitting…");
    try {
      const res = await api.submit(body);
      if (disposed) return;
      nav.go(`/jobs/${res.data.id}`);
    } catch (e) {
      if (disposed) return;
      const focus = e.status === 422 ? placeError(e) : null;
      if (e.status !== 422) {
        formErr.hidden = false;
        setText(formErr, `Could not submit: ${e.message}`);
      }
      (focus || formErr).focus?.();
    } finally {
      submitBtn.disabled = false;
      setText(submitBtn, "Submit job");
    }
  });
  formErr.tabIndex = -1;

  api
    .tasks()
    .then((list) => {
      if (disposed) return;
      task.setTasks(list, params.get("task"));
      buildFields();
    })
    .catch((e) => {
      if (disposed) return;
      // without the task list: a free task name and a JSON payload
      task.unavailable(e, params.get("task") || "");
      payload.jsonOnly();
    });

  return {
    title: "New job",
    focus: heading,
    dispose() {
      disposed = true;
    },
  };
}

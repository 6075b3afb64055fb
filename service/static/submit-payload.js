// The submit form's payload: the fields a task's schema allows, or the payload as JSON (a toggle
// switches between the two, carrying the values over), and where a 422 about the payload shows.

import { clear, h } from "./dom.js";
import { formFields } from "./schema.js";
import { showError } from "./submit-errors.js";
import { fillFields, makeField, readFields } from "./submit-fields.js";

/** The payload part of form number `n`; `clearErrors()` clears the whole form's errors. */
export function payloadEditor(n, { clearErrors }) {
  let fields = []; // { spec, input, error, wrap }
  let jsonMode = false;
  const jsonToggle = h("input", { type: "checkbox", id: `json-${n}` });
  const fieldsBox = h("div", { class: "payload-fields" });
  const payloadArea = h("textarea", {
    id: `payload-${n}`,
    name: "payload",
    rows: "8",
    spellcheck: "false",
    class: "mono",
    "aria-describedby": `payload-${n}-err`,
  });
  const payloadErr = h("p", { class: "field-error", id: `payload-${n}-err`, hidden: true });
  const payloadBox = h(
    "div",
    { class: "field", dataset: { field: "$payload" } },
    h("label", { for: `payload-${n}` }, "Payload (JSON)"),
    payloadArea,
    payloadErr,
  );
  const el = h(
    "fieldset",
    { class: "payload" },
    h("legend", null, "Payload"),
    h("div", { class: "check" }, jsonToggle, h("label", { for: `json-${n}` }, "Edit the payload as JSON")),
    fieldsBox,
    payloadBox,
  );

  function syncMode() {
    fieldsBox.hidden = jsonMode;
    payloadBox.hidden = !jsonMode;
  }

  jsonToggle.addEventListener("change", () => {
    clearErrors();
    if (jsonToggle.checked) {
      const { payload } = readFields(fields, false);
      payloadArea.value = JSON.stringify(payload, null, 2);
      jsonMode = true;
    } else {
      let value;
      try {
        value = JSON.parse(payloadArea.value || "{}");
      } catch (e) {
        jsonToggle.checked = true;
        showError(payloadArea, payloadErr, `Not valid JSON: ${e.message}`);
        return;
      }
      fillFields(fields, value);
      jsonMode = false;
    }
    syncMode();
  });

  return {
    el,
    /** The fields of `task` (or null: none chosen); JSON only when its schema allows no form. */
    build(task) {
      clear(fieldsBox);
      fields = [];
      const form = task ? formFields(task.schema) : null;
      jsonToggle.disabled = !form;
      if (!form) {
        jsonMode = true;
        jsonToggle.checked = true;
        if (!payloadArea.value.trim()) payloadArea.value = "{}";
        syncMode();
        return;
      }
      for (const spec of form.fields) {
        const field = makeField(spec, n);
        fields.push(field);
        fieldsBox.append(field.wrap);
      }
      if (!form.fields.length) fieldsBox.append(h("p", { class: "muted" }, "This task takes no parameters."));
      jsonMode = false;
      jsonToggle.checked = false;
      syncMode();
    },
    /** Without the task list: the payload as JSON only. */
    jsonOnly() {
      fields = [];
      jsonMode = true;
      jsonToggle.checked = true;
      jsonToggle.disabled = true;
      payloadArea.value = "{}";
      syncMode();
    },
    /** The payload to send: { ok: true, payload }, or { ok: false } with the error shown and
     * focused. */
    read() {
      if (jsonMode) {
        try {
          return { ok: true, payload: JSON.parse(payloadArea.value || "null") };
        } catch (e) {
          showError(payloadArea, payloadErr, `Not valid JSON: ${e.message}`).focus();
          return { ok: false };
        }
      }
      const { payload, bad } = readFields(fields, true);
      if (bad) {
        const first = el.querySelector("[aria-invalid]");
        if (first) first.focus();
        return { ok: false };
      }
      return { ok: true, payload };
    },
    /** Show a 422 at `path` next to the payload field it names; returns the input to focus, or
     * null when the error is not the payload's to show. */
    placeError(path, msg) {
      let m = /^\$\.payload\.([^.[]+)/.exec(path);
      if (!m && (path === "$.payload" || path === "$.payload[]") && !jsonMode) {
        m = /field `([^`]+)`/.exec(msg);
        if (m && !fields.some((f) => f.spec.name === m[1])) m = null;
      }
      if (m && !jsonMode) {
        const f = fields.find((x) => x.spec.name === m[1]);
        if (f) return showError(f.input, f.error, msg);
      }
      if (path.startsWith("$.payload") || (jsonMode && path === "")) {
        if (jsonMode) return showError(payloadArea, payloadErr, path && path !== "$.payload" ? `${msg} (at ${path})` : msg);
      }
      return null;
    },
  };
}

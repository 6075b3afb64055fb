// The payload's form fields, one per schema property: building the input for a field spec (see
// schema.js), filling the fields from a payload, and reading a payload back from them.

import { h } from "./dom.js";
import { constraints } from "./schema.js";
import { showError } from "./submit-errors.js";

/** The field for `spec` in form number `n`: { spec, input, error, wrap }. */
export function makeField(spec, n) {
  const id = `p-${n}-${spec.name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const errId = `${id}-err`;
  const hintId = `${id}-hint`;
  const describe = `${errId} ${hintId}`;
  let input;
  const type = spec.kind === "enum" ? "choice" : spec.kind === "json" ? "JSON" : spec.kind;
  const hint = [type, spec.required ? "required" : null, ...constraints(spec.schema)];
  if (spec.default !== undefined && spec.kind !== "boolean") hint.push(`default ${JSON.stringify(spec.default)}`);
  if (spec.nullable) hint.push("may be null");
  if (spec.kind === "boolean") {
    input = h("input", { type: "checkbox", id, name: spec.name, "aria-describedby": describe });
    input.checked = spec.default === true;
  } else if (spec.kind === "enum") {
    input = h("select", { id, name: spec.name, "aria-describedby": describe });
    if (!spec.required) input.append(h("option", { value: "" }, "—"));
    for (const v of spec.options) input.append(h("option", { value: JSON.stringify(v) }, String(v)));
    if (spec.default !== undefined) input.value = JSON.stringify(spec.default);
  } else if (spec.kind === "json") {
    input = h("textarea", { id, name: spec.name, rows: "3", class: "mono", spellcheck: "false", "aria-describedby": describe });
    if (spec.default !== undefined) input.value = JSON.stringify(spec.default);
  } else {
    const attrs = { type: "text", id, name: spec.name, autocomplete: "off", "aria-describedby": describe };
    if (spec.kind === "integer") attrs.inputmode = "numeric";
    if (spec.kind === "number") attrs.inputmode = "decimal";
    input = h("input", attrs);
    if (spec.default !== undefined && spec.default !== null) input.value = String(spec.default);
  }
  if (spec.required) input.setAttribute("aria-required", "true");
  const error = h("p", { class: "field-error", id: errId, hidden: true });
  const label = h("label", { for: id }, spec.title || spec.name);
  const hintEl = h("p", { class: "hint", id: hintId }, hint.filter(Boolean).join(" · "));
  if (spec.description) hintEl.append(h("br"), spec.description);
  const wrap =
    spec.kind === "boolean"
      ? h("div", { class: "field check-field", dataset: { field: spec.name } }, h("div", { class: "check" }, input, label), hintEl, error)
      : h("div", { class: "field", dataset: { field: spec.name } }, label, input, hintEl, error);
  return { spec, input, error, wrap };
}

/** Put a payload's values into the fields (those it does not name are emptied). */
export function fillFields(fields, value) {
  if (!value || typeof value !== "object") return;
  for (const f of fields) {
    const v = value[f.spec.name];
    if (f.spec.kind === "boolean") f.input.checked = v === true;
    else if (f.spec.kind === "enum") f.input.value = v === undefined ? "" : JSON.stringify(v);
    else if (f.spec.kind === "json") f.input.value = v === undefined ? "" : JSON.stringify(v);
    else f.input.value = v === undefined || v === null ? "" : String(v);
  }
}

/** The payload from the form fields. Values that do not parse are sent as typed, so that the
 * server's 422 names the field. With `strict`, a JSON field that does not parse shows an error
 * and makes `bad` true. */
export function readFields(fields, strict) {
  const payload = {};
  let bad = false;
  for (const f of fields) {
    const { spec, input } = f;
    if (spec.kind === "boolean") {
      payload[spec.name] = input.checked;
      continue;
    }
    if (spec.kind === "enum") {
      if (input.value !== "") payload[spec.name] = JSON.parse(input.value);
      continue;
    }
    const raw = input.value;
    const t = raw.trim();
    if (spec.kind === "json") {
      if (!t) continue;
      try {
        payload[spec.name] = JSON.parse(t);
      } catch (e) {
        if (strict) {
          showError(input, f.error, `Not valid JSON: ${e.message}`);
          bad = true;
        }
      }
      continue;
    }
    if (spec.kind === "string") {
      if (raw === "" && !spec.required) continue;
      payload[spec.name] = raw;
      continue;
    }
    if (t === "") {
      if (spec.nullable && spec.required) payload[spec.name] = null;
      continue;
    }
    const num = Number(t);
    if (t !== "" && Number.isFinite(num) && (spec.kind === "number" || /^[-+]?\d+$/.test(t))) payload[spec.name] = num;
    else payload[spec.name] = t; // let the server say what is wrong with it
  }
  return { payload, bad };
}

// The submit form at "/?view=new": pick a task, fill a form built from its payload's JSON Schema
// (or edit the payload as JSON), submit, land on the job page. Validation is the server's: a 422
// is shown next to the field its path names.

import { api } from "./api.js";
import { clear, h, setText } from "./dom.js";

const SIMPLE = new Set(["integer", "number", "string", "boolean", "enum"]);

/** Follow local "$ref"s ("#/$defs/Name") in a schema from msgspec. */
function resolve(schema, root) {
  let s = schema;
  const seen = new Set();
  while (s && typeof s === "object" && typeof s.$ref === "string" && !seen.has(s.$ref)) {
    seen.add(s.$ref);
    const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(s.$ref);
    s = m && root[m[1]] ? root[m[1]][decodeURIComponent(m[2])] : null;
  }
  return s || {};
}

/** What input a property gets: { kind, nullable, options } */
function fieldKind(prop, root) {
  let s = resolve(prop, root);
  let nullable = false;
  const alts = s.anyOf || s.oneOf;
  if (Array.isArray(alts)) {
    const rest = alts.map((a) => resolve(a, root)).filter((a) => a.type !== "null");
    nullable = rest.length < alts.length;
    if (rest.length !== 1) return { kind: "json", nullable };
    s = { ...rest[0], default: prop.default ?? s.default };
  }
  let type = s.type;
  if (Array.isArray(type)) {
    nullable = nullable || type.includes("null");
    const rest = type.filter((t) => t !== "null");
    type = rest.length === 1 ? rest[0] : null;
  }
  if (Array.isArray(s.enum) && s.enum.every((v) => v === null || ["string", "number", "boolean"].includes(typeof v))) {
    return { kind: "enum", nullable, options: s.enum, schema: s };
  }
  if (["integer", "number", "string", "boolean"].includes(type)) return { kind: type, nullable, schema: s };
  return { kind: "json", nullable, schema: s };
}

/** The form a schema allows: a list of fields, or null when only a JSON editor will do. */
export function formFields(schema) {
  const root = schema || {};
  const s = resolve(root, root);
  if (s.type !== "object" || !s.properties || typeof s.properties !== "object") return null;
  const required = new Set(s.required || []);
  const fields = [];
  for (const [name, prop] of Object.entries(s.properties)) {
    const k = fieldKind(prop, root);
    const def = prop.default !== undefined ? prop.default : k.schema && k.schema.default;
    fields.push({ name, ...k, required: required.has(name), default: def, title: prop.title, description: prop.description });
  }
  if (fields.length && !fields.some((f) => SIMPLE.has(f.kind))) return null;
  return { fields, description: s.description || "", closed: s.additionalProperties === false };
}

function constraints(s) {
  if (!s) return [];
  const out = [];
  if (s.minimum !== undefined) out.push(`≥ ${s.minimum}`);
  if (s.exclusiveMinimum !== undefined) out.push(`> ${s.exclusiveMinimum}`);
  if (s.maximum !== undefined) out.push(`≤ ${s.maximum}`);
  if (s.exclusiveMaximum !== undefined) out.push(`< ${s.exclusiveMaximum}`);
  if (s.minLength !== undefined) out.push(`at least ${s.minLength} characters`);
  if (s.maxLength !== undefined) out.push(`at most ${s.maxLength} characters`);
  if (s.pattern !== undefined) out.push(`matching ${s.pattern}`);
  return out;
}

let uid = 0;

export function mountSubmit(root, params, nav) {
  let disposed = false;
  let tasks = [];
  let fields = []; // { spec, input, error, wrap }
  let jsonMode = false;
  const n = ++uid;
  let taskInput = null; // the task <select>, or a text input when the task list is unavailable

  const heading = h("h1", { tabindex: "-1" }, "New job");
  const taskSel = h("select", { id: `task-${n}`, name: "task", "aria-describedby": `task-${n}-err task-${n}-doc` });
  const taskErr = h("p", { class: "field-error", id: `task-${n}-err`, hidden: true });
  const taskDoc = h("p", { class: "hint", id: `task-${n}-doc` });
  const taskField = h(
    "div",
    { class: "field", dataset: { field: "$task" } },
    h("label", { for: `task-${n}` }, "Task"),
    taskSel,
    taskDoc,
    taskErr,
  );
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
  const payloadFieldset = h(
    "fieldset",
    { class: "payload" },
    h("legend", null, "Payload"),
    h("div", { class: "check" }, jsonToggle, h("label", { for: `json-${n}` }, "Edit the payload as JSON")),
    fieldsBox,
    payloadBox,
  );

  const opt = {};
  const optField = (key, label, attrs, hint) => {
    const id = `opt-${key}-${n}`;
    opt[key] = {
      input: h("input", { id, name: key, "aria-describedby": `${id}-err ${id}-hint`, ...attrs }),
      error: h("p", { class: "field-error", id: `${id}-err`, hidden: true }),
    };
    return h(
      "div",
      { class: "field", dataset: { field: `$${key}` } },
      h("label", { for: id }, label),
      opt[key].input,
      h("p", { class: "hint", id: `${id}-hint` }, hint),
      opt[key].error,
    );
  };
  const options = h(
    "details",
    { class: "options" },
    h("summary", null, "Options"),
    h(
      "div",
      { class: "grid-fields" },
      optField("queue", "Queue", { type: "text", autocomplete: "off" }, "default: the task's queue"),
      optField("delay_s", "Delay (seconds)", { type: "text", inputmode: "decimal", autocomplete: "off" }, "run no sooner than this"),
      optField("max_attempts", "Max attempts", { type: "text", inputmode: "numeric", autocomplete: "off" }, ""),
      optField("timeout_s", "Timeout (seconds)", { type: "text", inputmode: "decimal", autocomplete: "off" }, ""),
      optField("idempotency_key", "Idempotency key", { type: "text", autocomplete: "off" }, "the same key again returns the same job"),
    ),
  );
  const formErr = h("p", { class: "banner banner-error", role: "alert", hidden: true });
  const submitBtn = h("button", { type: "submit" }, "Submit job");
  const form = h(
    "form",
    { class: "submit-form", novalidate: true, "aria-labelledby": "submit-h" },
    taskField,
    payloadFieldset,
    options,
    formErr,
    h("div", { class: "form-actions" }, submitBtn, h("a", { href: "/", class: "secondary-link" }, "Cancel")),
  );
  heading.id = "submit-h";
  taskInput = taskSel;
  root.append(h("section", { class: "view view-submit" }, h("div", { class: "view-head" }, heading), form));

  // -- building the payload form ---------------------------------------------------------------
  function currentTask() {
    return tasks.find((t) => t.name === taskSel.value) || null;
  }

  function buildFields() {
    clear(fieldsBox);
    fields = [];
    const task = currentTask();
    const info = [];
    if (task) {
      if (task.doc) info.push(task.doc);
      info.push(
        task.workers
          ? `${task.workers} worker process${task.workers === 1 ? "" : "es"} run${task.workers === 1 ? "s" : ""} this task.`
          : "No worker runs this task right now: jobs wait in the queue until one starts.",
      );
    }
    setText(taskDoc, info.join(" "));
    const form = task ? formFields(task.schema) : null;
    jsonToggle.disabled = !form;
    if (!form) {
      jsonMode = true;
      jsonToggle.checked = true;
      if (!payloadArea.value.trim()) payloadArea.value = "{}";
      syncMode();
      return;
    }
    for (const spec of form.fields) fieldsBox.append(makeField(spec));
    if (!form.fields.length) fieldsBox.append(h("p", { class: "muted" }, "This task takes no parameters."));
    jsonMode = false;
    jsonToggle.checked = false;
    syncMode();
  }

  function makeField(spec) {
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
    fields.push({ spec, input, error, wrap });
    return wrap;
  }

  function syncMode() {
    fieldsBox.hidden = jsonMode;
    payloadBox.hidden = !jsonMode;
  }

  jsonToggle.addEventListener("change", () => {
    clearErrors();
    if (jsonToggle.checked) {
      const { payload } = readFields(false);
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
      fillFields(value);
      jsonMode = false;
    }
    syncMode();
  });

  function fillFields(value) {
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
   * server's 422 names the field. */
  function readFields(strict) {
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

  function readOptions(body) {
    const s = (key) => opt[key].input.value.trim();
    const num = (key) => {
      const t = s(key);
      if (!t) return undefined;
      const v = Number(t);
      return Number.isFinite(v) ? v : t;
    };
    if (s("queue")) body.queue = s("queue");
    if (s("idempotency_key")) body.idempotency_key = s("idempotency_key");
    for (const key of ["delay_s", "max_attempts", "timeout_s"]) {
      const v = num(key);
      if (v !== undefined) body[key] = v;
    }
    return body;
  }

  // -- errors ----------------------------------------------------------------------------------------
  function showError(input, errorEl, message) {
    errorEl.hidden = false;
    setText(errorEl, message);
    input.setAttribute("aria-invalid", "true");
    return input;
  }

  function clearErrors() {
    for (const el of form.querySelectorAll(".field-error")) {
      el.hidden = true;
      setText(el, "");
    }
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    formErr.hidden = true;
  }

  /** Put a 422 next to the field its path names; returns the input to focus. */
  function placeError(err) {
    const path = err.path || "";
    const msg = err.message || "invalid";
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
    if (path === "$.task") return showError(taskInput, taskErr, msg);
    const optKey = /^\$\.(queue|delay_s|max_attempts|timeout_s|idempotency_key)\b/.exec(path);
    if (optKey) {
      options.open = true;
      return showError(opt[optKey[1]].input, opt[optKey[1]].error, msg);
    }
    formErr.hidden = false;
    setText(formErr, path ? `${msg} (at ${path})` : msg);
    return null;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const body = { task: taskInput.value.trim() };
    if (jsonMode) {
      try {
        body.payload = JSON.parse(payloadArea.value || "null");
      } catch (e) {
        showError(payloadArea, payloadErr, `Not valid JSON: ${e.message}`).focus();
        return;
      }
    } else {
      const { payload, bad } = readFields(true);
      if (bad) {
        const first = form.querySelector("[aria-invalid]");
        if (first) first.focus();
        return;
      }
      body.payload = payload;
    }
    readOptions(body);
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

  taskSel.addEventListener("change", () => {
    clearErrors();
    const q = new URLSearchParams({ view: "new", task: taskSel.value });
    nav.replace(`/?${q}`);
    buildFields();
  });

  api
    .tasks()
    .then((list) => {
      if (disposed) return;
      tasks = list;
      clear(taskSel);
      for (const t of tasks) taskSel.append(h("option", { value: t.name }, t.name));
      const want = params.get("task");
      if (want && tasks.some((t) => t.name === want)) taskSel.value = want;
      if (!tasks.length) setText(taskDoc, "No tasks are registered with the service.");
      buildFields();
    })
    .catch((e) => {
      if (disposed) return;
      // without the task list: a free task name and a JSON payload
      const free = h("input", {
        type: "text",
        id: taskSel.id,
        name: "task",
        value: params.get("task") || "",
        "aria-describedby": taskSel.getAttribute("aria-describedby"),
      });
      taskSel.replaceWith(free);
      taskInput = free;
      setText(taskDoc, `The task list is unavailable (${e.message}); type a task name and its payload as JSON.`);
      fields = [];
      jsonMode = true;
      jsonToggle.checked = true;
      jsonToggle.disabled = true;
      payloadArea.value = "{}";
      syncMode();
    });

  return {
    title: "New job",
    focus: heading,
    dispose() {
      disposed = true;
    },
  };
}

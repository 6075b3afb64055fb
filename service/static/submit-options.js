// The submit form's Options (queue, delay, max attempts, timeout, idempotency key): their fields,
// reading them into the request, and where a 422 about one of them shows.

import { h } from "./dom.js";
import { showError } from "./submit-errors.js";

/** The options of form number `n`. */
export function jobOptions(n) {
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
  const el = h(
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

  return {
    el,
    /** Add the options that are set to the request `body`. Numbers that do not parse are sent
     * as typed, so that the server's 422 names them. */
    read(body) {
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
    },
    /** Show a 422 at `path` next to the option it names (opening Options); returns the input to
     * focus, or null when the path names no option. */
    placeError(path, msg) {
      const optKey = /^\$\.(queue|delay_s|max_attempts|timeout_s|idempotency_key)\b/.exec(path);
      if (!optKey) return null;
      el.open = true;
      return showError(opt[optKey[1]].input, opt[optKey[1]].error, msg);
    },
  };
}

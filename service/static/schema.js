// Pure: walking a task's payload JSON Schema (as msgspec writes it) to decide which form fields
// it gets, and the hints that describe their constraints. No DOM.

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

/** The constraints of a (resolved) schema, in words: ["≥ 0", "at most 10 characters", …]. */
export function constraints(s) {
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

// Building DOM nodes. Text always goes in as text nodes (never innerHTML), and styles are set
// through the CSSOM, so the page runs under `Content-Security-Policy: default-src 'self'`.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Keep `entries` (a Map key → entry) in step with `items`: an entry is made for each new key
 * (`make(item)`, which also places its node), every entry is rendered (`render(entry, item)`),
 * and the entries whose key is gone are removed with their node (`nodeOf(entry)`). Returns the
 * keys, in the items' order. */
export function syncKeyed(entries, items, keyOf, { make, render, nodeOf }) {
  const keys = [];
  for (const item of items) {
    const key = keyOf(item);
    keys.push(key);
    let entry = entries.get(key);
    if (!entry) {
      entry = make(item);
      entries.set(key, entry);
    }
    render(entry, item);
  }
  const live = new Set(keys);
  for (const [key, entry] of entries) {
    if (!live.has(key)) {
      nodeOf(entry).remove();
      entries.delete(key);
    }
  }
  return keys;
}

export function setText(el, text) {
  const t = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== t) el.textContent = t;
}

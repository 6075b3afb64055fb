// The queue cards above the jobs list: per queue, how many jobs are queued, running, scheduled
// and dead, and how many workers serve it; refreshed every few seconds while the tab is visible.

import { api } from "./api.js";
import { h, setText } from "./dom.js";

const QUEUE_REFRESH_MS = 3000;

function makeQueueCard(name) {
  const card = {};
  const fig = (key, label, href) => {
    card[key] = h("span", { class: "fig-n" });
    const inner = [card[key], h("span", { class: "fig-l" }, label)];
    return h("li", { class: `fig fig-${key}` }, href ? h("a", { href }, inner) : inner);
  };
  const q = encodeURIComponent(name);
  card.li = h(
    "li",
    { class: "queue-card", dataset: { queue: name } },
    h("h3", null, h("a", { href: `/?queue=${q}`, title: `Show jobs in queue ${name}` }, name)),
    h(
      "ul",
      { class: "figs", "aria-label": `queue ${name}` },
      fig("queued", "queued"),
      fig("running", "running"),
      fig("scheduled", "scheduled"),
      fig("dead", "dead", `/?view=dead&queue=${q}`),
      fig("workers", "workers"),
    ),
  );
  return card;
}

/** The queue cards; the one of `filters.queue` is marked selected. `onQueues(names)` gets the
 * sorted queue names after each refresh. */
export function queueCards(filters, { onQueues }) {
  let disposed = false;
  let timer = null;
  const cards = new Map();
  const list = h("ul", { class: "queue-cards" });
  const note = h("p", { class: "muted small" });
  const el = h(
    "section",
    { class: "queues", "aria-labelledby": "queues-h" },
    h("h2", { id: "queues-h", class: "sr-only" }, "Queues"),
    list,
    note,
  );

  async function refresh() {
    if (document.hidden) return;
    let queues;
    try {
      queues = await api.queues();
    } catch (e) {
      setText(note, `Queue figures unavailable: ${e.message}`);
      return;
    }
    if (disposed) return;
    setText(note, queues.length ? "" : "No queues yet.");
    const names = new Set();
    for (const q of queues) {
      names.add(q.name);
      let card = cards.get(q.name);
      if (!card) {
        card = makeQueueCard(q.name);
        cards.set(q.name, card);
        list.append(card.li);
      }
      for (const k of ["queued", "running", "scheduled", "dead", "workers"]) setText(card[k], String(q[k] ?? 0));
      card.li.classList.toggle("has-dead", (q.dead || 0) > 0);
      card.li.classList.toggle("no-workers", !q.workers);
      card.li.classList.toggle("selected", filters.queue === q.name);
    }
    for (const [name, card] of cards) {
      if (!names.has(name)) {
        card.li.remove();
        cards.delete(name);
      }
    }
    onQueues([...names].sort());
  }

  const onVisible = () => {
    if (!document.hidden) refresh();
  };

  return {
    el,
    /** Mark the card of the queue now filtered on. */
    markSelected() {
      for (const card of cards.values()) card.li.classList.toggle("selected", card.li.dataset.queue === filters.queue);
    },
    start() {
      refresh();
      timer = setInterval(refresh, QUEUE_REFRESH_MS);
      document.addEventListener("visibilitychange", onVisible);
    },
    dispose() {
      disposed = true;
      clearInterval(timer);
      document.removeEventListener("visibilitychange", onVisible);
    },
  };
}

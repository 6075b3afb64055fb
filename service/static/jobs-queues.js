// The queue cards above the jobs list: per queue, how many jobs are queued, running, scheduled
// and dead, how many workers serve it, and whether it is paused. The figures come from the
// firehose's `stats` event (about once a second, computed by the service with the very function
// behind GET /api/queues), so they agree with the API and are never polled for.

import { h, setText, syncKeyed } from "./dom.js";

/** A queue's figures, in the order the cards and the queues page show them. */
export const FIGS = ["queued", "running", "scheduled", "dead", "workers"];

function makeQueueCard(name) {
  const card = {};
  const fig = (key, label, href) => {
    card[key] = h("span", { class: "fig-n" });
    const inner = [card[key], h("span", { class: "fig-l" }, label)];
    return h("li", { class: `fig fig-${key}` }, href ? h("a", { href }, inner) : inner);
  };
  const q = encodeURIComponent(name);
  card.paused = h("span", { class: "badge badge-paused", hidden: true }, "paused");
  card.li = h(
    "li",
    { class: "queue-card", dataset: { queue: name } },
    h("h3", null, h("a", { href: `/?queue=${q}`, title: `Show jobs in queue ${name}` }, name), " ", card.paused),
    h(
      "ul",
      { class: "figs", "aria-label": `queue ${name}` },
      fig("queued", "queued"),
      fig("running", "running"),
      fig("scheduled", "scheduled"),
      fig("dead", "dead", `/?view=dead&queue=${q}`),
      fig("workers", "workers", "/?view=workers"),
    ),
  );
  return card;
}

/** Show one queue's figures on its card. */
function renderQueueFigures(card, q) {
  for (const k of FIGS) setText(card[k], String(q[k] ?? 0));
  card.paused.hidden = !q.paused;
  card.li.dataset.paused = q.paused ? "true" : "false";
  card.li.classList.toggle("has-dead", (q.dead || 0) > 0);
  card.li.classList.toggle("no-workers", !q.workers);
}

/** The queue cards; the one of `filters.queue` is marked selected. `onQueues(names)` gets the
 * sorted queue names whenever they change. */
export function queueCards(filters, { onQueues }) {
  const cards = new Map();
  let shownNames = "";
  const list = h("ul", { class: "queue-cards" });
  const note = h("p", { class: "muted small" }, "Loading queue figures…");
  const el = h(
    "section",
    { class: "queues", "aria-labelledby": "queues-h" },
    h("h2", { id: "queues-h", class: "sr-only" }, "Queues"),
    list,
    note,
  );

  return {
    el,
    /** The figures of a `stats` event. */
    update(stats) {
      const queues = stats.queues || [];
      el.dataset.statsAt = stats.ts || "";
      setText(note, queues.length ? "" : "No queues yet.");
      const names = syncKeyed(cards, queues, (q) => q.name, {
        make(q) {
          const card = makeQueueCard(q.name);
          list.append(card.li);
          return card;
        },
        render(card, q) {
          renderQueueFigures(card, q);
          card.li.classList.toggle("selected", filters.queue === q.name);
        },
        nodeOf: (card) => card.li,
      });
      const sorted = [...new Set(names)].sort();
      if (sorted.join("\n") !== shownNames) {
        shownNames = sorted.join("\n");
        onQueues(sorted);
      }
    },
    /** The stream is down: say the figures may be stale (they stay as they were). */
    stale(isStale) {
      el.classList.toggle("stale", isStale);
    },
    /** Mark the card of the queue now filtered on. */
    markSelected() {
      for (const card of cards.values()) card.li.classList.toggle("selected", card.li.dataset.queue === filters.queue);
    },
  };
}

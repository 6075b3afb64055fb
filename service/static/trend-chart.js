// The trend's two kinds of chart, as plain inline SVG (no library): finished jobs per minute as
// bars stacked by outcome, and wait or run time percentiles per minute as lines on a log scale.
// Each chart is an image with a one-line summary for screen readers, and every bar and point has
// a tooltip (<title>) with its numbers.

import { h } from "./dom.js";
import { fmtDuration, fmtNum } from "./format.js";
import { s } from "./svg.js";

const W = 720;
const H = 200;
const PAD = { left: 46, right: 8, top: 10, bottom: 24 };
export const OUTCOMES = ["succeeded", "failed", "cancelled"];
const LINES = ["p50", "p95"];

const hhmm = (iso) => {
  const d = new Date(iso);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
};

/** A round number at or above `n` (1, 2 or 5 times a power of ten). */
function niceMax(n) {
  if (n <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 5, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}

function frame(summary, label) {
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": `${label}: ${summary}`,
    preserveAspectRatio: "xMidYMid meet",
  });
  return svg;
}

/** X positions: one slot per minute. */
function slots(n) {
  const inner = W - PAD.left - PAD.right;
  const width = inner / Math.max(1, n);
  return { width, x: (i) => PAD.left + i * width };
}

function timeAxis(svg, points, x, width) {
  const every = points.length > 90 ? 30 : points.length > 30 ? 10 : 5;
  points.forEach((p, i) => {
    const minute = new Date(p.at).getMinutes();
    if (minute % every !== 0) return;
    const cx = x(i) + width / 2;
    svg.append(
      s("line", { x1: cx, x2: cx, y1: H - PAD.bottom, y2: H - PAD.bottom + 4, class: "axis" }),
      s("text", { x: cx, y: H - 6, "text-anchor": "middle", class: "tick" }, hhmm(p.at)),
    );
  });
  svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "axis" }));
}

/** Finished jobs per minute, stacked by outcome. */
export function throughputChart(points) {
  const totals = points.map((p) => OUTCOMES.reduce((n, o) => n + (p[o] || 0), 0));
  const sum = (o) => points.reduce((n, p) => n + (p[o] || 0), 0);
  const summary = OUTCOMES.map((o) => `${fmtNum(sum(o))} ${o}`).join(", ") + ` in ${points.length} minutes`;
  const svg = frame(summary, "Finished jobs per minute");
  const top = niceMax(Math.max(0, ...totals));
  const inner = H - PAD.top - PAD.bottom;
  const y = (v) => H - PAD.bottom - (v / top) * inner;
  for (const v of [0, top / 2, top]) {
    svg.append(
      s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, fmtNum(v)),
    );
  }
  const { width, x } = slots(points.length);
  points.forEach((p, i) => {
    if (!totals[i]) return;
    let base = 0;
    const g = s("g", { class: "minute" });
    g.append(s("title", null, `${hhmm(p.at)}: ` + OUTCOMES.map((o) => `${fmtNum(p[o] || 0)} ${o}`).join(", ")));
    for (const o of OUTCOMES) {
      const v = p[o] || 0;
      if (!v) continue;
      g.append(
        s("rect", {
          x: x(i) + width * 0.12,
          width: Math.max(1, width * 0.76),
          y: y(base + v),
          height: Math.max(0.5, y(base) - y(base + v)),
          class: `bar-${o}`,
        }),
      );
      base += v;
    }
    svg.append(g);
  });
  timeAxis(svg, points, x, width);
  return svg;
}

const LOG_TICKS = [1, 10, 100, 1000, 10_000, 60_000, 600_000, 3_600_000];
const TICK_TEXT = ["1 ms", "10 ms", "100 ms", "1 s", "10 s", "1 min", "10 min", "1 h"];

/** Wait or run time percentiles (p50 and p95) per minute, on a log scale. `key`: wait_ms or
 * run_ms. */
export function latencyChart(points, key, label) {
  const have = points.filter((p) => p[key]);
  const last = have.length ? have[have.length - 1][key] : null;
  const summary = last ? `latest minute p50 ${fmtDuration(last.p50)}, p95 ${fmtDuration(last.p95)}` : "no jobs in this window";
  const svg = frame(summary, label);
  const hi = Math.max(10, ...have.map((p) => p[key].p95));
  const top = LOG_TICKS.find((t) => t >= hi) || hi;
  const inner = H - PAD.top - PAD.bottom;
  const y = (v) => H - PAD.bottom - (Math.log10(Math.max(1, v)) / Math.log10(top)) * inner;
  LOG_TICKS.forEach((t, i) => {
    if (t > top) return;
    svg.append(
      s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(t), y2: y(t), class: "grid" }),
      s("text", { x: PAD.left - 6, y: y(t) + 4, "text-anchor": "end", class: "tick" }, TICK_TEXT[i]),
    );
  });
  const { width, x } = slots(points.length);
  for (const line of LINES) {
    let run = [];
    const flush = () => {
      if (run.length > 1) svg.append(s("polyline", { points: run.join(" "), class: `line line-${line}` }));
      run = [];
    };
    points.forEach((p, i) => {
      const v = p[key];
      if (!v) {
        flush();
        return;
      }
      const cx = x(i) + width / 2;
      const cy = y(v[line]);
      run.push(`${cx.toFixed(1)},${cy.toFixed(1)}`);
      svg.append(
        s("circle", { cx, cy, r: 2.5, class: `dot dot-${line}` }, s("title", null, `${hhmm(p.at)} ${line}: ${fmtDuration(v[line])} (${fmtNum(v.count)} jobs)`)),
      );
    });
    flush();
  }
  timeAxis(svg, points, x, width);
  return svg;
}

/** A legend: a swatch and a name per series. */
export function legend(names, prefix) {
  return h(
    "ul",
    { class: "legend" },
    names.map((n) => h("li", null, h("span", { class: `swatch swatch-${prefix}-${n}` }), n)),
  );
}

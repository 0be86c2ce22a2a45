// A small SVG line chart: a few series over time, with a y axis from 0, a time axis, and a
// text summary for screen readers (the SVG itself is presentational).

import { h, s } from "./dom.js";

const W = 600;
const H = 180;
const PAD = { l: 36, r: 10, t: 10, b: 24 };

/** A top for the y axis: four gridline steps of 1, 2 or 5 × 10^k, so ticks are round numbers. */
function niceMax(v) {
  const raw = Math.max(1, v / 4);
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((st) => st >= raw);
  return step * 4;
}

function clock(ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/**
 * samples: [{at, ...}], series: [{key, label, cls}]. Returns a <figure>.
 */
export function lineChart(title, samples, series) {
  const fig = h("figure", { class: "chart" });
  const cap = h("figcaption", {}, title);
  fig.append(cap);
  if (!samples.length) {
    fig.append(h("p", { class: "muted" }, "No data yet: the controller samples every 10 seconds."));
    return fig;
  }
  const t0 = samples[0].at;
  const t1 = Math.max(samples[samples.length - 1].at, t0 + 60_000);
  const max = niceMax(Math.max(1, ...samples.flatMap((p) => series.map((se) => p[se.key] || 0))));
  const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / max) * (H - PAD.t - PAD.b);

  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", "aria-hidden": "true", focusable: "false" });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    svg.append(
      s("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: PAD.l - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, Number.isInteger(v) ? v : v.toFixed(1)),
    );
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    svg.append(s("text", { x: x(t), y: H - 6, class: "tick", "text-anchor": anchor }, clock(t)));
  }
  for (const se of series) {
    // Step lines: a count holds until the next sample.
    let d = "";
    samples.forEach((p, i) => {
      const px = x(p.at).toFixed(1);
      const py = y(p[se.key] || 0).toFixed(1);
      d += i === 0 ? `M${px},${py}` : `H${px}V${py}`;
    });
    d += `H${x(t1).toFixed(1)}`; // the last count holds until now

    svg.append(s("path", { d, class: ["series", se.cls] }));
  }
  fig.append(svg);
  const last = samples[samples.length - 1];
  const peak = (k) => Math.max(...samples.map((p) => p[k] || 0));
  fig.append(
    h(
      "ul",
      { class: "legend" },
      series.map((se) => h("li", {}, h("span", { class: ["swatch", se.cls], "aria-hidden": "true" }), `${se.label}: ${last[se.key] || 0} now, ${peak(se.key)} peak`)),
    ),
  );
  return fig;
}

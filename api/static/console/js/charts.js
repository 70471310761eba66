// Charts drawn with uPlot (vendored, global `uPlot`), each sized to its container and followed by a table of
// the same numbers for keyboard and screen-reader users.

import { clear, h } from "./dom.js";

const COLORS = ["#0b57d0", "#b3261e", "#146c2e", "#7c4dff", "#8a5300"];
const HEIGHT = 260;

function once(fn) {
  let done = false;
  return () => {
    if (!done) {
      done = true;
      fn();
    }
  };
}

function widthOf(el) {
  return Math.max(240, Math.floor(el.clientWidth || el.parentElement?.clientWidth || 600));
}

/** Redraw at the container's width when it changes (window resize, narrow screens). */
function keepSized(plot, el) {
  const observer = new ResizeObserver(() => plot.setSize({ width: widthOf(el), height: HEIGHT }));
  observer.observe(el);
  return () => observer.disconnect();
}

/**
 * A line chart: x values and one or more series {label, values}. Returns {update(x, series), onPick(fn),
 * destroy()}; onPick receives the index of the point clicked.
 */
export function lineChart(el, { title, xLabel, yLabel, x, series, xFormat, pointsOnly = false }) {
  clear(el);
  const holder = h("div", { class: "chart", role: "img", "aria-label": `${title}: chart (values in the table below)` });
  el.append(holder);
  const pickers = [];
  const opts = {
    title,
    width: widthOf(el),
    height: HEIGHT,
    scales: { x: { time: false } },
    axes: [
      { label: xLabel, values: xFormat ? (u, ticks) => ticks.map(xFormat) : undefined },
      { label: yLabel, size: 60 },
    ],
    series: [
      { label: xLabel, value: xFormat ? (u, v) => (v === null ? "–" : xFormat(v)) : undefined },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color || COLORS[i % COLORS.length],
        width: pointsOnly ? 0 : 2,
        points: { show: true, size: 8, fill: s.color || COLORS[i % COLORS.length] },
        spanGaps: true,
      })),
    ],
    cursor: { drag: { x: true, y: false } },
  };
  const plot = new uPlot(opts, [x, ...series.map((s) => s.values)], holder);
  plot.over.addEventListener("click", () => {
    const index = plot.cursor.idx;
    if (index !== null && index !== undefined) pickers.forEach((fn) => fn(index));
  });
  const unsize = keepSized(plot, el);
  const table = h("details", { class: "chart-table" });
  const fill = (xs, ss) => {
    clear(table);
    table.append(
      h("summary", {}, `Table: ${title}`),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, xLabel), ...ss.map((s) => h("th", { scope: "col" }, s.label)))),
          h(
            "tbody",
            {},
            xs.map((xv, i) =>
              h(
                "tr",
                {},
                h("th", { scope: "row" }, xFormat ? xFormat(xv) : String(xv)),
                ...ss.map((s) => h("td", {}, s.values[i] === null || s.values[i] === undefined ? "–" : Number(s.values[i]).toPrecision(4))),
              ),
            ),
          ),
        ),
      ),
    );
  };
  fill(x, series);
  el.append(table);
  return {
    plot,
    update(xs, ss) {
      plot.setData([xs, ...ss.map((s) => s.values)]);
      fill(xs, ss.map((s, i) => ({ ...series[i], ...s })));
    },
    onPick(fn) {
      pickers.push(fn);
    },
    destroy: once(() => {
      unsize();
      plot.destroy();
    }),
  };
}

/** A bar chart of one value per category (layer), with the dense size as a dashed reference line. */
export function barChart(el, { title, xLabel, yLabel, labels, values, reference, color = COLORS[0] }) {
  clear(el);
  const holder = h("div", { class: "chart", role: "img", "aria-label": `${title}: bar chart (values in the table below)` });
  el.append(holder);
  const x = labels.map((_, i) => i);
  const bars = uPlot.paths.bars({ size: [0.7, 60] });
  const opts = {
    title,
    width: widthOf(el),
    height: HEIGHT,
    scales: { x: { time: false, range: [-0.6, labels.length - 0.4] }, y: { range: [0, Math.max(reference || 0, ...values) * 1.05 || 1] } },
    axes: [
      { label: xLabel, values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) && labels[t] !== undefined ? labels[t] : "")) },
      { label: yLabel, size: 60 },
    ],
    series: [
      { label: xLabel, value: (u, v) => (v === null ? "–" : labels[v]) },
      { label: yLabel, fill: `${color}cc`, stroke: color, paths: bars, points: { show: false } },
      ...(reference ? [{ label: "dense", stroke: "#555", dash: [6, 4], width: 1.5, points: { show: false } }] : []),
    ],
  };
  const data = [x, values, ...(reference ? [x.map(() => reference)] : [])];
  const plot = new uPlot(opts, data, holder);
  const unsize = keepSized(plot, el);
  el.append(
    h(
      "details",
      { class: "chart-table" },
      h("summary", {}, `Table: ${title}`),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, xLabel), h("th", { scope: "col" }, yLabel), reference ? h("th", { scope: "col" }, "dense") : null)),
          h("tbody", {}, labels.map((label, i) => h("tr", {}, h("th", { scope: "row" }, label), h("td", {}, values[i]), reference ? h("td", {}, reference) : null))),
        ),
      ),
    ),
  );
  return {
    destroy: once(() => {
      unsize();
      plot.destroy();
    }),
  };
}

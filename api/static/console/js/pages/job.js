// One job: live progress and loss-vs-sparsity from the event stream, cancel, then the report's curve,
// choosing a point (slider over the trajectory, or by constraint through /select), its per-layer sizes and
// its download.

import { ApiError, downloadCheckpoint, get, post } from "../api.js";
import { barChart, lineChart } from "../charts.js";
import { announce, clear, fmtInt, fmtNum, fmtParams, fmtTime, h } from "../dom.js";
import { clearErrors, field, showError } from "../forms.js";
import { follow } from "../sse.js";
import { percentOf, statusBadge } from "./jobs.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const METRICS = [
  { key: "perplexity", label: "Perplexity" },
  { key: "accuracy", label: "Accuracy" },
  { key: "latency_ms", label: "Latency (ms)" },
];
const BOUNDS = [
  { name: "max_perplexity", label: "Max perplexity" },
  { name: "min_accuracy_ratio", label: "Min accuracy ratio", hint: "accuracy / dense accuracy, e.g. 0.95" },
  { name: "max_params", label: "Max parameters" },
  { name: "max_latency_ms", label: "Max latency (ms)" },
];

const PHASES = {
  queued: "queued",
  loading: "loading the model and data",
  pruning: "pruning",
  building_checkpoints: "building checkpoints",
  evaluating: "evaluating",
  uploading: "uploading the report",
  done: "done",
};
const phaseName = (phase) => PHASES[phase] || phase;

export const labelOf = (sparsity) => (Math.round(sparsity * 1e4) / 1e4).toFixed(4);

export function renderJob(main, jobId) {
  const controller = new AbortController();
  const charts = [];
  const steps = new Map(); // step index -> {sparsity, loss}
  let job = null;
  let resultsLoaded = false;

  const heading = h("h1", {}, `Job ${jobId}`);
  main.append(heading);
  const body = h("div", { class: "job" });
  main.append(body);

  const summary = h("dl", { class: "summary" });
  const progress = h("progress", { id: "job-progress", max: 100, value: 0, "aria-labelledby": "job-progress-label" });
  const progressText = h("span", { id: "job-progress-label", class: "progress-text", dataset: { percent: "0" } }, "0 %");
  const connection = h("span", { class: "muted connection", role: "status" }, "");
  const cancel = h("button", { type: "button", class: "danger", hidden: true }, "Cancel job");
  const lossBox = h("div", { class: "chart-box" });
  const log = h("ol", { class: "event-log" });
  const results = h("section", { class: "results", "aria-labelledby": "results-heading", hidden: true });
  let lossChart = null;

  function renderSummary() {
    clear(summary);
    const r = job.request;
    const rows = [
      ["Status", statusBadge(job.status)],
      ["Model", r.model.id],
      ["Method", `${r.method} (${r.objective})`],
      ["Calibration", r.calibration.name || r.calibration.set_id],
      ["Target sparsities", r.sparsities.join(", ")],
      ["Created", fmtTime(job.created_at)],
      ["Finished", fmtTime(job.finished_at)],
    ];
    if (job.error) rows.push(["Error", `${job.error.code}: ${job.error.message}`]);
    rows.forEach(([term, value]) => summary.append(h("div", {}, h("dt", {}, term), h("dd", {}, value))));
    cancel.hidden = TERMINAL.has(job.status) || job.status === "cancelling";
  }

  function setProgress(percent, text) {
    progress.value = percent;
    progressText.textContent = text ? `${percent} % · ${text}` : `${percent} %`;
    progressText.dataset.percent = String(percent);
  }

  // A step event carries the sparsity after its removals and the calibration loss of the model *entering* it,
  // so each loss belongs to the previous step's sparsity (0 for the first step).
  function lossPoints() {
    const ordered = [...steps.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s);
    return ordered.map((s, i) => ({ sparsity: i ? ordered[i - 1].sparsity : 0, loss: s.loss, after: s.sparsity }));
  }

  function renderLoss() {
    const points = lossPoints();
    const x = points.map((p) => p.sparsity);
    const series = [{ label: "calibration loss", values: points.map((p) => p.loss) }];
    if (!lossChart) {
      lossChart = lineChart(lossBox, {
        title: "Calibration loss against sparsity",
        xLabel: "sparsity",
        yLabel: "loss",
        x,
        series,
        xFormat: (v) => String(Number(v.toFixed(3))),
      });
      charts.push(lossChart);
    } else {
      lossChart.update(x, series);
    }
  }

  function onEvent(event) {
    const text = event.kind === "step"
      ? `step ${event.data.step}/${event.data.total_steps}: sparsity ${fmtNum(event.data.sparsity, 4)}, loss ${fmtNum(event.data.loss, 4)}`
      : event.kind === "state"
        ? `state: ${event.data.status}${event.data.reason ? ` (${event.data.reason})` : ""}`
        : event.kind === "phase"
          ? `phase: ${phaseName(event.data.phase)}`
          : `${event.kind}: ${JSON.stringify(event.data)}`;
    log.prepend(h("li", {}, h("time", { datetime: event.created_at }, fmtTime(event.created_at)), " ", text));
    while (log.children.length > 100) log.lastChild.remove();
    if (event.kind === "step") {
      steps.set(event.data.step, { sparsity: event.data.sparsity, loss: event.data.loss });
      const total = event.data.total_steps;
      const percent = total ? Math.min(100, Math.round((100 * event.data.step) / total)) : 0;
      setProgress(percent, `step ${event.data.step} of ${total}`);
      renderLoss();
    } else if (event.kind === "phase") {
      // After the pruning steps come the checkpoints, evaluations and the report: the bar stays at the steps'
      // share and the text says what the job is doing.
      setProgress(Number(progress.value), phaseName(event.data.phase));
    } else if (event.kind === "state") {
      job = { ...job, status: event.data.status };
      renderSummary();
      if (event.data.status === "succeeded") setProgress(100, "done");
      if (TERMINAL.has(event.data.status)) {
        announce(`Job ${event.data.status}`);
        refreshJob().then(loadResults);
      }
    }
  }

  async function refreshJob() {
    try {
      job = await get(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal: controller.signal });
      renderSummary();
    } catch (error) {
      if (error.name !== "AbortError") connection.textContent = `Could not refresh: ${error.message}`;
    }
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      job = await post(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`);
      renderSummary();
      announce(`Job ${job.status}`);
    } catch (error) {
      connection.textContent = `Could not cancel: ${error.message}`;
    } finally {
      cancel.disabled = false;
    }
  });

  // --- results: curve, choice of a point, per-layer sizes, download ---

  async function loadResults() {
    if (resultsLoaded) return;
    resultsLoaded = true;
    results.hidden = false;
    clear(results);
    results.append(h("h2", { id: "results-heading" }, "Results"));
    const curveBox = h("div", { class: "curve" });
    const pickBox = h("div", { class: "pick" });
    results.append(curveBox, pickBox);
    let curve = null;
    let reached = [];
    try {
      const listing = await get(`/v1/jobs/${encodeURIComponent(jobId)}/checkpoints`, { signal: controller.signal });
      reached = listing.reached_sparsities || [];
    } catch (error) {
      if (error.name === "AbortError") return;
    }
    try {
      curve = await get(`/v1/jobs/${encodeURIComponent(jobId)}/curve`, { signal: controller.signal });
    } catch (error) {
      if (error.name === "AbortError") return;
      const again = h("button", { type: "button", class: "secondary" }, "Check again");
      again.addEventListener("click", () => {
        resultsLoaded = false;
        loadResults();
      });
      curveBox.append(h("p", { class: "muted" }, error.code === "curve_not_ready" ? `No curve yet: ${error.message}.` : error.message), again);
    }
    if (curve) renderCurve(curveBox, curve, (label) => picker.choose(label));
    const picker = renderPicker(pickBox, curve, reached);
  }

  function renderCurve(box, curve, choose) {
    const toggle = h("fieldset", { class: "toggle" }, h("legend", {}, "Horizontal axis"));
    for (const [value, text] of [["sparsity", "Sparsity"], ["parameters", "Parameters"]]) {
      const id = `axis-${value}`;
      const radio = h("input", { type: "radio", name: "axis", id, value, checked: value === "sparsity" });
      radio.addEventListener("change", () => draw(value));
      toggle.append(h("span", { class: "radio" }, radio, h("label", { for: id }, text)));
    }
    const grid = h("div", { class: "chart-grid" });
    box.append(h("h3", {}, "Quality against size"), toggle, grid);
    const all = [{ ...curve.dense, label: "dense" }, ...curve.points];
    const own = [];
    function draw(axis) {
      own.splice(0).forEach((c) => c.destroy());
      clear(grid);
      const sorted = [...all].sort((a, b) => a[axis] - b[axis]);
      const x = sorted.map((p) => p[axis]);
      for (const metric of METRICS) {
        if (!all.some((p) => p[metric.key] !== null && p[metric.key] !== undefined)) continue;
        const cell = h("div", { class: "chart-box", dataset: { metric: metric.key } });
        grid.append(cell);
        const chart = lineChart(cell, {
          title: `${metric.label} against ${axis}`,
          xLabel: axis,
          yLabel: metric.label,
          x,
          series: [{ label: metric.label, values: sorted.map((p) => p[metric.key] ?? null) }],
          xFormat: axis === "sparsity" ? (v) => String(Number(v.toFixed(3))) : (v) => fmtParams(v),
        });
        chart.onPick((index) => {
          if (sorted[index].label !== "dense") choose(labelOf(sorted[index].sparsity));
        });
        own.push(chart);
        charts.push(chart);
      }
    }
    draw("sparsity");
  }

  function renderPicker(box, curve, reached) {
    const byLabel = new Map();
    reached.forEach((s) => byLabel.set(labelOf(s), { sparsity: s }));
    (curve ? curve.points : []).forEach((p) => byLabel.set(labelOf(p.sparsity), { ...(byLabel.get(labelOf(p.sparsity)) || {}), ...p }));
    const labels = [...byLabel.keys()].sort((a, b) => Number(a) - Number(b));
    box.append(h("h3", {}, "Choose a checkpoint"));
    if (!labels.length) {
      box.append(h("p", { class: "muted" }, "This job's trajectory has no point yet."));
      return { choose() {} };
    }
    const slider = h("input", { type: "range", id: "pick-slider", min: 0, max: labels.length - 1, step: 1, value: labels.length - 1 });
    const output = h("output", { for: "pick-slider", class: "pick-value" });
    const rule = h("p", { class: "rule", role: "status" });
    const figures = h("dl", { class: "summary figures" });
    const download = h("button", { type: "button", id: "download" }, "Download checkpoint");
    const downloadStatus = h("p", { class: "muted", role: "status" });
    const layersBox = h("div", { class: "chart-grid" });
    let chosen = null;
    let layerCharts = [];

    const form = h("form", { class: "bounds", novalidate: true });
    const inputs = BOUNDS.map((b) => {
      const input = h("input", { type: "text", inputmode: "decimal", name: b.name, dataset: { field: b.name } });
      form.append(field(b.label, input, b.hint));
      return input;
    });
    form.append(h("div", { class: "actions" }, h("button", { type: "submit" }, "Select by constraint")));

    box.append(
      field("Sparsity on the trajectory", slider, "Arrow keys step through every point the run passed."),
      output,
      h("h4", {}, "…or by constraint"),
      form,
      rule,
      h("h4", {}, "Chosen checkpoint"),
      figures,
      h("div", { class: "actions" }, download),
      downloadStatus,
      h("h4", {}, "Per-layer sizes"),
      layersBox,
    );

    async function showLayers(label) {
      layerCharts.forEach((c) => c.destroy());
      layerCharts = [];
      clear(layersBox);
      try {
        const data = await get(`/v1/jobs/${encodeURIComponent(jobId)}/layers?sparsity=${label}`, { signal: controller.signal });
        if (chosen !== label) return;
        const names = data.layers.map((_, i) => String(i));
        const heads = h("div", { class: "chart-box", dataset: { chart: "heads" } });
        const channels = h("div", { class: "chart-box", dataset: { chart: "channels" } });
        layersBox.append(heads, channels, h("p", { class: "muted" }, `From the ${data.source === "manifest" ? "checkpoint's manifest" : "trajectory"} (layout ${data.layout}).`));
        layerCharts.push(
          barChart(heads, { title: "Attention heads kept per layer", xLabel: "layer", yLabel: "heads", labels: names, values: data.layers.map((l) => l.heads), reference: data.dense.heads }),
          barChart(channels, { title: "MLP channels kept per layer", xLabel: "layer", yLabel: "channels", labels: names, values: data.layers.map((l) => l.channels), reference: data.dense.channels, color: "#146c2e" }),
        );
        charts.push(...layerCharts);
      } catch (error) {
        if (error.name !== "AbortError") layersBox.append(h("p", { class: "muted" }, `Per-layer sizes unavailable: ${error.message}`));
      }
    }

    function choose(label, why = "") {
      const index = labels.indexOf(label);
      if (index < 0) return;
      chosen = label;
      slider.value = String(index);
      slider.setAttribute("aria-valuetext", `sparsity ${label}`);
      output.textContent = `sparsity ${label}`;
      rule.textContent = why;
      const point = byLabel.get(label);
      // The loss of the model at this point: measured entering the step after the one that reached it
      // (labels round to 4 decimals; a step may land just past a target).
      const points = lossPoints();
      const reaching = points.findIndex((p) => p.after >= Number(label) - 5e-5);
      const step = reaching >= 0 ? points[reaching + 1] : undefined;
      clear(figures);
      const rows = [
        ["Sparsity", label],
        ["Parameters", point.parameters !== undefined ? `${fmtInt(point.parameters)} (${fmtParams(point.parameters)})` : "–"],
        ["Perplexity", fmtNum(point.perplexity, 4)],
        ["Accuracy", fmtNum(point.accuracy, 3)],
        ["Accuracy ratio", fmtNum(point.accuracy_ratio, 3)],
        ["Latency (ms)", fmtNum(point.latency_ms, 3)],
        ["Calibration loss", step ? fmtNum(step.loss, 4) : "–"],
      ];
      rows.forEach(([term, value]) => figures.append(h("div", {}, h("dt", {}, term), h("dd", { dataset: { figure: term } }, value))));
      download.textContent = `Download checkpoint ${label}`;
      downloadStatus.textContent = "";
      showLayers(label);
    }

    slider.addEventListener("input", () => choose(labels[Number(slider.value)]));
    download.addEventListener("click", async () => {
      download.disabled = true;
      try {
        await downloadCheckpoint(jobId, chosen, { signal: controller.signal, onStatus: (text) => (downloadStatus.textContent = text) });
      } catch (error) {
        if (error.name !== "AbortError") downloadStatus.textContent = `Download failed: ${error.message}`;
      } finally {
        download.disabled = false;
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      const params = new URLSearchParams();
      BOUNDS.forEach((b, i) => {
        if (inputs[i].value.trim()) params.set(b.name, inputs[i].value.trim());
      });
      try {
        const answer = await get(`/v1/jobs/${encodeURIComponent(jobId)}/select?${params}`, { signal: controller.signal });
        if (!byLabel.has(answer.label)) {
          byLabel.set(answer.label, { sparsity: answer.sparsity, ...answer.figures });
          labels.push(answer.label);
          labels.sort((a, b) => Number(a) - Number(b));
          slider.max = String(labels.length - 1);
        }
        choose(answer.label, `Selected: ${answer.rule}.`);
        announce(`Selected sparsity ${answer.label}`);
      } catch (error) {
        if (error.name === "AbortError") return;
        showError(form, error instanceof ApiError ? error : { message: error.message });
      }
    });
    choose(labels[labels.length - 1]);
    return { choose };
  }

  // --- start ---

  (async () => {
    try {
      job = await get(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal: controller.signal });
    } catch (error) {
      if (error.name === "AbortError") return;
      clear(body);
      if (error instanceof ApiError && error.status === 404) {
        heading.textContent = "Job not found";
        document.title = "Job not found · GISP console";
        body.append(h("p", {}, `There is no job ${jobId} for this API key.`), h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
      } else {
        body.append(h("p", { role: "alert" }, `Could not load the job: ${error.message}`));
      }
      return;
    }
    renderSummary();
    const phase = job.progress.phase && job.progress.phase !== "pruning" ? phaseName(job.progress.phase) : null;
    setProgress(percentOf(job), phase || (job.progress.total_steps ? `step ${job.progress.step} of ${job.progress.total_steps}` : job.status));
    body.append(
      summary,
      h(
        "section",
        { class: "card", "aria-labelledby": "progress-heading" },
        h("h2", { id: "progress-heading" }, "Progress"),
        h("div", { class: "progress-row" }, progress, progressText),
        h("div", { class: "actions" }, cancel, connection),
        lossBox,
        h("p", { class: "hint" }, "Each point: the calibration loss of the model at that sparsity, measured as the next step starts."),
        h("details", { class: "events" }, h("summary", {}, "Events"), log),
      ),
      results,
    );
    try {
      await follow(jobId, {
        onEvent,
        signal: controller.signal,
        onState: (state) => {
          connection.textContent = { live: "Live", reconnecting: "Reconnecting…", closed: "" }[state] ?? "";
        },
      });
    } catch (error) {
      connection.textContent = `Live updates stopped: ${error.message}`;
    }
    if (TERMINAL.has(job.status) && !controller.signal.aborted) loadResults();
  })();

  return () => {
    controller.abort();
    charts.forEach((c) => c.destroy());
  };
}

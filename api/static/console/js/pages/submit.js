// Submitting a job: models from GET /v1/models, calibration sets from GET /v1/calibration-sets (or a file
// uploaded first), choices read from the API's OpenAPI schema; every 422 is shown beside its field.

import { ApiError, enumValues, get, post } from "../api.js";
import { clear, fmtBytes, fmtParams, h } from "../dom.js";
import { clearErrors, field, showError } from "../forms.js";

function select(name, dataField, options) {
  return h(
    "select",
    { name, dataset: { field: dataField } },
    options.map(([value, label]) => h("option", { value }, label)),
  );
}

function numbers(text) {
  // Numbers where the text is a number; anything else is sent as typed, so the API names the bad entry.
  return text
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((part) => (part.trim() !== "" && Number.isFinite(Number(part)) ? Number(part) : part));
}

function optionalInt(input) {
  const text = input.value.trim();
  if (!text) return undefined;
  return /^-?\d+$/.test(text) ? Number(text) : text;
}

export function renderSubmit(main) {
  const model = select("model", "model.id", []);
  const hubModel = h("input", { type: "text", name: "hub_model", placeholder: "org/name", dataset: { field: "model" } });
  const objective = select("objective", "objective", [["perplexity", "perplexity"]]);
  const method = select("method", "method", [["gisp", "gisp"]]);
  const layout = select("layout", "layout", [["nonuniform", "nonuniform"]]);
  const calibration = select("calibration", "calibration", []);
  const file = h("input", { type: "file", name: "file", accept: ".txt,.jsonl,.json,text/plain", dataset: { field: "file" } });
  const sparsities = h("input", { type: "text", name: "sparsities", value: "0.2, 0.4", inputmode: "decimal", dataset: { field: "sparsities" } });
  const steps = h("input", { type: "text", name: "steps", inputmode: "numeric", dataset: { field: "steps" } });
  const samples = h("input", { type: "text", name: "samples", inputmode: "numeric", dataset: { field: "samples" } });
  const seqLen = h("input", { type: "text", name: "seq_len", inputmode: "numeric", dataset: { field: "seq_len" } });
  const evaluations = h("input", { type: "text", name: "evaluations", placeholder: "perplexity, efficiency", dataset: { field: "evaluations" } });
  const curvePoints = h("input", { type: "text", name: "curve_points", inputmode: "numeric", value: "8", dataset: { field: "curve.points" } });
  const submit = h("button", { type: "submit" }, "Submit job");
  const status = h("p", { class: "muted", role: "status" });
  const hubField = field("Hub model (optional)", hubModel, "org/name; used instead of the local model when given.");
  hubField.hidden = true;

  const form = h(
    "form",
    { class: "card form-grid", novalidate: true },
    h(
      "fieldset",
      {},
      h("legend", {}, "Model"),
      field("Local model", model),
      hubField,
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Calibration"),
      field("Objective", objective),
      field("Calibration set", calibration, "Named sets on the server and your uploads for this objective."),
      field("…or upload a file", file, "Plain text (perplexity) or JSONL records; used instead of the set above."),
      field("Samples", samples, "Calibration sequences per step (blank: engine default)."),
      field("Sequence length", seqLen, "Tokens per sequence (blank: engine default)."),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Pruning"),
      field("Method", method),
      field("Target sparsities", sparsities, "Comma-separated fractions of decoder parameters, e.g. 0.2, 0.4."),
      field("Steps", steps, "Iterative steps up to the largest target (blank: engine default)."),
      field("Layout", layout),
      field("Evaluations", evaluations, "Comma-separated, e.g. perplexity, efficiency, boolq (blank: none)."),
      field("Curve points", curvePoints, "Checkpoints measured along the trajectory, to choose one by a bound later (blank: none)."),
    ),
    h("div", { class: "actions" }, submit),
    status,
  );

  let sets = { named: [], data: [] };
  function fillCalibration() {
    const wanted = objective.value;
    const current = calibration.value;
    clear(calibration);
    const named = sets.named.filter((s) => s.objective === wanted);
    const uploads = sets.data.filter((s) => s.objective === wanted);
    if (named.length) {
      calibration.append(h("optgroup", { label: "Named sets" }, named.map((s) => h("option", { value: `name:${s.name}` }, s.name))));
    }
    if (uploads.length) {
      calibration.append(
        h(
          "optgroup",
          { label: "Your uploads" },
          uploads.map((s) => h("option", { value: `set:${s.id}` }, `${s.name || s.id} (${s.item_count} items, ${fmtBytes(s.size_bytes)})`)),
        ),
      );
    }
    if (!named.length && !uploads.length) calibration.append(h("option", { value: "" }, "none for this objective: upload a file"));
    if ([...calibration.options].some((o) => o.value === current)) calibration.value = current;
  }
  objective.addEventListener("change", fillCalibration);

  async function loadChoices() {
    try {
      const [models, catalog, objectives, methods, layouts] = await Promise.all([
        get("/v1/models"),
        get("/v1/calibration-sets?limit=100"),
        enumValues("Objective", ["perplexity", "margin", "answer"]),
        enumValues("Method", ["gisp"]),
        enumValues("Layout", ["nonuniform", "uniform"]),
      ]);
      clear(model);
      models.data.forEach((m) =>
        model.append(
          h(
            "option",
            { value: m.id, disabled: !m.supported },
            `${m.id} (${m.family || "unknown family"}, ${fmtParams(m.parameters)} parameters, ${fmtBytes(m.size_bytes)})${m.supported ? "" : " – not a family the engine prunes"}`,
          ),
        ),
      );
      if (!models.data.length) model.append(h("option", { value: "" }, "no local models on this server"));
      hubField.hidden = !models.hub_models_allowed;
      for (const [el, values] of [[objective, objectives], [method, methods], [layout, layouts]]) {
        const current = el.value;
        clear(el);
        values.forEach((v) => el.append(h("option", { value: v }, v)));
        if (values.includes(current)) el.value = current;
      }
      sets = catalog;
      fillCalibration();
    } catch (error) {
      status.textContent = `Could not load the choices: ${error.message}`;
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    status.textContent = "";
    submit.disabled = true;
    try {
      const cal = {};
      if (file.files.length) {
        status.textContent = "Uploading the calibration file…";
        const data = new FormData();
        data.append("file", file.files[0]);
        data.append("objective", objective.value);
        const uploaded = await post("/v1/calibration-sets", { form: data });
        cal.set_id = uploaded.id;
      } else if (calibration.value.startsWith("set:")) {
        cal.set_id = calibration.value.slice(4);
      } else {
        cal.name = calibration.value.replace(/^name:/, "");
      }
      const body = {
        model: { id: hubModel.value.trim() || model.value },
        calibration: cal,
        objective: objective.value,
        method: method.value,
        layout: layout.value,
        sparsities: numbers(sparsities.value),
        evaluations: evaluations.value.split(/[\s,]+/).filter(Boolean),
      };
      // Blank numbers are left out, so the server's own defaults apply.
      for (const [name, input] of [["steps", steps], ["samples", samples], ["seq_len", seqLen]]) {
        const value = optionalInt(input);
        if (value !== undefined) body[name] = value;
      }
      const points = optionalInt(curvePoints);
      if (points !== undefined) body.curve = { points };
      status.textContent = "Submitting…";
      const job = await post("/v1/jobs", { json: body });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (error) {
      status.textContent = "";
      if (error instanceof ApiError) showError(form, error);
      else showError(form, { message: error.message });
    } finally {
      submit.disabled = false;
    }
  });

  main.append(h("h1", {}, "New pruning job"), form);
  loadChoices();
  return null;
}

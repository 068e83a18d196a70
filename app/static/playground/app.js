// The playground: a layer list (or a graph) edited through forms generated from GET /v1/layers, a
// live summary from POST /v1/models/summary, and a training panel on POST /v1/jobs + its SSE stream.
import * as api from "./api.js";
import { initUploads } from "./datasets.js";
import { setPlaceholder, specFields } from "./forms.js";
import { graphEditor } from "./graph_edit.js";
import { isGraph } from "./graph_model.js";
import { nodeTypes } from "./graph_schema.js";
import { fixed } from "./numbers.js";
import { foldRepeats, paramsText, rowName } from "./summary.js";

const $ = (sel) => document.querySelector(sel);
const state = {
  catalog: new Map(), // type -> {type, category, description, schema}
  layers: [], // the spec's top-level layers, exactly as sent to the API
  graph: null, // the graph form of the model instead, when one is loaded: {inputs, nodes, outputs}
  graphEditor: null,
  examples: {}, // name -> {summary, value}, read from the summary endpoint's OpenAPI examples
  summaryRun: 0, // drops responses that arrive after a newer request was sent
  train: {}, // the job's dataset, loss and optimizer specs, edited in the training panel
  job: null,
  follow: null, // aborts the event stream being read
  chart: null,
};
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const fmt = (n) => Number(n).toLocaleString("en-US");

// ---- the layer list -------------------------------------------------------------------------

/** The model as sent to the API: the graph when one is loaded, else the layer list. */
const currentModel = () => state.graph ?? { layers: state.layers };

function renderLayers() {
  $("#sequence-editor").hidden = state.graph !== null;
  $("#graph-editor").hidden = state.graph === null;
  if (state.graph) state.graphEditor.load(state.graph);
  else $("#layers").replaceChildren(...state.layers.map(layerCard));
  syncJson();
}

function layerCard(layer, i) {
  const item = document.createElement("li");
  item.className = "layer";
  item.dataset.index = i;
  const entry = state.catalog.get(layer.type);

  const head = document.createElement("div");
  head.className = "layer-head";
  const title = document.createElement("strong");
  title.textContent = layer.type ?? "(no type)";
  const desc = document.createElement("span");
  desc.className = "desc";
  desc.textContent = entry ? entry.description : "unknown layer type";
  head.append(title, desc, button("↑", "move up", () => move(i, -1)),
    button("↓", "move down", () => move(i, +1)), button("✕", "remove", () => remove(i)));

  const fields = document.createElement("div");
  fields.className = "fields";
  if (entry) {
    fields.append(...specFields(entry.schema, layer, (name, value) => setField(i, name, value)));
  }
  const errors = document.createElement("p");
  errors.className = "layer-error";
  item.append(head, fields, errors);
  return item;
}

function button(text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.title = label;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

function setField(i, name, value) {
  setOrDelete(state.layers[i], name, value);
  changed(false);
}

function setOrDelete(spec, name, value) {
  if (value === undefined) delete spec[name]; // left out: the API's default, or inferred
  else spec[name] = value;
}

function move(i, step) {
  const j = i + step;
  if (j < 0 || j >= state.layers.length) return;
  [state.layers[i], state.layers[j]] = [state.layers[j], state.layers[i]];
  changed(true);
}

function remove(i) {
  state.layers.splice(i, 1);
  changed(true);
}

function addLayer() {
  state.layers.push({ type: $("#catalog").value });
  changed(true);
}

/** Something in the spec changed: redraw the cards if the list itself changed, then re-summarize. */
function changed(structure) {
  if (structure) renderLayers();
  else syncJson();
  scheduleSummary();
}

// ---- the JSON view --------------------------------------------------------------------------

function syncJson() {
  const box = $("#spec-json");
  if (document.activeElement !== box) box.value = JSON.stringify(currentModel(), null, 2);
  $("#json-error").hidden = true;
}

function onJsonEdited() {
  let spec;
  try {
    spec = JSON.parse($("#spec-json").value);
    if (!Array.isArray(spec?.layers) && !isGraph(spec)) {
      throw new Error('expected {"layers": [...]} or a graph {"inputs": {...}, "nodes": [...], "outputs": {...}}');
    }
  } catch (err) {
    $("#json-error").textContent = `Not applied: ${err.message}`;
    $("#json-error").hidden = false;
    return;
  }
  state.graph = isGraph(spec) ? spec : null;
  if (!state.graph) state.layers = spec.layers;
  renderLayers();
  scheduleSummary();
}

// ---- the summary ----------------------------------------------------------------------------

let summaryTimer;
function scheduleSummary() {
  clearTimeout(summaryTimer);
  summaryTimer = setTimeout(runSummary, 250);
}

function inputShape() {
  return $("#input-shape").value.split(/[\s,[\]]+/).filter(Boolean).map(Number);
}

function modelRequest() {
  if (state.graph) return { model: state.graph }; // a graph's input shapes live in the graph
  return { model: { layers: state.layers }, input_shape: inputShape(), input_dtype: $("#input-dtype").value };
}

async function runSummary() {
  const run = ++state.summaryRun;
  const request = modelRequest();
  $("#summary-status").textContent = "Tracing on the meta device…";
  const { ok, status, body } = await api.summarize(request);
  if (run !== state.summaryRun) return;
  const other = showErrors(ok ? [] : body?.detail ?? `HTTP ${status}`);
  $("#summary").classList.toggle("stale", !ok);
  if (ok) renderSummary(body);
  else {
    const where = other.join("; ") || `see the highlighted ${state.graph ? "node" : "layer"}.`;
    $("#summary-status").textContent = `${status === 422 ? "Invalid model" : `HTTP ${status}`}: ${where}`;
  }
}

function renderSummary(s) {
  const rows = foldRepeats(s.layers).map((layer) => {
    const tr = document.createElement("tr");
    tr.dataset.path = layer.path;
    const shape = `[${layer.output_shape.join(", ")}]`;
    for (const text of [rowName(layer), shape, paramsText(layer, fmt), fmt(layer.flops)]) {
      tr.insertCell().textContent = text;
    }
    return tr;
  });
  $("#summary tbody").replaceChildren(...rows);
  const outputs = s.graph
    ? Object.entries(s.graph.outputs).map(([name, out]) => `${name} [${out.shape.join(", ")}]`).join(", ")
    : `[${s.output_shape.join(", ")}]`;
  const frozen = s.trainable_params < s.total_params ? `, ${fmt(s.trainable_params)} trainable` : "";
  $("#summary-status").textContent = `Output ${outputs} · ${fmt(s.total_params)} parameters`
    + `${frozen} (${fmt(s.param_bytes)} bytes) · ${fmt(s.flops)} FLOPs`;
  if (state.graph) state.graphEditor.showSummary(s);
  else showInferred(s.model.layers);
}

/** Puts each inferred size (e.g. in_features) into the placeholder of the field left empty. */
function showInferred(inferred) {
  inferred.forEach((spec, i) => {
    for (const input of document.querySelectorAll(`#layers > li[data-index="${i}"] [data-inferred]`)) {
      const value = spec[input.name];
      if (input.value === "" && value !== null && value !== undefined) setPlaceholder(input, `${value} (inferred)`);
    }
  });
}

/** Marks the layers (or graph boxes) a 422 points at; returns the errors that point at none. */
function showErrors(detail) {
  if (state.graph) return state.graphEditor.showErrors(detail);
  for (const card of document.querySelectorAll("#layers > li")) {
    card.classList.remove("has-error");
    card.querySelector(".layer-error").textContent = "";
    for (const f of card.querySelectorAll(".field.error")) f.classList.remove("error");
  }
  const { byLayer, other } = api.errorsByLayer(detail);
  for (const [i, errors] of byLayer) {
    const card = $(`#layers > li[data-index="${i}"]`);
    if (!card) continue;
    card.classList.add("has-error");
    card.querySelector(".layer-error").textContent = errors.map((e) => e.msg).join("\n");
    for (const { field } of errors) {
      for (const part of field) card.querySelector(`.field[data-field="${part}"]`)?.classList.add("error");
    }
  }
  return other;
}

// ---- training -------------------------------------------------------------------------------

const TRAIN_DEFAULTS = { dataset: "digits", loss: "CrossEntropyLoss", optimizer: "Adam" };

/**
 * The dataset, loss and optimizer pickers, read from the OpenAPI schema of POST /v1/jobs: each a
 * select over the union's variants and a form for the chosen one, like a layer's.
 */
function fillTrainChoices(openapi) {
  const schemas = openapi?.components?.schemas ?? {};
  const job = schemas.JobCreate;
  if (!job) {
    $("#train-form").hidden = true;
    trainStatus("This server has no training API.");
    return;
  }
  for (const block of document.querySelectorAll("#train-form .choice")) {
    const field = block.dataset.field;
    const property = job.properties[field]; // a union, or an optional one (anyOf [union, null])
    const union = property.discriminator ? property : property.anyOf.find((schema) => schema.discriminator);
    const { propertyName: tag, mapping } = union.discriminator;
    const select = block.querySelector("select");
    for (const name of Object.keys(mapping)) select.add(new Option(name, name));
    select.value = TRAIN_DEFAULTS[field] in mapping ? TRAIN_DEFAULTS[field] : select.options[0].value;
    const pick = () => {
      const schema = schemas[mapping[select.value].split("/").pop()];
      const spec = { [tag]: select.value };
      state.train[field] = spec;
      const inputs = specFields(schema, spec, (name, value) => setOrDelete(spec, name, value), tag);
      block.querySelector(".fields").replaceChildren(...inputs);
      const help = block.querySelector(".help");
      if (help) help.textContent = schema.description ?? "";
    };
    select.addEventListener("change", pick);
    pick();
  }
}

function trainRequest() {
  const value = (name) => $(`#train-form .grid [name="${name}"]`).value;
  return {
    model: currentModel(),
    ...state.train, // dataset, loss, optimizer
    epochs: Number(value("epochs")),
    batch_size: Number(value("batch_size")),
    seed: Number(value("seed")),
    device: value("device"),
  };
}

async function startTraining(event) {
  event.preventDefault();
  stopFollowing();
  setTraining(true);
  trainStatus("Submitting…");
  const { ok, status, body } = await api.startJob(trainRequest());
  if (!ok) {
    setTraining(false);
    const other = showErrors(body?.detail ?? `HTTP ${status}`);
    const retry = status === 429 ? " (too many queued jobs; try again shortly)" : "";
    trainStatus(`Not started, HTTP ${status}${retry}: ${other.join("; ") || "see the highlighted layer."}`);
    return;
  }
  state.job = body;
  $("#job-downloads").hidden = true;
  newChart();
  showJobMemory(null);
  trainStatus(`Job ${body.id}: ${body.status}`);
  // Events: `progress` (epoch, step, steps_total, loss), `epoch` (one history entry), `done` (the job).
  const follow = new AbortController();
  state.follow = follow;
  api.followJob(body.id, onJobEvent, follow.signal).then((finished) => {
    // If the stream could not be followed to the end, show the job as it is now.
    if (!finished && !follow.signal.aborted) api.getJob(body.id).then((r) => r.ok && onJobEvent("done", r.body));
  });
}

function onJobEvent(name, data) {
  if (name === "progress") {
    trainStatus(`Job ${state.job.id}: running, epoch ${data.epoch}, step ${data.step} of ${data.steps_total}, `
      + `loss ${fixed(data.loss, 4)}`);
  } else if (name === "epoch") {
    upsertEpoch(data);
    trainStatus(`Job ${state.job.id}: running, epoch ${data.epoch} done, val loss ${fixed(data.val_loss, 4)}`);
  } else {
    state.job = data;
    drawHistory(data.history);
    const acc = data.metrics?.val_accuracy;
    const result = acc != null ? `, validation accuracy ${(acc * 100).toFixed(1)}%` : "";
    const time = data.duration_s != null ? ` in ${data.duration_s.toFixed(1)} s` : "";
    trainStatus(`Job ${data.id}: ${data.status}${data.device ? ` on ${data.device}` : ""}${time}${result}`
      + `${data.error ? `: ${data.error}` : ""}`);
    showJobMemory(data.memory);
    if (TERMINAL.has(data.status)) {
      stopFollowing();
      setTraining(false);
      $("#job-downloads").hidden = !data.weights;
      $("#job-download-status").textContent = "";
    }
  }
}

/** The job's memory: the plan's estimate beside what the run measured (and how). */
function showJobMemory(memory) {
  const line = $("#train-memory");
  line.hidden = !memory;
  if (!memory) return;
  const mib = (n) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  const estimate = memory.estimated_bytes != null ? mib(memory.estimated_bytes) : "none";
  line.textContent = `Memory: estimated ${estimate}, measured ${mib(memory.measured_peak_bytes)} (${memory.how})`;
}

async function cancelTraining() {
  if (!state.job) return;
  trainStatus(`Cancelling job ${state.job.id}…`);
  const { ok, status, body } = await api.cancelJob(state.job.id);
  if (ok) onJobEvent("done", body);
  else trainStatus(`Cancel failed, HTTP ${status}: ${body?.detail}`);
}

function stopFollowing() {
  state.follow?.abort();
  state.follow = null;
}

function setTraining(running) {
  $("#train").disabled = running;
  $("#cancel").disabled = !running;
}

/** Runs one download, reporting it in `status` (an ONNX export takes a few seconds). */
async function saveFile(status, what, fetchIt) {
  status.textContent = `Preparing ${what}…`;
  const { ok, status: code, body } = await fetchIt();
  if (ok) status.textContent = `Saved ${body}`;
  else {
    const other = showErrors(body?.detail ?? `HTTP ${code}`);
    status.textContent = `${what} failed, HTTP ${code}: ${other.join("; ") || "see the highlighted layer."}`;
  }
}

function trainStatus(text) {
  $("#train-status").textContent = text;
}

// ---- the chart (uPlot, vendored) ------------------------------------------------------------

let points = []; // one {epoch, train_loss, val_loss, val_accuracy} per finished epoch

function newChart() {
  points = [];
  $("#chart").dataset.livePoints = 0;
  state.chart?.destroy();
  const el = $("#chart");
  el.hidden = $("#history").hidden = false;
  state.chart = new uPlot({
    width: Math.max(el.clientWidth, 300),
    height: 240,
    scales: { x: { time: false }, acc: { range: [0, 1] } },
    series: [
      { label: "epoch" },
      { label: "train loss", stroke: "#2563eb", width: 2, points: { show: true } },
      { label: "val loss", stroke: "#ea580c", width: 2, points: { show: true } },
      { label: "val accuracy", stroke: "#16a34a", width: 2, scale: "acc", points: { show: true } },
    ],
    axes: [
      { label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100] },
      { label: "loss" },
      { label: "accuracy", scale: "acc", side: 1, grid: { show: false } },
    ],
  }, [[], [], [], []], el);
  drawHistory([]);
}

function upsertEpoch(point) {
  $("#chart").dataset.livePoints = Number($("#chart").dataset.livePoints ?? 0) + 1; // drawn from SSE
  points = points.filter((p) => p.epoch !== point.epoch).concat([point]).sort((a, b) => a.epoch - b.epoch);
  draw();
}

function drawHistory(history) {
  points = [...history];
  draw();
}

function draw() {
  const col = (key) => points.map((p) => p[key] ?? null);
  state.chart?.setData([col("epoch"), col("train_loss"), col("val_loss"), col("val_accuracy")]);
  $("#chart").dataset.points = points.length;
  const num = (v, digits) => (v == null ? "–" : fixed(Number(v), digits));
  $("#history tbody").replaceChildren(...points.map((p) => {
    const tr = document.createElement("tr");
    for (const text of [p.epoch, num(p.train_loss, 4), num(p.val_loss, 4), num(p.val_accuracy, 3)]) {
      tr.insertCell().textContent = text;
    }
    return tr;
  }));
}

// ---- start-up -------------------------------------------------------------------------------

function loadExample(name) {
  const example = state.examples[name]?.value;
  if (!example) return;
  state.graph = isGraph(example.model) ? structuredClone(example.model) : null;
  if (!state.graph) {
    state.layers = structuredClone(example.model.layers);
    $("#input-shape").value = example.input_shape.join(", ");
    $("#input-dtype").value = example.input_dtype ?? "float32";
  }
  changed(true);
}

function fillCatalog(entries) {
  const groups = new Map();
  for (const entry of entries) {
    if (entry.graph_only) continue; // merges and splits belong to the graph form, not the layer list
    // A type listed twice (Concat: a container, and a merge of the graph form) keeps its first,
    // the layer of the sequence form; graph nodes take their forms from the graph's own schema.
    if (!state.catalog.has(entry.type)) state.catalog.set(entry.type, entry);
    if (!groups.has(entry.category)) groups.set(entry.category, document.createElement("optgroup"));
    groups.get(entry.category).label = entry.category;
    groups.get(entry.category).append(new Option(entry.type, entry.type));
  }
  $("#catalog").replaceChildren(...groups.values());
  const help = () => { $("#catalog-help").textContent = state.catalog.get($("#catalog").value)?.description ?? ""; };
  $("#catalog").addEventListener("change", help);
  help();
}

async function main() {
  $("#api-key").value = api.getApiKey();
  $("#api-key").addEventListener("change", (e) => {
    api.setApiKey(e.target.value);
    location.reload(); // start over with the key
  });
  const [catalog, spec] = await Promise.all([api.layerCatalog(), api.openapi()]);
  if (!catalog.ok) {
    const locked = catalog.status === 401;
    const why = locked ? "this server needs an API key (enter it at the top right)" : `HTTP ${catalog.status}`;
    $("#summary-status").textContent = `Could not load the layer catalog: ${why}`;
    if (locked) $("#api-key").focus();
    return;
  }
  fillCatalog(catalog.body.data);
  state.graphEditor = graphEditor(nodeTypes(spec.body, state.catalog), () => changed(false));
  // The presets are the "Try it out" examples of POST /v1/models/summary: one source for both,
  // graphs (BERT-style, encoder-decoder) included.
  const body = spec.body?.paths?.["/v1/models/summary"]?.post?.requestBody?.content?.["application/json"];
  state.examples = body?.examples ?? {};
  for (const [name, ex] of Object.entries(state.examples)) $("#example").add(new Option(ex.summary ?? name, name));
  fillTrainChoices(spec.body);
  initUploads();

  $("#example").addEventListener("change", (e) => loadExample(e.target.value));
  $("#clear").addEventListener("click", () => {
    state.layers = [];
    state.graph = null;
    $("#example").value = "";
    changed(true);
  });
  $("#add-layer").addEventListener("click", addLayer);
  $("#spec-json").addEventListener("input", onJsonEdited);
  $("#spec-json").addEventListener("blur", syncJson);
  $("#input-shape").addEventListener("input", scheduleSummary);
  $("#input-dtype").addEventListener("change", scheduleSummary);
  $("#train-form").addEventListener("submit", startTraining);
  $("#cancel").addEventListener("click", cancelTraining);
  for (const button of document.querySelectorAll("#model-downloads button")) {
    button.addEventListener("click", () => saveFile($("#model-download-status"), button.textContent,
      () => api.exportModel(modelRequest(), button.dataset.format)));
  }
  for (const button of document.querySelectorAll("#job-downloads button")) {
    button.addEventListener("click", () => saveFile($("#job-download-status"), button.textContent,
      () => api.downloadJobFile(state.job.id, button.dataset.what)));
  }

  $("#example").value = "seed" in state.examples ? "seed" : "";
  if ($("#example").value) loadExample("seed");
  else changed(true);
  document.body.dataset.ready = "true";
}

main();

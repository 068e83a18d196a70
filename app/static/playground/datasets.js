// The "Upload data" panel: drop a file (or pick one), send it to POST /v1/datasets, and show what
// the server found in it; the key's stored datasets can be shown again from the list. Its inputs
// and targets picked, "Train on this dataset" fills the Train form's "uploaded" dataset and submits.
import * as api from "./api.js";

const $ = (sel) => document.querySelector(sel);
const number = (x) => (Number.isInteger(x) ? String(x) : Number(x).toPrecision(4));
const bytes = (n) => (n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);
const MAX_CLASSES_SHOWN = 12;
const TABLES = new Set(["csv", "parquet"]); // one array per column: the inputs are a list of columns
let shown = null; // the dataset on display

export function initUploads() {
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
  $("#data-file").addEventListener("change", (e) => e.target.files.length && upload(e.target.files[0]));
  $("#stored-datasets").addEventListener("change", (e) => e.target.value && show(e.target.value));
  $("#train-on-dataset").addEventListener("click", trainOnShown);
  listStored();
}

async function upload(file) {
  const status = $("#upload-status");
  status.classList.remove("error-text");
  status.textContent = `Uploading ${file.name} (${bytes(file.size)})…`;
  const res = await api.uploadDataset(file, $("#data-resize").value.trim());
  if (!res.ok) {
    status.classList.add("error-text");
    status.textContent = `Refused (HTTP ${res.status}): ${api.errorsByLayer(res.body?.detail).other.join("; ")}`;
    return;
  }
  status.textContent = `${res.status === 201 ? "Stored" : "Already stored"}: ${res.body.name}`;
  render(res.body);
  await listStored(res.body.id);
}

async function show(id) {
  const res = await api.getDataset(id);
  if (res.ok) render(res.body);
}

async function listStored(selected = "") {
  const res = await api.listDatasets();
  if (!res.ok) return;
  const options = res.body.data.map((d) => new Option(`${d.name} (${d.format}, ${d.samples} samples)`, d.id));
  $("#stored-datasets").replaceChildren(new Option(`stored: ${res.body.count}`, ""), ...options);
  $("#stored-datasets").value = selected;
}

/** The description: a line about the whole file, then one row per array. */
function render(dataset) {
  const images = dataset.images;
  const shape = images ? `, images ${images.width}x${images.height}, ${images.channels} channel(s)` : "";
  $("#dataset-summary").textContent =
    `${dataset.format}: ${dataset.samples} samples, ${bytes(dataset.size_bytes)}${shape}; id ${dataset.id.slice(0, 12)}…`;
  const rows = dataset.arrays.map((a) => {
    const row = document.createElement("tr");
    const cells = [a.name, `[${a.shape.join(", ")}]`, a.dtype, number(a.min), number(a.max), number(a.mean), classes(a)];
    for (const text of cells) row.insertCell().textContent = text;
    return row;
  });
  $("#dataset-arrays tbody").replaceChildren(...rows);
  $("#dataset-arrays").hidden = false;
  offerTraining(dataset);
}

/** Inputs and targets to pick: the last array of class labels as the targets, the rest as inputs
 * (a table's columns together; else the first other array). */
function offerTraining(dataset) {
  shown = dataset;
  const target = [...dataset.arrays].reverse().find((a) => a.classes) ?? dataset.arrays.at(-1);
  const others = dataset.arrays.filter((a) => a !== target).map((a) => a.name);
  const picked = new Set(TABLES.has(dataset.format) ? others : others.slice(0, 1));
  const names = dataset.arrays.map((a) => a.name);
  $("#dataset-inputs").replaceChildren(...names.map((n) => new Option(n, n, false, picked.has(n))));
  $("#dataset-targets").replaceChildren(...names.map((n) => new Option(n, n, false, n === target.name)));
  $("#dataset-train").hidden = false;
}

/** The Train form's dataset set to the shown one, as picked, and the form submitted. */
function trainOnShown() {
  const inputs = [...$("#dataset-inputs").selectedOptions].map((o) => o.value);
  const list = TABLES.has(shown.format) || inputs.length > 1;
  const values = { id: shown.id, inputs: list ? inputs : inputs[0], targets: $("#dataset-targets").value };
  const choice = $('[name="dataset-choice"]');
  choice.value = "uploaded";
  choice.dispatchEvent(new Event("change"));
  const fields = $('.choice[data-field="dataset"] .fields');
  for (const [name, value] of Object.entries(values)) {
    const input = fields.querySelector(`[data-field="${name}"] input, [data-field="${name}"] textarea`);
    input.value = input.tagName === "TEXTAREA" ? JSON.stringify(value) : value;
    input.dispatchEvent(new Event("input"));
  }
  $("#train-form").requestSubmit();
}

function classes(array) {
  if (!array.classes) return "";
  const shown = array.classes.slice(0, MAX_CLASSES_SHOWN).map((c) => `${c.name ?? c.value}: ${c.count}`);
  const more = array.classes.length > MAX_CLASSES_SHOWN ? ` … (${array.classes.length})` : "";
  return shown.join(", ") + more;
}

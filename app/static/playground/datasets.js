// The "Upload data" panel: drop a file (or pick one), send it to POST /v1/datasets, and show what
// the server found in it; the key's stored datasets can be shown again from the list.
import * as api from "./api.js";

const $ = (sel) => document.querySelector(sel);
const number = (x) => (Number.isInteger(x) ? String(x) : Number(x).toPrecision(4));
const bytes = (n) => (n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);
const MAX_CLASSES_SHOWN = 12;

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
}

function classes(array) {
  if (!array.classes) return "";
  const shown = array.classes.slice(0, MAX_CLASSES_SHOWN).map((c) => `${c.name ?? c.value}: ${c.count}`);
  const more = array.classes.length > MAX_CLASSES_SHOWN ? ` … (${array.classes.length})` : "";
  return shown.join(", ") + more;
}

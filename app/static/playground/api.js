// The whole API surface the playground uses: plain fetch, relative URLs so the page also works
// behind a path prefix. A frontend of your own needs nothing more than this.

// Sent as X-API-Key when the server requires one (MB_API_KEYS); kept for this browser tab only.
let apiKey = sessionStorage.getItem("mb-api-key") ?? "";
export function setApiKey(key) {
  apiKey = key.trim();
  sessionStorage.setItem("mb-api-key", apiKey);
}
export const getApiKey = () => apiKey;
const headers = (extra) => (apiKey ? { ...extra, "x-api-key": apiKey } : extra);

/** JSON request; resolves to {ok, status, body} and never throws on an HTTP error status. */
export async function call(method, url, body) {
  const init = { method, headers: headers({ accept: "application/json" }) };
  if (body instanceof FormData) {
    init.body = body; // the browser writes the multipart/form-data header with its boundary
  } else if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { detail: text };
  }
  return { ok: res.ok, status: res.status, body: parsed };
}

export const layerCatalog = () => call("GET", "v1/layers");
export const openapi = () => call("GET", "openapi.json");
export const summarize = (request) => call("POST", "v1/models/summary", request);
export const startJob = (request) => call("POST", "v1/jobs", request);
export const getJob = (id) => call("GET", `v1/jobs/${encodeURIComponent(id)}`);
export const cancelJob = (id) => call("POST", `v1/jobs/${encodeURIComponent(id)}/cancel`);
export const listDatasets = () => call("GET", "v1/datasets?limit=100");
export const getDataset = (id) => call("GET", `v1/datasets/${encodeURIComponent(id)}`);
/** Uploads a dataset file in the form field `file`, its images resized to `resize` ("32x32") if given. */
export function uploadDataset(file, resize) {
  const form = new FormData();
  form.append("file", file);
  return call("POST", `v1/datasets${resize ? `?resize=${encodeURIComponent(resize)}` : ""}`, form);
}

/**
 * Fetches a file (with the key) and saves it under the name the server gives in
 * Content-Disposition, else `fallback`. Resolves to {ok, status, body}: body is the error on failure.
 */
export async function download(method, url, request, fallback) {
  const init = { method, headers: headers({}) };
  if (request !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(request);
  }
  const res = await fetch(url, init);
  if (!res.ok) {
    const text = await res.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = { detail: text };
    }
    return { ok: false, status: res.status, body };
  }
  const name = /filename="([^"]+)"/.exec(res.headers.get("content-disposition") ?? "")?.[1] ?? fallback;
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await res.blob());
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  return { ok: true, status: res.status, body: name };
}
export const exportModel = (request, format) =>
  download("POST", "v1/models/export", { ...request, format }, format === "onnx" ? "model.onnx" : "model.py");
export const downloadJobFile = (id, what) => {
  const job = `v1/jobs/${encodeURIComponent(id)}`;
  const url = what === "weights" ? `${job}/weights` : `${job}/export?format=${what}`;
  return download("GET", url, undefined, `${id}.${{ weights: "safetensors", pytorch: "py", onnx: "onnx" }[what]}`);
};

/**
 * Follows a job's Server-Sent Events until its `done` event: `onEvent(name, data)` for each one,
 * data parsed. Read with fetch rather than EventSource, which cannot send the X-API-Key header;
 * a dropped stream is resumed where it stopped (Last-Event-ID). Resolves to false if the stream
 * could not be followed to the end; abort `signal` to stop.
 */
export async function followJob(id, onEvent, signal) {
  let lastId = null;
  for (let attempt = 0; attempt < 5 && !signal.aborted; attempt++) {
    try {
      const extra = { accept: "text/event-stream" };
      if (lastId) extra["last-event-id"] = lastId;
      const res = await fetch(`v1/jobs/${encodeURIComponent(id)}/events`, { headers: headers(extra), signal });
      if (!res.ok) return false;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
        buffer += chunk.value.replaceAll("\r\n", "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event.id) lastId = event.id;
          if (event.data) onEvent(event.name, JSON.parse(event.data));
          if (event.name === "done") return true;
        }
      }
    } catch {
      if (signal.aborted) return false;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000)); // then resume after the last event
  }
  return false;
}

/** One SSE block ("event: epoch\ndata: {...}\nid: 3") -> {name, data, id}. */
function parseEvent(block) {
  const event = { name: "message", data: "", id: null };
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue; // a comment, or a field without a value
    const [field, value] = [line.slice(0, colon), line.slice(colon + 1).replace(/^ /, "")];
    if (field === "event") event.name = value;
    else if (field === "data") event.data += (event.data ? "\n" : "") + value;
    else if (field === "id") event.id = value;
  }
  return event;
}

/**
 * Splits a 422's FastAPI-style `detail` into errors per top-level layer index
 * (loc = ["body", "model", "layers", i, ...]) and the rest.
 */
export function errorsByLayer(detail) {
  const byLayer = new Map();
  const other = [];
  const items = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }];
  for (const item of items) {
    const loc = item.loc ?? [];
    const i = loc[0] === "body" && loc[1] === "model" && loc[2] === "layers" ? loc[3] : undefined;
    if (Number.isInteger(i)) {
      if (!byLayer.has(i)) byLayer.set(i, []);
      byLayer.get(i).push({ field: loc.slice(4), msg: item.msg });
    } else {
      other.push(`${loc.filter((p) => p !== "body").join(".") || "request"}: ${item.msg}`);
    }
  }
  return { byLayer, other };
}

// The whole API surface the playground uses: plain fetch and EventSource, relative URLs so the
// page also works behind a path prefix. A frontend of your own needs nothing more than this.

/** JSON request; resolves to {ok, status, body} and never throws on an HTTP error status. */
export async function call(method, url, body) {
  const init = { method, headers: { accept: "application/json" } };
  if (body !== undefined) {
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
export const cancelJob = (id) => call("DELETE", `v1/jobs/${encodeURIComponent(id)}`);

/**
 * Follows a job's Server-Sent Events: `onEvent(name, data)` for each named event, data parsed.
 * Returns the EventSource; close it to stop.
 */
export function followJob(id, names, onEvent) {
  const source = new EventSource(`v1/jobs/${encodeURIComponent(id)}/events`);
  const handler = (name) => (e) => onEvent(name, JSON.parse(e.data));
  for (const name of names) source.addEventListener(name, handler(name));
  return source;
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

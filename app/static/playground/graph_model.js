// The graph form of a model, read from the spec itself: its refs, its edges, a left-to-right
// layout by topological depth, and the 422 errors per node. Pure functions, no DOM.
//
// A graph is {"inputs": {name: {shape, dtype}}, "nodes": [{name, type, input | inputs, <tensor
// arg>: ref, ...}], "outputs": {name: ref}}; a ref is an input name, a node name or "node.K".

/** The torch names of the tensor arguments a node may take besides `input`/`inputs`; the server's
 * graph schema may name more (`knowTensorArgs`). */
export const TENSOR_ARGS = [
  "memory", "query", "key", "value", "attn_mask", "key_padding_mask", "src_mask", "src_key_padding_mask",
  "tgt_mask", "tgt_key_padding_mask", "memory_mask", "memory_key_padding_mask",
];
const tensorArgs = new Set(TENSOR_ARGS);

/** Adds the tensor arguments the server's node schemas name, so their edges are drawn too. */
export function knowTensorArgs(names) {
  for (const name of names) if (name !== "input" && name !== "inputs") tensorArgs.add(name);
}

export const isGraph = (model) => Array.isArray(model?.nodes);

/** "enc.1" -> "enc": the input or node a ref points at. */
export const refBase = (ref) => String(ref).replace(/\.\d+$/, "");

/** The refs a node may read: the graph's inputs and every node other than `except`. */
export function refs(graph, except) {
  const nodes = graph.nodes.map((n) => n.name).filter((name) => name && name !== except);
  return [...Object.keys(graph.inputs ?? {}), ...nodes];
}

/** A node's incoming refs as [{from, arg}]: arg "input", "inputs.K" or a tensor argument's name. */
export function wires(node) {
  const found = [];
  if (typeof node.input === "string") found.push({ from: node.input, arg: "input" });
  if (Array.isArray(node.inputs)) node.inputs.forEach((from, k) => found.push({ from, arg: `inputs.${k}` }));
  for (const arg of tensorArgs) if (typeof node[arg] === "string") found.push({ from: node[arg], arg });
  return found;
}

/** Every edge {from, to, arg} of the graph, in node order. */
export function edges(graph) {
  return graph.nodes.flatMap((node) => wires(node).map((w) => ({ ...w, to: node.name })));
}

/**
 * Columns by topological depth: the inputs are column 0, a node sits one column right of its
 * deepest source. Refs to nothing are ignored and a cycle is cut where it closes, so a broken
 * graph still draws (the server names what is wrong). Returns Map(name -> {column, row, kind}).
 */
export function layout(graph) {
  const byName = new Map(graph.nodes.map((n) => [n.name, n]));
  const depth = new Map(Object.keys(graph.inputs ?? {}).map((name) => [name, 0]));
  const visiting = new Set();
  const depthOf = (name) => {
    if (depth.has(name)) return depth.get(name);
    const node = byName.get(name);
    if (!node || visiting.has(name)) return 0;
    visiting.add(name);
    const d = 1 + Math.max(0, ...wires(node).map((w) => depthOf(refBase(w.from))));
    visiting.delete(name);
    depth.set(name, d);
    return d;
  };
  const placed = new Map();
  const rows = [];
  const place = (name, kind, column) => {
    rows[column] = (rows[column] ?? 0) + 1;
    placed.set(name, { column, row: rows[column] - 1, kind });
  };
  for (const name of Object.keys(graph.inputs ?? {})) place(name, "input", 0);
  for (const node of graph.nodes) if (!placed.has(node.name)) place(node.name, "node", Math.max(1, depthOf(node.name)));
  return placed;
}

/** The graph's outputs per node name: Map(node -> [output names]). */
export function outputsByNode(graph) {
  const found = new Map();
  for (const [name, ref] of Object.entries(graph.outputs ?? {})) {
    const base = refBase(ref);
    if (!found.has(base)) found.set(base, []);
    found.get(base).push(name);
  }
  return found;
}

/** Removes input or node `name` and every ref to it (wires and outputs), so the rest can be re-wired. */
export function deleteBox(graph, name) {
  delete graph.inputs?.[name];
  graph.nodes = graph.nodes.filter((n) => n.name !== name);
  const gone = (ref) => refBase(ref) === name;
  for (const node of graph.nodes) {
    if (typeof node.input === "string" && gone(node.input)) delete node.input;
    if (Array.isArray(node.inputs)) node.inputs = node.inputs.filter((ref) => !gone(ref));
    for (const arg of tensorArgs) if (typeof node[arg] === "string" && gone(node[arg])) delete node[arg];
  }
  for (const [out, ref] of Object.entries(graph.outputs ?? {})) if (gone(ref)) delete graph.outputs[out];
}

/** Whether `name` is free for a new input or node. */
export const isFree = (graph, name) => !(name in (graph.inputs ?? {})) && !graph.nodes.some((n) => n.name === name);

/**
 * Splits a 422's `detail` into errors per box (a node by index or name, a graph input, or the
 * node an output names: loc = ["body", "model", ("graph",) "nodes" | "inputs" | "outputs", key,
 * ...]) and the rest, as "where: msg" lines.
 */
export function errorsByBox(detail, graph) {
  const byBox = new Map();
  const other = [];
  const items = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }];
  for (const item of items) {
    // ["body", "model", "graph", "nodes", 5, "Repeat", "times"]: "graph" is the form's tag, if any
    const loc = (item.loc ?? []).filter((p, i) => p !== "body" && !(i === 2 && p === "graph"));
    const box = loc[0] === "model" ? boxAt(graph, loc[1], loc[2]) : undefined;
    if (box !== undefined) {
      if (!byBox.has(box)) byBox.set(box, []);
      byBox.get(box).push({ field: loc.slice(3), msg: item.msg });
    } else {
      other.push(`${loc.join(".") || "request"}: ${item.msg}`);
    }
  }
  return { byBox, other };
}

function boxAt(graph, part, key) {
  if (part === "nodes" && Number.isInteger(key)) return graph.nodes[key]?.name;
  if (part === "nodes" && graph.nodes.some((n) => n.name === key)) return key;
  if (part === "inputs" && key in (graph.inputs ?? {})) return key;
  const known = (name) => name in (graph.inputs ?? {}) || graph.nodes.some((n) => n.name === name);
  if (part === "outputs" && key in (graph.outputs ?? {}) && known(refBase(graph.outputs[key]))) {
    return refBase(graph.outputs[key]);
  }
  return undefined;
}

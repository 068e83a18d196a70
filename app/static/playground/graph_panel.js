// The form of one box of the graph: a node's fields (the layer's form from GET /v1/layers), its
// wires (input, inputs, tensor arguments, each from a list of refs), the graph outputs it gives,
// and delete; or a graph input's shape and dtype.
import { specFields } from "./forms.js";
import { deleteBox, refs, wires } from "./graph_model.js";
import { variantOf } from "./graph_schema.js";

const DTYPES = ["float32", "int64", "bool"];

function make(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  Object.assign(node, attrs);
  if (text !== undefined) node.textContent = text;
  return node;
}

function labelled(text, input) {
  const label = make("label", { className: "field" });
  label.append(text, input);
  return label;
}

function select(options, value, label) {
  const s = make("select");
  s.setAttribute("aria-label", label);
  for (const o of options) s.add(new Option(o, o));
  s.value = value;
  return s;
}

function button(text, label, onClick) {
  const b = make("button", { type: "button", title: label }, text);
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

/**
 * The panel for box `name`. ctx: {types (of graph_schema.js), changed(structure), errors: [{field, msg}]};
 * changed(true) after an edit that redraws the graph, changed(false) after a field edit.
 */
export function boxPanel(graph, name, kind, ctx) {
  const panel = make("div", { className: "box-panel" });
  panel.dataset.name = name;
  const head = make("div", { className: "layer-head" });
  const remove = button("✕", "delete", () => {
    deleteBox(graph, name);
    ctx.changed(true, null);
  });
  if (kind === "input") {
    head.append(make("strong", {}, name), make("span", { className: "desc" }, "graph input"), remove);
    panel.append(head, inputFields(graph.inputs[name], ctx));
  } else {
    const node = graph.nodes.find((n) => n.name === name);
    const entry = variantOf(ctx.types, node);
    head.append(make("strong", {}, `${name} · ${node.type}`),
      make("span", { className: "desc" }, entry?.description ?? "unknown layer type"), remove);
    const fields = make("div", { className: "fields" });
    if (entry) {
      const set = (field, value) => {
        if (value === undefined) delete node[field];
        else node[field] = value;
        ctx.changed(false);
      };
      // The name is the node's ref and the wires have their own editor.
      const own = (f) => f.dataset.field !== "name" && !entry.wired.includes(f.dataset.field);
      fields.append(...specFields(entry.schema, node, set).filter(own));
    }
    panel.append(head, fields, wireEditor(graph, node, entry?.wired ?? ["input", "inputs"], ctx),
      outputField(graph, name, ctx));
  }
  panel.append(make("p", { className: "layer-error" }));
  showPanelErrors(panel, ctx.errors);
  return panel;
}

/** Shows a 422's errors at the box in its panel: the messages, and the fields they name marked. */
export function showPanelErrors(panel, errors = []) {
  panel.querySelector(".layer-error").textContent = errors.map((e) => e.msg).join("\n");
  for (const f of panel.querySelectorAll(".field.error")) f.classList.remove("error");
  for (const { field } of errors) {
    for (const part of field) panel.querySelector(`.field[data-field="${part}"]`)?.classList.add("error");
  }
}

function inputFields(input, ctx) {
  const fields = make("div", { className: "fields" });
  const shape = make("input", { value: (input.shape ?? []).join(", "), name: "shape" });
  shape.addEventListener("input", () => {
    const dims = shape.value.split(/[\s,[\]]+/).filter(Boolean).map(Number);
    input.shape = dims;
    ctx.changed(false);
  });
  const dtype = select(DTYPES, input.dtype ?? "float32", "dtype");
  dtype.addEventListener("change", () => {
    input.dtype = dtype.value;
    ctx.changed(true);
  });
  fields.append(labelled("shape", shape), labelled("dtype", dtype));
  return fields;
}

/** Each wire of the node (its ref can be changed, or the wire removed), and a row adding one for
 * any of the `wired` fields of its type. */
function wireEditor(graph, node, wired, ctx) {
  const box = make("div", { className: "wires" });
  box.append(make("span", { className: "help" }, "wires"));
  const sources = refs(graph, node.name);
  for (const { from, arg } of wires(node)) {
    const row = make("div", { className: "wire" });
    row.dataset.arg = arg;
    const ref = select(sources.includes(from) ? sources : [from, ...sources], from, `${arg} from`);
    ref.addEventListener("change", () => {
      setWire(node, arg, ref.value);
      ctx.changed(true);
    });
    row.append(make("code", {}, arg), ref, button("✕", `unwire ${arg}`, () => {
      unwire(node, arg);
      ctx.changed(true);
    }));
    box.append(row);
  }
  const add = make("div", { className: "wire add-wire" });
  const arg = select(wired, wired.includes("inputs") && node.input !== undefined ? "inputs" : wired[0], "argument");
  const ref = select(sources, sources[0] ?? "", "from");
  add.append(arg, make("span", {}, "←"), ref, button("Wire", "wire", () => {
    if (!ref.value) return;
    if (arg.value === "inputs") node.inputs = [...(node.inputs ?? []), ref.value];
    else node[arg.value] = ref.value;
    ctx.changed(true);
  }));
  box.append(add);
  return box;
}

function setWire(node, arg, ref) {
  if (arg.startsWith("inputs.")) node.inputs[Number(arg.slice(7))] = ref;
  else node[arg] = ref;
}

function unwire(node, arg) {
  if (!arg.startsWith("inputs.")) return delete node[arg];
  node.inputs.splice(Number(arg.slice(7)), 1);
  if (!node.inputs.length) delete node.inputs;
}

/** The names of the graph outputs this node gives, comma-separated (empty: none). */
function outputField(graph, name, ctx) {
  const mine = Object.entries(graph.outputs ?? {}).filter(([, ref]) => ref === name).map(([out]) => out);
  const input = make("input", { value: mine.join(", "), name: "outputs", placeholder: "none" });
  input.addEventListener("change", () => {
    for (const out of mine) delete graph.outputs[out];
    graph.outputs ??= {};
    for (const out of input.value.split(",").map((s) => s.trim()).filter(Boolean)) graph.outputs[out] = name;
    ctx.changed(true);
  });
  const label = labelled("graph output(s)", input);
  label.dataset.field = "outputs";
  return label;
}

// The graph editor: the drawing, the form of the chosen box, "add node" and "add input", and the
// summary's shapes and 422 errors put on the boxes they concern.
import { errorsByBox, isFree, refs } from "./graph_model.js";
import { boxPanel, showPanelErrors } from "./graph_panel.js";
import { drawGraph } from "./graph_view.js";

const $ = (sel) => document.querySelector(sel);
const shapeText = (shape) => `[${shape.join(", ")}]`;

/**
 * Binds the editor in #graph-editor. `types`: the node types of graph_schema.js; `onChange()`
 * after every edit of the graph (the caller syncs the JSON and re-summarizes).
 */
export function graphEditor(types, onChange) {
  const ed = { graph: null, selected: null, shapes: new Map(), errors: new Map(), serverEdges: null };

  /** The drawing only: a summary's answer redraws it without touching a form being filled in. */
  const drawView = () => {
    if (ed.selected && !ed.graph.nodes.some((n) => n.name === ed.selected) && !(ed.selected in ed.graph.inputs)) {
      ed.selected = null;
    }
    drawGraph($("#graph"), ed.graph, {
      shapes: ed.shapes, errors: ed.errors, edges: ed.serverEdges, selected: ed.selected, onSelect: select,
    });
    fillFromOptions();
    const panel = $("#graph-panel .box-panel");
    if (panel) showPanelErrors(panel, ed.errors.get(panel.dataset.name));
  };

  const draw = () => {
    drawView();
    const panel = $("#graph-panel");
    if (!ed.selected) return panel.replaceChildren();
    const kind = ed.selected in ed.graph.inputs ? "input" : "node";
    const errors = ed.errors.get(ed.selected) ?? [];
    panel.replaceChildren(boxPanel(ed.graph, ed.selected, kind, { types, changed, errors }));
  };

  /** An edit: a structural one (wires, names, boxes) redraws; a field edit only re-summarizes. */
  const changed = (structure, selected) => {
    if (selected !== undefined) ed.selected = selected;
    if (structure) {
      ed.serverEdges = null; // stale until the next summary
      draw();
    }
    onChange();
  };

  const select = (name) => {
    ed.selected = name;
    draw();
  };

  const fillFromOptions = () => {
    const from = $("#node-from");
    const kept = new Set(Array.from(from.selectedOptions, (o) => o.value));
    from.replaceChildren(...refs(ed.graph).map((r) => new Option(r, r, false, kept.has(r))));
  };

  // The catalog's types, and any the graph form has beyond them.
  const graphOnly = document.createElement("optgroup");
  graphOnly.label = "graph form";
  const listed = new Set(Array.from($("#catalog").options, (o) => o.value));
  for (const type of types.keys()) if (!listed.has(type)) graphOnly.append(new Option(type, type));
  $("#node-type").replaceChildren(...Array.from($("#catalog").children, (g) => g.cloneNode(true)),
    ...(graphOnly.children.length ? [graphOnly] : []));
  $("#add-node").addEventListener("click", () => {
    const type = $("#node-type").value;
    const name = $("#node-name").value.trim() || freeName(ed.graph, type.toLowerCase());
    if (!isFree(ed.graph, name)) return addError(`"${name}" is taken: each input and node needs its own name.`);
    const from = Array.from($("#node-from").selectedOptions, (o) => o.value);
    const node = { name, type, ...(from.length === 1 ? { input: from[0] } : from.length ? { inputs: from } : {}) };
    ed.graph.nodes.push(node);
    const output = $("#node-output").value.trim();
    if (output) ed.graph.outputs[output] = name;
    $("#node-name").value = $("#node-output").value = "";
    addError("");
    changed(true, name);
  });
  $("#add-input").addEventListener("click", () => {
    const name = freeName(ed.graph, "x");
    ed.graph.inputs[name] = { shape: [2, 16], dtype: "float32" };
    changed(true, name);
  });

  return {
    /** Shows `graph` (edited in place from now on). */
    load(graph) {
      graph.inputs ??= {};
      graph.outputs ??= {};
      Object.assign(ed, { graph, selected: null, shapes: inputShapes(graph), errors: new Map(), serverEdges: null });
      draw();
    },
    /** Puts each node's output shapes under its box, and uses the server's edges. */
    showSummary(summary) {
      ed.shapes = inputShapes(ed.graph);
      for (const row of summary.layers ?? []) {
        if (row.node !== undefined && row.depth === 0 && row.output_shapes) {
          ed.shapes.set(row.node, row.output_shapes.map(shapeText).join(" · "));
        }
      }
      ed.serverEdges = summary.graph?.edges ?? null;
      ed.errors = new Map();
      $("#graph").classList.remove("stale");
      drawView();
    },
    /** Marks the boxes a 422 points at; returns the errors that point at no box. */
    showErrors(detail) {
      const { byBox, other } = errorsByBox(detail, ed.graph);
      ed.errors = byBox;
      $("#graph").classList.toggle("stale", byBox.size + other.length > 0);
      drawView();
      return other;
    },
  };
}

function addError(text) {
  $("#node-add-error").textContent = text;
  $("#node-add-error").hidden = !text;
}

function freeName(graph, stem) {
  for (let i = 1; ; i++) if (isFree(graph, `${stem}${i}`)) return `${stem}${i}`;
}

function inputShapes(graph) {
  return new Map(Object.entries(graph.inputs).map(([name, spec]) => [name, shapeText(spec.shape ?? [])]));
}

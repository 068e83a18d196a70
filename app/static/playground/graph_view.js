// Draws a graph model as SVG: a box per input and node, laid out left to right by depth, an
// arrow per edge (labelled with its argument when that is not "input"), each box's output shape
// under it and the graph's outputs above their box.
import { edges, layout, outputsByNode, refBase } from "./graph_model.js";

const SVG = "http://www.w3.org/2000/svg";
const BOX = { w: 128, h: 44 };
const PITCH = { x: 190, y: 92 };
const MARGIN = { x: 16, y: 24 };

/** Text cut to what fits in a box (its title has it whole). */
const clip = (text) => (text.length > 19 ? `${text.slice(0, 18)}…` : text);

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Redraws `svg` for `graph`. `view.shapes`: Map(box name -> text under it); `view.errors`:
 * Map(box name -> [{msg}]); `view.edges`: the server's edges when it sent them, else they are
 * read from the spec; `view.selected`: the box drawn as chosen; `view.onSelect(name, kind)`.
 */
export function drawGraph(svg, graph, view) {
  const boxes = layout(graph);
  const at = (name) => {
    const { column, row } = boxes.get(name);
    return { x: MARGIN.x + column * PITCH.x, y: MARGIN.y + row * PITCH.y };
  };
  const columns = Math.max(1, ...[...boxes.values()].map((b) => b.column + 1));
  const rows = Math.max(1, ...[...boxes.values()].map((b) => b.row + 1));
  svg.setAttribute("width", 2 * MARGIN.x + (columns - 1) * PITCH.x + BOX.w);
  svg.setAttribute("height", 2 * MARGIN.y + (rows - 1) * PITCH.y + BOX.h + 16);
  const defs = el("defs", {});
  const marker = el("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto",
  });
  marker.append(el("path", { d: "M0,0 L10,5 L0,10 z" }));
  defs.append(marker);

  const lines = el("g", { class: "edges" });
  // A ref to nothing is not drawn (the server names it); a box's arrows arrive spread down its side.
  const drawable = (view.edges ?? edges(graph)).filter((e) => boxes.has(refBase(e.from)) && boxes.has(e.to));
  const arriving = new Map();
  for (const edge of drawable) arriving.set(edge.to, [...(arriving.get(edge.to) ?? []), edge]);
  for (const edge of drawable) {
    const from = refBase(edge.from);
    const a = at(from);
    const b = at(edge.to);
    const siblings = arriving.get(edge.to);
    const port = (siblings.indexOf(edge) + 1) / (siblings.length + 1);
    const [x1, y1, x2, y2] = [a.x + BOX.w, a.y + BOX.h / 2, b.x, b.y + BOX.h * port];
    const bend = Math.max(40, (x2 - x1) / 2);
    const g = el("g", { class: "edge", "data-from": edge.from, "data-to": edge.to, "data-arg": edge.arg });
    const d = `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`;
    g.append(el("path", { d, "marker-end": "url(#arrow)" }));
    const output = edge.from === from ? "" : edge.from.slice(from.length); // ".1" of "lstm.1"
    const label = edge.arg === "input" ? output : `${output ? `${output} → ` : ""}${edge.arg}`;
    if (label) g.append(el("text", { x: x2 - 6, y: y2 - 5, "text-anchor": "end", class: "edge-label" }, label));
    lines.append(g);
  }

  const outputs = outputsByNode(graph);
  const types = new Map(graph.nodes.map((n) => [n.name, n.type]));
  const drawn = el("g", { class: "boxes" });
  for (const [name, { kind }] of boxes) {
    const { x, y } = at(name);
    const errors = (view.errors?.get(name) ?? []).map((e) => e.msg);
    const classes = ["box", kind, outputs.has(name) && "output", errors.length && "has-error",
      view.selected === name && "selected"].filter(Boolean).join(" ");
    const g = el("g", {
      class: classes, "data-name": name, transform: `translate(${x},${y})`, tabindex: 0, role: "button",
    });
    g.append(el("title", {}, [name, ...errors].join("\n")));
    g.append(el("rect", { width: BOX.w, height: BOX.h, rx: 6 }));
    g.append(el("text", { x: 8, y: 17, class: "box-name" }, clip(name)));
    const dtype = graph.inputs?.[name]?.dtype ?? "float32";
    const type = kind === "input" ? `input · ${dtype}` : types.get(name) ?? "?";
    g.append(el("text", { x: 8, y: 33, class: "box-type" }, clip(type)));
    const shape = view.shapes?.get(name);
    if (shape) g.append(el("text", { x: 0, y: BOX.h + 14, class: "box-shape" }, shape));
    if (outputs.has(name)) {
      const names = `⇒ ${outputs.get(name).join(", ")}`;
      g.append(el("text", { x: BOX.w, y: -6, "text-anchor": "end", class: "box-output" }, names));
    }
    const pick = () => view.onSelect?.(name, kind);
    g.addEventListener("click", pick);
    g.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && pick());
    drawn.append(g);
  }
  svg.replaceChildren(defs, lines, drawn);
}

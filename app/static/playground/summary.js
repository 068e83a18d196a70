// The summary table's rows: a Repeat's copies folded into "block × N", tied weights named.

/**
 * The rows to show, in order: a Repeat's first copy stands for all of them, so the rows of copies
 * 1.. (and everything under them, nested Repeats included) are left out. The Repeat's own row
 * carries the totals of every copy.
 */
export function foldRepeats(layers) {
  const shown = [];
  let hidden = null; // path of the last left-out row: its descendants follow it (pre-order)
  for (const layer of layers) {
    if (hidden !== null && layer.path.startsWith(`${hidden}.`)) continue;
    hidden = null;
    if (layer.repeat && layer.repeat.index > 0) {
      hidden = layer.path;
      continue;
    }
    shown.push(layer);
  }
  return shown;
}

/** "1 Repeat (block × 32)", "1.0.0 Residual", indented by depth. */
export function rowName(layer) {
  const times = layer.type === "Repeat" ? ` (block × ${layer.spec.times})` : "";
  return `${"  ".repeat(layer.depth)}${layer.path} ${layer.type}${times}`;
}

/** The parameter count, with any tied weight named: "0 (weight tied to 0)". */
export function paramsText(layer, fmt) {
  const tied = layer.params.filter((p) => p.tied_to).map((p) => `${p.name} tied to ${p.tied_to}`);
  return tied.length ? `${fmt(layer.num_params)} (${tied.join(", ")})` : fmt(layer.num_params);
}

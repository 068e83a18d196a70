// What the server says a graph node may be, read from its OpenAPI schema (GraphSpec's `nodes`):
// each node type's schema, for its form, and its wired fields (input, inputs, tensor arguments).
// Without a graph schema (a server before graphs) every type of the layer catalog is a node, its
// form the layer's, wired by `input`/`inputs` and the tensor arguments torch names.
import { knowTensorArgs, TENSOR_ARGS } from "./graph_model.js";

const FALLBACK_WIRED = ["input", "inputs", ...TENSOR_ARGS];

/**
 * Map(type -> [{schema, wired, description}]): one variant per node schema of that type (Concat is
 * a container taking `input` and a merge taking `inputs`), `wired` its fields set from refs.
 */
export function nodeTypes(openapi, catalog) {
  const schemas = openapi?.components?.schemas ?? {};
  const items = schemas.GraphSpec?.properties?.nodes?.items;
  const nodes = (items?.oneOf ?? items?.anyOf ?? []).map((ref) => schemas[ref.$ref?.split("/").pop()]).filter(Boolean);
  const types = new Map();
  if (!nodes.length) {
    for (const [type, entry] of catalog) {
      types.set(type, [{ schema: entry.schema, wired: FALLBACK_WIRED, description: entry.description }]);
    }
    return types;
  }
  // A ref is a string of the pattern of every node's `input`; wired fields are refs or lists of refs.
  const pattern = nodes.find((n) => n.properties?.input?.pattern)?.properties.input.pattern;
  const isRef = (p) => p?.type === "string" && p.pattern === pattern;
  const wiredField = (p) => isRef(p) || (p?.type === "array" && isRef(p.items)) || (p?.anyOf ?? []).some(isRef);
  for (const node of nodes) {
    const type = node.properties?.type?.const;
    if (!type) continue;
    const wired = Object.entries(node.properties).filter(([, p]) => wiredField(p)).map(([name]) => name);
    knowTensorArgs(wired);
    const description = node.description ?? catalog.get(type)?.description;
    types.set(type, [...(types.get(type) ?? []), { schema: node, wired, description }]);
  }
  return types;
}

/** The variant of its type a node is: the one taking `inputs` if it has them, else `input`. */
export function variantOf(types, node) {
  const variants = types.get(node.type) ?? [];
  const takes = node.inputs !== undefined ? "inputs" : "input";
  return variants.find((v) => v.wired.includes(takes)) ?? variants[0];
}

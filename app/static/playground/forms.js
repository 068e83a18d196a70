// Turns one layer's JSON schema (from GET /v1/layers) into form inputs. Pure DOM, no framework.
//
// Every field maps to one input; an empty input means "leave the field out", so the API uses its
// default or infers the size from the previous layer. Values are parsed back to JSON by kind:
//   boolean -> checkbox, enum -> select, integer/number -> number input,
//   int-or-list / string-or-int (e.g. kernel_size, padding) -> text ("3" or "3, 3" or "same"),
//   anything structured (a container's layers, branches) -> a JSON textarea.

import { exact } from "./numbers.js";

const SCALARS = new Set(["integer", "number", "string", "boolean"]);
const COMMON = new Set(["name", "trainable"]); // every layer's fields (LayerSpec's), shown last

/** The non-null alternatives of a property, and whether null (= inferred) is allowed. */
function variants(prop) {
  const all = prop.anyOf ?? [prop];
  return { options: all.filter((v) => v.type !== "null"), nullable: all.some((v) => v.type === "null") };
}

/** Which widget a property gets. */
export function fieldKind(prop) {
  const { options } = variants(prop);
  if (options.length === 1) {
    const v = options[0];
    if (v.enum) return "enum";
    if (v.type === "boolean") return "boolean";
    if (v.type === "integer" || v.type === "number") return v.type;
    if (v.type === "string") return "string";
  }
  const item = (v) => v.items ?? v.prefixItems?.[0];
  const flat = options.every((v) => SCALARS.has(v.type) || (v.type === "array" && SCALARS.has(item(v)?.type)));
  return flat ? "text" : "json";
}

/** Text typed into a "text" field -> JSON value ("3" -> 3, "3, 3" -> [3, 3], "same" -> "same"). */
export function parseText(text) {
  const t = text.trim();
  if (t.startsWith("[")) return JSON.parse(t);
  const parts = t.split(",").map((s) => s.trim());
  const nums = parts.map(Number);
  if (parts.every((s) => s !== "") && nums.every(Number.isFinite)) return parts.length === 1 ? nums[0] : nums;
  return t;
}

function showValue(value, kind) {
  if (value === undefined || value === null) return "";
  if (kind === "json") return JSON.stringify(value);
  const show = (v) => (typeof v === "number" ? exact(v) : String(v));
  return Array.isArray(value) ? value.map(show).join(", ") : show(value);
}

/** Sets an input's placeholder and widens the input to show all of it (the style gives 8.5em). */
export function setPlaceholder(input, text) {
  input.placeholder = text;
  input.style.minWidth = `calc(${text.length}ch + 12px)`; // the text, and the input's padding
}

/** A hint for an empty field: its default, or that the API infers it. */
function placeholder(prop, required) {
  if (required) return "required";
  if (prop.default === null) return fieldKind(prop) === "string" ? "optional" : "inferred"; // name, tie_weight
  if (prop.default !== undefined) return `default ${showValue(prop.default, "text")}`;
  return "optional";
}

/**
 * One labelled input for `name`, showing `value` (undefined = not set). `onChange(value)` gets
 * the parsed JSON value, or undefined when the field is cleared; text that does not parse marks
 * the field invalid and is not passed on.
 */
export function fieldInput(name, prop, value, required, onChange) {
  const kind = fieldKind(prop);
  const label = document.createElement("label");
  label.className = `field field-${kind}`;
  label.dataset.field = name;
  label.title = prop.description ?? "";
  label.append(name.replaceAll("_", " "));

  let input;
  if (kind === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = value ?? prop.default ?? false;
  } else if (kind === "enum") {
    input = document.createElement("select");
    const { options } = variants(prop);
    for (const choice of ["", ...options[0].enum]) input.add(new Option(choice || "—", choice));
    input.value = value ?? prop.default ?? "";
  } else if (kind === "json") {
    input = document.createElement("textarea");
    input.rows = 3;
    input.spellcheck = false;
  } else {
    input = document.createElement("input");
    if (kind === "integer" || kind === "number") {
      const v = variants(prop).options[0];
      input.type = "number";
      input.step = kind === "integer" ? "1" : "any";
      if (v.minimum !== undefined) input.min = v.minimum;
      if (v.maximum !== undefined) input.max = v.maximum;
    }
  }
  if (kind !== "boolean" && kind !== "enum") {
    input.value = showValue(value, kind);
    setPlaceholder(input, placeholder(prop, required));
    if (prop.default === null && kind !== "string") input.dataset.inferred = "true"; // the summary fills it
  }
  input.name = name;

  input.addEventListener(kind === "boolean" || kind === "enum" ? "change" : "input", () => {
    let parsed;
    try {
      parsed = parseInput(input, kind);
    } catch {
      return label.classList.add("invalid");
    }
    label.classList.remove("invalid");
    onChange(parsed);
  });
  label.append(input);
  return label;
}

function parseInput(input, kind) {
  if (kind === "boolean") return input.checked;
  const raw = input.value;
  if (raw.trim() === "") return undefined;
  if (kind === "integer" || kind === "number") return Number(raw);
  if (kind === "json") return JSON.parse(raw);
  return kind === "text" ? parseText(raw) : raw;
}

/** A container's schema is recursive: its fields sit in $defs, behind a top-level $ref. */
function resolve(schema) {
  const name = schema.$ref?.match(/^#\/\$defs\/(.+)$/)?.[1];
  return name ? schema.$defs[name] : schema;
}

/**
 * Inputs for every field of one variant of a tagged union (a layer type, a loss, a dataset...)
 * except its tag; `onField(name, value)` on each edit, value undefined when cleared.
 */
export function specFields(variantSchema, spec, onField, tag = "type") {
  const schema = resolve(variantSchema);
  const required = new Set(schema.required ?? []);
  return Object.entries(schema.properties ?? {})
    .filter(([name]) => name !== tag)
    .sort(([a], [b]) => COMMON.has(a) - COMMON.has(b)) // a layer's own fields first, then name, trainable
    .map(([name, prop]) => fieldInput(name, prop, spec[name], required.has(name), (v) => onField(name, v)));
}

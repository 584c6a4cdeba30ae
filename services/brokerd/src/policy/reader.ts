// Policy reader: reads the policy source (YAML, or JSON with the same structure) into positioned
// fields. Owns positions: every error it is given becomes `source:line:col: path: message`, sorted
// in file order; it reports YAML syntax errors, follows aliases, and reads the generic shapes (a map
// with a closed set of keys, a non-empty list, a list of strings, a boolean). Never knows what a
// policy says: no key names, no limits, no rule (fields.ts and schema.ts pass them in). Never reads
// files (load.ts does).

import {
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  type YAMLMap,
  type Document as YamlDocument,
  type Node as YamlNode,
} from "yaml";
import { closest, show } from "./messages.js";
import { PolicyError } from "./types.js";

export interface Field {
  /** the value node, alias resolved; null when the key has no value */
  value: YamlNode | null;
  /** where an error about this field points: the value, or the key when there is no value */
  offset: number;
}

/** Collects positioned errors; formats them as `source:line:col: path: message`. */
export class Checker {
  private readonly found: { offset: number; seq: number; text: string }[] = [];
  constructor(
    readonly source: string,
    readonly doc: YamlDocument,
    readonly lines: LineCounter,
  ) {}

  get count(): number {
    return this.found.length;
  }

  error(offset: number, path: string, message: string): void {
    const { line, col } = this.lines.linePos(offset);
    const text = `${this.source}:${Math.max(line, 1)}:${Math.max(col, 1)}: ${path || "top level"}: ${message}`;
    this.found.push({ offset, seq: this.found.length, text });
  }

  line(offset: number): number {
    return Math.max(this.lines.linePos(offset).line, 1);
  }

  sorted(): string[] {
    return [...this.found].sort((a, b) => a.offset - b.offset || a.seq - b.seq).map((e) => e.text);
  }

  /** Follows an alias (`*name`) to the node it names. */
  deref(node: unknown): YamlNode | null {
    if (isAlias(node)) return node.resolve(this.doc) ?? null;
    return isMap(node) || isSeq(node) || isScalar(node) ? node : null;
  }
}

/**
 * Parses the text. Throws PolicyError listing every YAML syntax error (nothing else can be read
 * from a file that does not parse); otherwise returns the checker and the top-level node.
 */
export function readSource(text: string, source: string): { ck: Checker; root: YamlNode | null } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  const ck = new Checker(source, doc, lines);

  const syntax = [...doc.errors, ...doc.warnings];
  if (syntax.length > 0) {
    for (const e of syntax) ck.error(e.pos[0], "", `YAML: ${e.message.split("\n")[0]}`);
    throw new PolicyError(ck.sorted(), source);
  }
  return { ck, root: ck.deref(doc.contents) };
}

/** Where a node begins in the text, or `fallback` when it has no position (no value). */
export function start(node: YamlNode | null, fallback: number): number {
  return node?.range?.[0] ?? fallback;
}

/** The path of `key` inside the map at `path`, as errors name it ("rules[0].match.uids"). */
export function join(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

export function isNullScalar(node: YamlNode | null): boolean {
  return node === null || (isScalar(node) && node.value === null);
}

/**
 * Reads a map with a closed set of keys. Unknown and repeated keys are errors; returns undefined
 * (after reporting) when the node is not a map.
 */
export function readMap(
  ck: Checker,
  node: YamlNode | null,
  offset: number,
  path: string,
  keys: readonly string[],
  example: string,
): Map<string, Field> | undefined {
  if (!isMap(node)) {
    ck.error(start(node, offset), path, `must be a map like ${example}, not ${show(node)}`);
    return undefined;
  }
  const fields = new Map<string, Field>();
  for (const pair of (node as YAMLMap<unknown, unknown>).items) {
    const key = ck.deref(pair.key);
    const keyOffset = start(key, start(node, offset));
    if (!isScalar(key) || (typeof key.value !== "string" && typeof key.value !== "number")) {
      ck.error(keyOffset, path, `keys must be plain names; expected one of ${keys.join(", ")}`);
      continue;
    }
    const name = String(key.value);
    if (!keys.includes(name)) {
      const hint = closest(name, keys);
      ck.error(
        keyOffset,
        path,
        `unknown key ${JSON.stringify(name)}; ${hint ? `did you mean "${hint}"? ` : ""}allowed keys: ${keys.join(", ")}`,
      );
      continue;
    }
    if (fields.has(name)) {
      ck.error(keyOffset, join(path, name), `appears twice in the same map; keep one`);
      continue;
    }
    const value = ck.deref(pair.value);
    fields.set(name, { value, offset: isNullScalar(value) ? keyOffset : start(value, keyOffset) });
  }
  return fields;
}

/** Reads a list; a missing or empty list is an error (it would allow nothing). */
export function readList(
  ck: Checker,
  field: Field | undefined,
  mapOffset: number,
  path: string,
  what: string,
  example: string,
): { node: YamlNode | null; offset: number; path: string }[] | undefined {
  if (field === undefined) {
    ck.error(mapOffset, path, `required but missing; list the ${what}, e.g. ${example}`);
    return undefined;
  }
  const node = field.value;
  if (!isSeq(node)) {
    const hint =
      isScalar(node) && node.value !== null ? `; write a list: [${show(node)}]` : `, e.g. ${example}`;
    ck.error(field.offset, path, `must be a list of ${what}, not ${show(node)}${hint}`);
    return undefined;
  }
  if (node.items.length === 0) {
    ck.error(field.offset, path, `is empty, so it allows nothing; list the ${what}, e.g. ${example}`);
    return undefined;
  }
  return node.items.map((item, i) => {
    const n = ck.deref(item);
    return { node: n, offset: start(n, field.offset), path: `${path}[${i}]` };
  });
}

/** Reads a list of strings, rejecting non-strings and repeats; `check` returns an error or undefined. */
export function readStrings(
  ck: Checker,
  field: Field | undefined,
  mapOffset: number,
  path: string,
  what: string,
  example: string,
  check: (s: string) => string | undefined,
): string[] {
  const items = readList(ck, field, mapOffset, path, what, example);
  const out: string[] = [];
  for (const item of items ?? []) {
    if (!isScalar(item.node) || typeof item.node.value !== "string") {
      ck.error(item.offset, item.path, `${show(item.node)} is not one of the ${what}; write a string`);
      continue;
    }
    const s = item.node.value;
    const problem = check(s);
    if (problem !== undefined) ck.error(item.offset, item.path, problem);
    else if (out.includes(s))
      ck.error(item.offset, item.path, `${JSON.stringify(s)} is listed twice; remove one`);
    else out.push(s);
  }
  return out;
}

/** Reads an optional boolean; absent is false. */
export function readBool(ck: Checker, field: Field | undefined, path: string): boolean {
  if (field === undefined) return false;
  const v = isScalar(field.value) ? field.value.value : undefined;
  if (typeof v === "boolean") return v;
  ck.error(field.offset, path, `${show(field.value)} is not true or false; write true or false`);
  return false;
}

// The size limits of issue 19 that Biome cannot check for the non-test TypeScript sources of
// brokerd and the Node client: no class over 400 lines (Biome has no rule for classes) and no file
// over 450 lines as the file has them (Biome's noExcessiveLinesPerFile, in biome.jsonc, leaves out
// comment lines such as a file's header and doc comments). Biome checks functions (120). `npm run
// lint` runs this; it prints what is over a limit and exits 1. Dependency-free: a small lexer that
// skips comments, strings, template literals (and the braces of their ${} expressions) and regular
// expressions, then matches each class body's braces. It only reads files.
// Usage: node scripts/size-limits.mjs [dir...]   (default: services/brokerd/src clients/node/src)
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const MAX_CLASS_LINES = 400;
export const MAX_FILE_LINES = 450;

/** After these words a `/` starts a regular expression, not a division. */
const BEFORE_EXPRESSION = new Set([
  "return",
  "typeof",
  "instanceof",
  "in",
  "of",
  "new",
  "delete",
  "void",
  "throw",
  "case",
  "do",
  "else",
  "yield",
  "await",
]);
const ID_START = /[A-Za-z_$#\u0080-\uffff]/;
const ID_PART = /[\w$\u0080-\uffff]/;

/**
 * The significant tokens of a TypeScript source with their 1-based lines: identifiers ("id"),
 * punctuators ("p", one character, or "=>"), and literals ("lit": strings, template literals,
 * regular expressions, numbers). Comments are dropped; a template literal's ${} expressions are
 * tokenized, their own braces are not emitted.
 */
export function tokenize(src) {
  const out = [];
  const stack = []; // "{" for a brace, "${" for a template expression
  let line = 1;
  let i = 0;
  const last = () => out[out.length - 1];
  const regexAllowed = () => {
    const t = last();
    if (!t) return true;
    if (t.type === "lit") return false;
    if (t.type === "id") return BEFORE_EXPRESSION.has(t.value);
    return !(t.value === ")" || t.value === "]" || t.value === "}");
  };
  /** Scans template text from i (after ` or a closing }) to its end or its next ${. */
  const templateText = (startLine) => {
    while (i < src.length) {
      const c = src[i];
      if (c === "\\") {
        if (src[i + 1] === "\n") line++;
        i += 2;
      } else if (c === "`") {
        i++;
        out.push({ type: "lit", value: "`", line: startLine });
        return;
      } else if (c === "$" && src[i + 1] === "{") {
        i += 2;
        stack.push("${");
        return;
      } else {
        if (c === "\n") line++;
        i++;
      }
    }
  };
  while (i < src.length) {
    const c = src[i];
    if (c === "\n") {
      line++;
      i++;
    } else if (c === " " || c === "\t" || c === "\r") i++;
    else if (c === "/" && src[i + 1] === "/") {
      while (i < src.length && src[i] !== "\n") i++;
    } else if (c === "/" && src[i + 1] === "*") {
      const end = src.indexOf("*/", i + 2);
      const stop = end < 0 ? src.length : end + 2;
      for (let k = i; k < stop; k++) if (src[k] === "\n") line++;
      i = stop;
    } else if (c === '"' || c === "'") {
      const at = line;
      i++;
      while (i < src.length && src[i] !== c && src[i] !== "\n") {
        if (src[i] === "\\") {
          if (src[i + 1] === "\n") line++;
          i++;
        }
        i++;
      }
      i++;
      out.push({ type: "lit", value: c, line: at });
    } else if (c === "`") {
      i++;
      templateText(line);
    } else if (c === "/" && regexAllowed()) {
      const at = line;
      let inClass = false;
      i++;
      while (i < src.length && src[i] !== "\n" && (inClass || src[i] !== "/")) {
        if (src[i] === "\\") i++;
        else if (src[i] === "[") inClass = true;
        else if (src[i] === "]") inClass = false;
        i++;
      }
      i++;
      while (i < src.length && /[a-z]/.test(src[i])) i++;
      out.push({ type: "lit", value: "/", line: at });
    } else if (/[0-9]/.test(c) || (c === "." && /[0-9]/.test(src[i + 1] ?? ""))) {
      const at = line;
      while (i < src.length && /[\w.]/.test(src[i])) i++;
      out.push({ type: "lit", value: "0", line: at });
    } else if (ID_START.test(c)) {
      const start = i;
      i++;
      while (i < src.length && ID_PART.test(src[i])) i++;
      out.push({ type: "id", value: src.slice(start, i), line });
    } else if (c === "{") {
      stack.push("{");
      out.push({ type: "p", value: c, line });
      i++;
    } else if (c === "}") {
      i++;
      if (stack.pop() === "${") templateText(line);
      else out.push({ type: "p", value: c, line });
    } else if (c === "=" && src[i + 1] === ">") {
      out.push({ type: "p", value: "=>", line });
      i += 2;
    } else {
      out.push({ type: "p", value: c, line });
      i++;
    }
  }
  return out;
}

/** Every class declaration or expression in `src`: its name, first and last line, and line count. */
export function classSpans(src) {
  const t = tokenize(src);
  const spans = [];
  for (let k = 0; k < t.length; k++) {
    if (t[k].type !== "id" || t[k].value !== "class") continue;
    if (t[k - 1]?.value === ".") continue; // a property named class
    const next = t[k + 1];
    if (!next || !(next.type === "id" || next.value === "{" || next.value === "<")) continue;
    const name =
      next.type === "id" && next.value !== "extends" && next.value !== "implements"
        ? next.value
        : "(anonymous)";
    // The body's brace: the first { outside the heritage clause's parentheses and type arguments.
    let parens = 0;
    let angles = 0;
    let open = k + 1;
    for (; open < t.length; open++) {
      const v = t[open].type === "p" ? t[open].value : "";
      if (v === "(") parens++;
      else if (v === ")") parens--;
      else if (v === "<") angles++;
      else if (v === ">") angles--;
      else if (v === "{" && parens === 0 && angles <= 0) break;
    }
    let depth = 0;
    let close = open;
    for (; close < t.length; close++) {
      if (t[close].type !== "p") continue;
      if (t[close].value === "{") depth++;
      else if (t[close].value === "}" && --depth === 0) break;
    }
    if (close >= t.length) continue; // unbalanced: not a class this scan understands
    const endLine = t[close].line;
    spans.push({ name, line: t[k].line, endLine, lines: endLine - t[k].line + 1 });
  }
  return spans;
}

/** Non-test .ts files under `dir`, recursively (no declaration files). */
function sources(dir) {
  const files = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...sources(p));
    else if (/\.ts$/.test(entry.name) && !/\.(test|d)\.ts$/.test(entry.name)) files.push(p);
  }
  return files.sort();
}

/** A file's lines, as `wc -l` counts them (plus an unterminated last line). */
export function fileLines(src) {
  const newlines = src.split("\n").length - 1;
  return src.length > 0 && !src.endsWith("\n") ? newlines + 1 : newlines;
}

/**
 * What is over a limit in the non-test sources under `dirs` (relative to `root`, or absolute):
 * files over `maxFile` lines and classes over `maxClass`, with paths relative to `root`.
 */
export function oversized(root, dirs, maxClass = MAX_CLASS_LINES, maxFile = MAX_FILE_LINES) {
  const found = [];
  for (const dir of dirs)
    for (const path of sources(resolve(root, dir))) {
      const src = readFileSync(path, "utf8");
      const file = relative(root, path);
      const lines = fileLines(src);
      if (lines > maxFile) found.push({ file, line: 1, what: "file", lines, max: maxFile });
      for (const span of classSpans(src))
        if (span.lines > maxClass)
          found.push({ file, line: span.line, what: `class ${span.name}`, lines: span.lines, max: maxClass });
    }
  return found;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const root = fileURLToPath(new URL("..", import.meta.url));
  const dirs = process.argv.length > 2 ? process.argv.slice(2) : ["services/brokerd/src", "clients/node/src"];
  let failed = false;
  for (const o of oversized(root, dirs)) {
    console.error(`size-limits: ${o.file}:${o.line}: ${o.what} is ${o.lines} lines, over ${o.max}`);
    failed = true;
  }
  process.exit(failed ? 1 : 0);
}

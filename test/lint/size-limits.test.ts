// Tests for scripts/size-limits.mjs, the lint's class and file size limits (no class over 400
// lines, no file over 450, in brokerd's non-test sources): a class of 401 lines and a file of 451
// fail, 400 and 450 pass, as a process and as a function; braces and the word "class" inside
// strings, template literals, regular expressions and comments never move a class's end (a
// property over random mixes of them).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import fc from "fast-check";
import { REPO } from "../lib/brokerd.js";

interface ClassSpan {
  name: string;
  line: number;
  endLine: number;
  lines: number;
}
interface Oversized {
  file: string;
  line: number;
  what: string;
  lines: number;
  max: number;
}
interface SizeLimits {
  MAX_CLASS_LINES: number;
  MAX_FILE_LINES: number;
  classSpans(src: string): ClassSpan[];
  fileLines(src: string): number;
  oversized(root: string, dirs: string[]): Oversized[];
}
const SCRIPT = join(REPO, "scripts/size-limits.mjs");
const { MAX_CLASS_LINES, MAX_FILE_LINES, classSpans, fileLines, oversized } = (await import(
  pathToFileURL(SCRIPT).href
)) as SizeLimits;

/** Lines of a class body that hide braces, backquotes and "class" where only a lexer sees them. */
const NOISE = [
  'const a = "{ \\" { class X {";',
  "const b = '}' + '\\'}';",
  // biome-ignore lint/suspicious/noTemplateCurlyInString: TypeScript source for the lexer, not a template
  'const c = `}${ { k: "}" }.k }${`{${`}`}`}`;',
  'const d = /[}{]\\/{/g.test("}");',
  "const e = (1 + 2) / 3 / 4; // } { class Y {",
  "/* { */ const f = { class: 1, g: { h: 2 } }.class;",
  "const g = `{\n  } still the template {`;",
  "/*\n { class Z {\n*/",
  "if (this.x) return /}/.source;",
  "const h = a.class + typeof /{/;",
];

/** A class spanning exactly `lines` lines (at least 4), its method's body filled with NOISE. */
function classOf(lines: number, name = "Big"): string {
  const body: string[] = [];
  for (let n = 0, i = 0; n < lines - 4; i = (i + 1) % NOISE.length) {
    const snippet = n + NOISE[i]!.split("\n").length <= lines - 4 ? NOISE[i]! : "let z = 0;";
    body.push(snippet);
    n += snippet.split("\n").length;
  }
  return [`export class ${name} {`, "  m(): unknown {", ...body, "  }", "}"].join("\n");
}

test("a class of 401 lines is over the limit, one of 400 is not", () => {
  assert.equal(MAX_CLASS_LINES, 400);
  assert.equal(MAX_FILE_LINES, 450);
  for (const lines of [400, 401]) {
    const spans = classSpans(`// header\n${classOf(lines)}\nexport const after = 1;\n`);
    assert.deepEqual(spans, [{ name: "Big", line: 2, endLine: lines + 1, lines }]);
  }
});

test("the script fails on a 401-line class or a 451-line file, passes at 400 and 450, skips tests", () => {
  const dir = mkdtempSync(join(tmpdir(), "size-limits-"));
  const run = () => spawnSync(process.execPath, [SCRIPT, dir], { encoding: "utf8" });
  const lines = (n: number) => "export const x = 1;\n".repeat(n);
  try {
    writeFileSync(join(dir, "fine.ts"), `${classOf(400, "Fine")}\n${"// doc\n".repeat(50)}`);
    writeFileSync(join(dir, "long.test.ts"), classOf(900, "InATest"));
    writeFileSync(join(dir, "types.d.ts"), lines(500));
    assert.equal(fileLines(readFileSync(join(dir, "fine.ts"), "utf8")), MAX_FILE_LINES);
    const ok = run();
    assert.equal(ok.status, 0, ok.stderr);

    writeFileSync(join(dir, "big.ts"), classOf(401, "Big"));
    const bad = run();
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /big\.ts:1: class Big is 401 lines, over 400/);
    assert.doesNotMatch(bad.stderr, /Fine|InATest|fine\.ts|types/);
    rmSync(join(dir, "big.ts"));

    writeFileSync(join(dir, "long.ts"), lines(451));
    const long = run();
    assert.equal(long.status, 1);
    assert.match(long.stderr, /long\.ts:1: file is 451 lines, over 450/);
    assert.deepEqual(
      oversized(REPO, [dir]).map((o) => [o.what, o.lines, o.max]),
      [["file", 451, 450]],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("file lines are counted as wc -l counts them", () => {
  assert.equal(fileLines(""), 0);
  assert.equal(fileLines("a\n"), 1);
  assert.equal(fileLines("a\nb"), 2);
  assert.equal(fileLines("/**\n * doc\n */\n\n// c\n"), 5);
});

test("anonymous, generic, nested and heritage-clause classes; 'class' as a name is not one", () => {
  const src = [
    "const A = class extends Base<{ a: number }> {", // 1
    "  m() { return class Inner<T extends { b: () => void }> implements I {", // 2
    // biome-ignore lint/suspicious/noTemplateCurlyInString: TypeScript source for the lexer, not a template
    "    x = `${`}`}`;", // 3
    "  }; }", // 4
    "};", // 5
    "const o = { class: 1 }; o.class; type T = { class?: string };", // 6
    "o.class", // 7
    "const p = { q: 1 };", // 8
  ].join("\n");
  assert.deepEqual(
    classSpans(src).map((s) => [s.name, s.line, s.endLine]),
    [
      ["(anonymous)", 1, 5],
      ["Inner", 2, 4],
    ],
  );
});

test("property: literals and comments in a class body never move its end", () => {
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom(...NOISE), { maxLength: 40 }),
      fc.integer({ min: 0, max: 3 }),
      (snippets, before) => {
        const body = snippets.join("\n");
        const bodyLines = body === "" ? 0 : body.split("\n").length;
        const src = [
          ...Array.from({ length: before }, () => "// before"),
          "class A {",
          "  m() {",
          ...(body === "" ? [] : [body]),
          "  }",
          "}",
          "class B {}",
        ].join("\n");
        const a = before + 1;
        const end = a + bodyLines + 3;
        assert.deepEqual(classSpans(src), [
          { name: "A", line: a, endLine: end, lines: end - a + 1 },
          { name: "B", line: end + 1, endLine: end + 1, lines: 1 },
        ]);
      },
    ),
    { numRuns: 300 },
  );
});

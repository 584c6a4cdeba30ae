// The C in libvfio-broker's README (clients/c/README.md) compiles as a reader would compile it:
// every ```c block, with the README's own link line (`cc -std=c11` and pkg-config against
// clients/c/build), -Wall -Wextra -Werror. A block that is a fragment (no #include of the header)
// gets `#include <vfio-broker.h>` after its own leading preprocessor lines, so a feature-test macro
// it defines still comes first. A snippet that uses POSIX without saying so, or an API the header
// does not declare, fails here instead of in a reader's hands.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { REPO } from "../lib/brokerd.js";

const README = join(REPO, "clients/c/README.md");
const BUILD = join(REPO, "clients/c/build");

/** The ```c blocks of a Markdown text, with the line each starts on. */
function cBlocks(md: string): { line: number; code: string }[] {
  const out: { line: number; code: string }[] = [];
  const lines = md.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== "```c") continue;
    const start = i + 1;
    let j = start;
    while (j < lines.length && lines[j]!.trim() !== "```") j++;
    out.push({ line: start + 1, code: lines.slice(start, j).join("\n") });
    i = j;
  }
  return out;
}

/** A fragment made compilable: the header included after its own leading preprocessor lines. */
function withHeader(code: string): string {
  if (/#include\s*<vfio-broker\.h>/.test(code)) return code;
  const lines = code.split("\n");
  let k = 0;
  while (k < lines.length && (lines[k]!.startsWith("#") || lines[k]!.trim() === "")) k++;
  return [...lines.slice(0, k), "#include <vfio-broker.h>", ...lines.slice(k)].join("\n");
}

const dir = mkdtempSync(join(tmpdir(), "vfb-readme-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("libvfio-broker README: its C compiles with the README's link line", () => {
  const blocks = cBlocks(readFileSync(README, "utf8"));

  it("has C to check (the API by example, resuming)", () => {
    assert.ok(blocks.length >= 2, `expected at least 2 C blocks in ${README}, found ${blocks.length}`);
  });

  const pkg = (what: string) =>
    spawnSync("pkg-config", [what, "vfio-broker"], {
      encoding: "utf8",
      env: { ...process.env, PKG_CONFIG_PATH: BUILD },
    });
  const cflags = pkg("--cflags");
  const libs = pkg("--libs");

  for (const b of blocks) {
    it(`the block at clients/c/README.md:${b.line}`, () => {
      for (const p of [cflags, libs])
        assert.equal(p.status, 0, `pkg-config vfio-broker against ${BUILD} failed: ${p.stderr}`);
      const main = /\bint\s+main\s*\(/.test(b.code);
      const src = join(dir, `block-${b.line}.c`);
      writeFileSync(src, `${withHeader(b.code)}\n`);
      // A whole program is linked (the README's line as it stands); a fragment only compiled
      // (its static functions unused: no warning for that).
      const args = main
        ? ["-std=c11", "-Wall", "-Wextra", "-Werror", src, "-o", join(dir, `block-${b.line}`)]
        : ["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function", "-c", src, "-o", `${src}.o`];
      const flags = `${cflags.stdout} ${main ? libs.stdout : ""}`.trim().split(/\s+/).filter(Boolean);
      const r = spawnSync("cc", [...args, ...flags], { encoding: "utf8" });
      assert.equal(r.status, 0, `cc ${args.join(" ")} failed:\n${r.stderr}\n--- the block:\n${b.code}`);
    });
  }
});

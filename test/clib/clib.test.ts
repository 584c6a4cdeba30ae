// libvfio-broker (clients/c): its C test runner passes under ASan + UBSan and once under valgrind
// (its closing line "N passed, 0 failed"), and the build leaves what the issue promises: a program
// compiled with only `pkg-config --cflags --libs vfio-broker` against clients/c/build links (shared
// and static) and runs, the shared library exports only the public vfb_ API, and `make install`
// puts the header, both libraries and a .pc with the prefix under DESTDIR. Against a real brokerd
// (its own process), the library's fd channel client, run as uid 65534 under ASan + UBSan
// (tests/fdprobe.c), gets brokerd's refusal of an unknown ticket as VFB_E_UNKNOWN_TICKET with
// brokerd's message, and VFB_E_CONNECT once brokerd is stopped, leaking no fd either way.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { NOBODY, REPO, run as runAs, startBrokerd } from "../lib/brokerd.js";

const CLIB = join(REPO, "clients/c");
const BUILD = join(CLIB, "build");

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, ...env }, timeout: 300_000 });
  return { status: r.status, out: `${r.stdout ?? ""}${r.stderr ?? ""}`, stdout: r.stdout ?? "" };
}

/** The runner's closing line, as numbers; fails the test with the whole output otherwise. */
function closingLine(out: string): { passed: number; failed: number } {
  const last = out
    .trim()
    .split("\n")
    .filter((l) => /^\d+ passed, \d+ failed$/.test(l))
    .at(-1);
  assert.ok(last, `no "N passed, N failed" line in:\n${out}`);
  const [passed, failed] = last.match(/\d+/g)!.map(Number);
  return { passed: passed!, failed: failed! };
}

const PROGRAM = `#include <stdio.h>
#include <string.h>
#include <vfio-broker.h>
int main(void) {
  if (VFB_OK != 0 || VFB_E_TIMEOUT >= 0) return 2;
  printf("%s|%s\\n", vfb_error_name(VFB_E_TIMEOUT), vfb_strerror(VFB_E_CONNECT));
  return strcmp(vfb_error_name(VFB_E_BUSY), "VFB_E_BUSY") == 0 ? 0 : 1;
}
`;

describe("libvfio-broker (clients/c)", () => {
  const tmp = mkdtempSync(join(tmpdir(), "vfb-clib-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it("its C tests pass under ASan + UBSan (clang-14)", () => {
    const r = run("make", ["-s", "-C", CLIB, "check"]);
    const { passed, failed } = closingLine(r.stdout);
    assert.equal(failed, 0, r.out);
    assert.ok(passed >= 20, `only ${passed} C tests ran:\n${r.out}`);
    assert.equal(r.status, 0, r.out);
  });

  it("its C tests pass once under valgrind (memcheck, fd tracking)", () => {
    const r = run("make", ["-s", "-C", CLIB, "valgrind"]);
    const { passed, failed } = closingLine(r.stdout);
    assert.equal(failed, 0, r.out);
    assert.ok(passed >= 20, r.out);
    assert.equal(r.status, 0, r.out);
  });

  it("a program built with pkg-config links against the build tree, shared and static, and runs", () => {
    const env = { PKG_CONFIG_PATH: BUILD };
    const flags = run("pkg-config", ["--cflags", "--libs", "vfio-broker"], env);
    assert.equal(flags.status, 0, flags.out);
    const staticFlags = run("pkg-config", ["--static", "--cflags", "--libs", "vfio-broker"], env);
    assert.equal(staticFlags.status, 0, staticFlags.out);
    const src = join(tmp, "prog.c");
    writeFileSync(src, PROGRAM);
    for (const [name, args] of [
      ["shared", flags.stdout.trim().split(/\s+/)],
      [
        "static",
        [...staticFlags.stdout.trim().replace("-lvfio-broker", `${BUILD}/libvfio-broker.a`).split(/\s+/)],
      ],
    ] as const) {
      const exe = join(tmp, `prog-${name}`);
      const cc = run("cc", ["-std=c11", "-Wall", "-Wextra", "-Werror", "-o", exe, src, ...args]);
      assert.equal(cc.status, 0, `${name}: ${cc.out}`);
      const p = run(exe, [], { LD_LIBRARY_PATH: "" });
      assert.equal(p.status, 0, `${name}: ${p.out}`);
      assert.match(p.stdout, /^VFB_E_TIMEOUT\|cannot reach brokerd's socket/, name);
      const ldd = run("ldd", [exe]);
      assert.equal(ldd.out.includes("libvfio-broker.so"), name === "shared", `${name}: ${ldd.out}`);
    }
  });

  it("the shared library exports only the public vfb_ functions", () => {
    const nm = run("nm", ["-D", "--defined-only", join(BUILD, "libvfio-broker.so")]);
    assert.equal(nm.status, 0, nm.out);
    const symbols = nm.stdout
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f.length === 3 && /^[TDBR]$/.test(f[1]!))
      .map((f) => f[2]!);
    assert.ok(symbols.includes("vfb_strerror"), symbols.join(" "));
    assert.deepEqual(
      symbols.filter((s) => !s.startsWith("vfb_")),
      [],
      "protobuf-c's generated descriptors and the private codec stay hidden",
    );
    const soname = run("objdump", ["-p", join(BUILD, "libvfio-broker.so")]);
    assert.match(soname.stdout, /SONAME\s+libvfio-broker\.so\.0/);
  });

  it("make install puts the header, the libraries and a .pc under DESTDIR/PREFIX", () => {
    const dest = join(tmp, "stage");
    const r = run("make", ["-s", "-C", CLIB, "install", `DESTDIR=${dest}`, "PREFIX=/opt/vfb"]);
    assert.equal(r.status, 0, r.out);
    for (const f of [
      "include/vfio-broker.h",
      "lib/libvfio-broker.so.0",
      "lib/libvfio-broker.so",
      "lib/libvfio-broker.a",
      "lib/pkgconfig/vfio-broker.pc",
    ])
      assert.ok(existsSync(join(dest, "opt/vfb", f)), f);
    const pc = readFileSync(join(dest, "opt/vfb/lib/pkgconfig/vfio-broker.pc"), "utf8");
    assert.match(pc, /^prefix=\/opt\/vfb$/m);
    assert.match(pc, /^libdir=\/opt\/vfb\/lib$/m);
    assert.doesNotMatch(pc, /clients\/c/, "an installed .pc points at the prefix only");
    // A prefix ld.so does not search: the .pc's rpath lets a program linked with it load the library.
    assert.match(pc, /^Libs: -L\$\{libdir\} -lvfio-broker -Wl,-rpath,\$\{libdir\}$/m);
    const usr = join(tmp, "stage-usr");
    const u = run("make", ["-s", "-C", CLIB, "install", `DESTDIR=${usr}`, "PREFIX=/usr"]);
    assert.equal(u.status, 0, u.out);
    const upc = readFileSync(join(usr, "usr/lib/pkgconfig/vfio-broker.pc"), "utf8");
    assert.doesNotMatch(upc, /rpath/, "PREFIX=/usr needs no rpath");
  });
});

describe("libvfio-broker's fd channel client against a real brokerd", () => {
  const PROBE = join(BUILD, "asan/vfb-fdprobe");

  /** "<code> <fds before> <fds after> <message>" from the probe, run as uid 65534. */
  async function probe(fdSocket: string, ticket: string) {
    const r = await runAs(PROBE, [fdSocket, ticket], {
      uid: NOBODY,
      env: { ASAN_OPTIONS: "detect_leaks=1" },
    });
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    const m = r.stdout.trim().match(/^(\S+) (\d+) (\d+) (.*)$/);
    assert.ok(m, r.stdout);
    return { code: m[1]!, before: Number(m[2]), after: Number(m[3]), message: m[4]! };
  }

  it("an unknown ticket is VFB_E_UNKNOWN_TICKET with brokerd's message; brokerd stopped is VFB_E_CONNECT", async () => {
    const built = run("make", ["-s", "-C", CLIB, "build/asan/vfb-fdprobe"]);
    assert.equal(built.status, 0, built.out);
    const b = await startBrokerd();
    try {
      const unknown = await probe(b.fdSocket, randomBytes(16).toString("hex"));
      assert.equal(unknown.code, "VFB_E_UNKNOWN_TICKET", JSON.stringify(unknown));
      assert.notEqual(unknown.message, "", "brokerd's message is kept");
      assert.equal(unknown.after, unknown.before, "no fd left behind");
      // A ticket the library refuses itself never reaches brokerd.
      const bad = await probe(b.fdSocket, "NOT-HEX");
      assert.equal(bad.code, "VFB_E_INVALID_ARGUMENT");
      assert.equal(bad.after, bad.before);
    } finally {
      await b.stop();
    }
    const gone = await probe(b.fdSocket, randomBytes(16).toString("hex"));
    assert.equal(gone.code, "VFB_E_CONNECT", JSON.stringify(gone));
    assert.match(gone.message, /is brokerd running/);
    assert.equal(gone.after, gone.before);
  });
});

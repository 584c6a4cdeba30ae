// The image carries libvfio-broker (deploy/Dockerfile): under /usr/local its header, shared and
// static libraries and vfio-broker.pc, found by the dynamic linker with Debian's libprotobuf-c1,
// and its examples vfb-map and vfb-driver-start, linked against the installed library without an
// rpath. A C program is compiled, shared and static, with nothing but `pkg-config --cflags --libs
// vfio-broker` against the image's own files (its root filesystem as the sysroot, as a cross build
// uses one), and runs. The image's vfb-map, as uid 1000 in a container with no network and no
// capabilities, maps sim0 BAR2 WC through a host brokerd's socket directory mounted read-only,
// writes and reads the bytes back. The image is built under a tag of this run's own, so that
// another checkout building the shared name meanwhile cannot change what is tested. Fails (never
// skips) without podman or runc.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { run, startBrokerd } from "../lib/brokerd.js";
import { buildBaseImages, buildImage, must, podman, requireTools } from "./support.js";

const TAG = `localhost/vfio-broker:clib-test-${process.pid}`;
const RUN = ["run", "--rm", "--user", "1000:1000", "--network", "none", "--read-only", "--cap-drop", "ALL"];
const FILES = [
  "/usr/local/include/vfio-broker.h",
  "/usr/local/lib/libvfio-broker.so",
  "/usr/local/lib/libvfio-broker.so.0",
  "/usr/local/lib/libvfio-broker.a",
  "/usr/local/lib/pkgconfig/vfio-broker.pc",
  "/usr/local/bin/vfb-map",
  "/usr/local/bin/vfb-driver-start",
];
const PROGRAM = `#include <stdio.h>
#include <string.h>
#include <vfio-broker.h>
int main(void) {
  printf("%d.%d.%d %s\\n", VFB_VERSION_MAJOR, VFB_VERSION_MINOR, VFB_VERSION_PATCH, vfb_error_name(VFB_E_CONNECT));
  return strcmp(vfb_error_name(VFB_E_TIMEOUT), "VFB_E_TIMEOUT") == 0 ? 0 : 1;
}
`;
const tmp = mkdtempSync(join(tmpdir(), "vfb-clib-image-"));
let root: string | undefined;

before(async () => {
  await requireTools("podman", "runc", "debootstrap", "npm");
  await buildBaseImages();
  await buildImage(TAG);
});

after(async () => {
  if (root) await podman(["image", "unmount", TAG]);
  await podman(["rmi", TAG]);
  rmSync(tmp, { recursive: true, force: true });
});

test("the image has libvfio-broker's files and examples under /usr/local; the dynamic linker finds the library and protobuf-c", async () => {
  const r = await must(
    "podman run ls + ldd",
    podman([
      ...RUN,
      TAG,
      "sh",
      "-c",
      `ls -L ${FILES.join(" ")} && ldd /usr/local/bin/vfb-map && ldconfig -p && vfb-driver-start --help`,
    ]),
  );
  const ldd = r.stdout.split("\n").filter((l) => l.includes("=>"));
  assert.match(r.stdout, /libvfio-broker\.so\.0 \([^)]*\) => \/usr\/local\/lib\/libvfio-broker\.so\.0/);
  assert.match(r.stdout, /libvfio-broker\.so\.0 => \/usr\/local\/lib\/libvfio-broker\.so\.0 /);
  assert.match(r.stdout, /libprotobuf-c\.so\.1 => \S+\/libprotobuf-c\.so\.1 /);
  assert.match(r.stdout, /^Usage: vfb-driver-start /m);
  assert.deepEqual(
    ldd.filter((l) => l.includes("not found")),
    [],
  );
  const pc = await must(
    "cat vfio-broker.pc",
    podman(["run", "--rm", TAG, "cat", "/usr/local/lib/pkgconfig/vfio-broker.pc"]),
  );
  assert.match(
    pc.stdout,
    /^prefix=\/usr\/local$/m,
    "the installed .pc names the image's prefix, not the build's",
  );
  assert.doesNotMatch(pc.stdout, /rpath|\/src\//, "no build-tree path or rpath in the installed .pc");
});

test("a C program compiles with pkg-config against the image's files, shared and static, and runs", async () => {
  root = (await must("podman image mount", podman(["image", "mount", TAG]))).stdout.trim();
  const env = {
    PKG_CONFIG_SYSROOT_DIR: root,
    // The image's .pc first; libprotobuf-c's (Requires.private) from the host's own directories.
    PKG_CONFIG_PATH: `${root}/usr/local/lib/pkgconfig`,
  };
  const flags = (await must("pkg-config", run("pkg-config", ["--cflags", "--libs", "vfio-broker"], { env })))
    .stdout;
  assert.match(flags, new RegExp(`-I${root}/usr/local/include`));
  assert.match(flags, new RegExp(`-L${root}/usr/local/lib`));
  const staticFlags = (
    await must("pkg-config --static", run("pkg-config", ["--static", "--libs", "vfio-broker"], { env }))
  ).stdout;
  assert.match(staticFlags, /-lprotobuf-c/, "the static link names protobuf-c (Requires.private)");
  const src = join(tmp, "prog.c");
  writeFileSync(src, PROGRAM);
  const cflags = flags.trim().split(/\s+/);
  await must(
    "cc (shared)",
    run("cc", ["-std=c11", "-Wall", "-Werror", "-o", join(tmp, "shared"), src, ...cflags]),
  );
  const lib = `${root}/usr/local/lib`;
  const staticArgs = staticFlags.trim().replace("-lvfio-broker", `${lib}/libvfio-broker.a`).split(/\s+/);
  await must(
    "cc (static libvfio-broker)",
    run("cc", [
      "-std=c11",
      "-Wall",
      "-Werror",
      "-o",
      join(tmp, "static"),
      src,
      `-I${root}/usr/local/include`,
      ...staticArgs,
    ]),
  );
  const shared = await must(
    "shared program",
    run(join(tmp, "shared"), [], { env: { LD_LIBRARY_PATH: lib } }),
  );
  assert.match(shared.stdout, /^\d+\.\d+\.\d+ VFB_E_CONNECT\n$/);
  const linked = await must("ldd", run("ldd", [join(tmp, "static")]));
  assert.doesNotMatch(linked.stdout, /libvfio-broker/, "the static program does not load the shared library");
  assert.equal((await must("static program", run(join(tmp, "static"), []))).stdout, shared.stdout);
});

test("the image's vfb-map, uid 1000 in a container, maps sim0 BAR2 WC through the mounted socket directory", async () => {
  const b = await startBrokerd();
  try {
    const r = await must(
      "podman run vfb-map",
      podman([
        ...RUN,
        ...["-v", `${b.dir}:/run/vfio-broker:ro`, TAG, "vfb-map", "--attr", "wc", "--length", "8K"],
        ...["--write", "0x100=cafef00d0badc0de", "--read", "0x100:8", "sim0", "BAR2"],
      ]),
    );
    assert.match(r.stdout, /^attribute: +requested WC, effective WC$/m, r.stdout);
    assert.match(r.stdout, /^0x00000100 {2}ca fe f0 0d 0b ad c0 de /m, r.stdout);
    // brokerd (on the host) read the client's identity from the kernel: uid 1000.
    const opened = readFileSync(b.journal, "utf8")
      .split("\n")
      .filter((l) => l.includes('"session.open"'))
      .map((l) => JSON.parse(l) as { uid?: number });
    assert.ok(
      opened.some((o) => o.uid === 1000),
      "brokerd journaled the container's session as uid 1000",
    );
  } finally {
    await b.stop();
  }
});

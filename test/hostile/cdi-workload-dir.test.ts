// Issue 18 row 12: a root container given the CDI device (deploy/cdi/vfio-broker.json) mounts the
// workload directory and must find there broker.sock and fd.sock and nothing else: not admin.sock
// (revoke, drain, reload), not handover.sock, not the lock, not the state store, and it must not
// be able to write the directory (replace broker.sock and catch other workloads' calls). Root in
// the container (uid 0, podman's default capabilities, runc), the shipped spec with only hostPath
// and the device name changed, as test/containers/cdi.test.ts installs it. A read-only bind mount
// still lets connect() through: the container maps sim0 BAR2 WC over both sockets. Prints its
// figures as a `hostile:` line. Fails (never skips) without podman or runc.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { buildBaseImages, buildImage, IMAGE, must, podman, requireTools } from "../containers/support.js";
import { type BrokerProcess, REPO, startBrokerd } from "../lib/brokerd.js";

const SPEC = join(REPO, "deploy/cdi/vfio-broker.json");
const NAME = `row12-${process.pid}`;
const INSTALLED = `/var/run/cdi/vfio-broker-${NAME}.json`;
let b: BrokerProcess | undefined;

before(async () => {
  await requireTools("podman", "runc", "debootstrap", "npm");
  await buildBaseImages();
  await buildImage();
  b = await startBrokerd();
});

after(async () => {
  rmSync(INSTALLED, { force: true });
  await b?.stop();
});

/** What the container tries, one JSON line each (a shell script: the image has sh and node). */
const PROBE = String.raw`
d=/run/vfio-broker
echo "{\"listing\":\"$(ls -A $d | tr '\n' ' ')\"}"
for f in admin.sock handover.sock brokerd.lock brokerd-state; do
  if [ -e "$d/$f" ]; then echo "{\"present\":\"$f\"}"; fi
done
# Anything of brokerd's own anywhere in the container's view (not /proc, /sys).
found=$(find / \( -path /proc -o -path /sys \) -prune -o \( -name admin.sock -o -name handover.sock -o -name brokerd.lock -o -name 'state.*.log' -o -name state.snap \) -print 2>/dev/null | tr '\n' ' ')
echo "{\"found\":\"$found\"}"
if touch $d/planted 2>/dev/null; then echo '{"wrote":true}'; rm -f $d/planted; else echo '{"wrote":false}'; fi
if mv $d/broker.sock $d/moved.sock 2>/dev/null; then echo '{"moved":true}'; mv $d/moved.sock $d/broker.sock; else echo '{"moved":false}'; fi
# The admin service, where an admin.sock is reachable: what its health check answers.
if [ -S $d/admin.sock ]; then
  node --input-type=module -e "
    import { createClient, Health } from '/opt/vfio-broker/proto/dist/index.js';
    const c = createClient(Health, 'unix:$d/admin.sock');
    try { const r = await c.check({ service: 'vfiobroker.v1.AdminService' }, { timeoutMs: 5000 }); console.log(JSON.stringify({ adminHealth: r.status })); }
    catch (e) { console.log(JSON.stringify({ adminHealth: String(e.message).slice(0, 80) })); }
    c.close();"
fi
out=$(vfio-broker map sim0 BAR2 --length 8192 --attr wc --write 0x100=cafef00d0badc0de --read 0x100:8 --json 2>&1) && echo "{\"mapped\":$out}" || echo "{\"mapFailed\":$(printf '%s' "$out" | head -c 300 | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.stringify(s)))')}"
`;

test("a root container given the CDI device reaches broker.sock and fd.sock, and nothing of brokerd's own", {
  timeout: 900_000,
}, async () => {
  assert.ok(b);
  const spec = JSON.parse(readFileSync(SPEC, "utf8"));
  spec.devices[0].name = NAME;
  spec.devices[0].containerEdits.mounts[0].hostPath = b.dir;
  mkdirSync("/var/run/cdi", { recursive: true });
  writeFileSync(INSTALLED, JSON.stringify(spec));
  const r = await must(
    "podman run --user 0:0 --device vfio-broker.io/socket",
    podman([
      "run",
      "--rm",
      "--user",
      "0:0",
      "--network",
      "none",
      "--device",
      `vfio-broker.io/socket=${NAME}`,
      IMAGE,
      "sh",
      "-c",
      PROBE,
    ]),
  );
  const seen: Record<string, unknown> = {};
  const present: string[] = [];
  for (const line of r.stdout.split("\n").filter((l) => l.startsWith("{"))) {
    const o = JSON.parse(line) as Record<string, unknown>;
    if (typeof o.present === "string") present.push(o.present);
    else Object.assign(seen, o);
  }
  const mapped = seen.mapped as { effectiveAttribute?: string; reads?: { hex: string }[] } | undefined;
  console.log(
    `hostile: ${JSON.stringify({
      test: "root container with the CDI device",
      mountOptions: spec.devices[0].containerEdits.mounts[0].options,
      listing: String(seen.listing ?? "").trim(),
      brokerdsOwnInReach: present,
      foundAnywhere: String(seen.found ?? "").trim(),
      adminHealth: seen.adminHealth ?? "no admin.sock",
      wroteTheDir: seen.wrote,
      movedBrokerSock: seen.moved,
      mappedWc: mapped?.effectiveAttribute === "wc" && mapped.reads?.[0]?.hex === "cafef00d0badc0de",
    })}`,
  );
  assert.equal(String(seen.listing).trim(), "broker.sock fd.sock", r.stdout);
  assert.deepEqual(present, [], "nothing of brokerd's own is in the workload dir");
  assert.equal(String(seen.found).trim(), "", "nor anywhere the container can see");
  assert.equal(seen.wrote, false, "the container cannot write the workload dir");
  assert.equal(seen.moved, false, "nor move broker.sock aside");
  assert.ok(mapped, `the container maps through the read-only mount:\n${r.stdout}\n${r.stderr}`);
  assert.equal(mapped.effectiveAttribute, "wc");
  assert.equal(mapped.reads?.[0]?.hex, "cafef00d0badc0de");
  // brokerd's own are where they belong, on the host.
  for (const f of ["admin.sock", "handover.sock", "brokerd.lock", "state"])
    assert.ok(existsSync(join(b.privateDir, f)), `${f} in ${b.privateDir}`);
});

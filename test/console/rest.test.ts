// The admin REST API against a real brokerd: every route with good input, bad input, no token and
// a wrong token; the token file; the OpenAPI document; 503 while brokerd is down. brokerd and
// vfio-broker-admin run as their own processes on temp dirs and are always stopped.
import assert from "node:assert/strict";
import { chmodSync, copyFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { parseCgroup } from "@vfio-broker/brokerd/identity/container";
import {
  type Admin,
  type Brokerd,
  poll,
  REPO,
  startAdmin,
  startBrokerd,
  tempDir,
} from "../observability/support/processes.js";
import { type HeldMapping, RawClient } from "../observability/support/raw-client.js";

const tmp = tempDir("vfio-rest-");
const policyFile = join(tmp.path, "policy.yaml");
let brokerd: Brokerd | undefined;
let admin: Admin | undefined;
const clients: RawClient[] = [];

before(async () => {
  copyFileSync(join(REPO, "deploy/policy/sim-local.yaml"), policyFile);
  chmodSync(policyFile, 0o644);
  brokerd = await startBrokerd(tmp.path, { extra: ["--policy", policyFile] });
  admin = await startAdmin(brokerd.adminSocket, tmp.path);
});

after(async () => {
  for (const c of clients) c.close();
  await admin?.stop();
  await brokerd?.stop();
  tmp.remove();
});

interface Res {
  status: number;
  body: Record<string, unknown> & { message?: string };
  headers: Headers;
}

async function call(
  method: string,
  path: string,
  opts: { body?: unknown; token?: string | null } = {},
): Promise<Res> {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? admin!.token : opts.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(new URL(path, admin!.url), {
    method,
    headers,
    body:
      opts.body === undefined
        ? undefined
        : typeof opts.body === "string"
          ? opts.body
          : JSON.stringify(opts.body),
  });
  const text = await res.text();
  let body: Res["body"] = {};
  try {
    body = JSON.parse(text);
  } catch {
    body = { text };
  }
  return { status: res.status, body, headers: res.headers };
}

function expectError(r: Res, status: number, pattern: RegExp): void {
  assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${JSON.stringify(r.body)}`);
  assert.equal(r.body.statusCode, status);
  assert.match(String(r.body.message), pattern);
}

async function newMapping(attr: "uc" | "wc" = "wc"): Promise<{ client: RawClient; m: HeldMapping }> {
  const client = await RawClient.connect(brokerd!.socket, brokerd!.fdSocket);
  clients.push(client);
  const m = await client.map("sim0", "BAR2", 4096n, attr);
  return { client, m };
}

/** Every API route, with input that is well-formed (ids may not exist). */
const ROUTES: [string, string, unknown?][] = [
  ["GET", "/api/v1/health"],
  ["GET", "/api/v1/devices"],
  ["GET", "/api/v1/devices/sim0"],
  ["POST", "/api/v1/devices/sim1/drain", {}],
  ["POST", "/api/v1/devices/sim1/undrain", {}],
  ["POST", "/api/v1/sim-devices", { deviceId: "simx", regions: [{ index: 0, size: "4096" }] }],
  ["DELETE", "/api/v1/sim-devices/simx"],
  ["GET", "/api/v1/sessions"],
  ["GET", "/api/v1/sessions/0123456789abcdef"],
  ["POST", "/api/v1/sessions/0123456789abcdef/revoke", {}],
  ["GET", "/api/v1/device-files"],
  ["GET", "/api/v1/device-files/1"],
  ["GET", "/api/v1/device-files/1/mappings"],
  ["GET", "/api/v1/mappings"],
  ["POST", "/api/v1/device-files/1/mappings/0/revoke", {}],
  ["GET", "/api/v1/policy"],
  ["POST", "/api/v1/policy/reload", {}],
];

test("the token file is created 0600 and the ready line names it", () => {
  const st = statSync(admin!.tokenFile);
  assert.equal(st.mode & 0o777, 0o600);
  assert.equal(admin!.ready.tokenFile, admin!.tokenFile);
  assert.ok(admin!.token.length >= 32);
  assert.ok(!admin!.stderr().includes(admin!.token), "the token must never be logged");
});

test("every /api route refuses a missing or wrong token with 401 and says where the token is", async () => {
  for (const [method, path, body] of ROUTES) {
    const none = await call(method, path, { body, token: null });
    expectError(none, 401, /Authorization: Bearer/);
    assert.match(String(none.body.message), new RegExp(admin!.tokenFile.replaceAll("/", "\\/")));
    assert.match(none.headers.get("www-authenticate") ?? "", /^Bearer/);
    expectError(await call(method, path, { body, token: `${admin!.token}x` }), 401, /wrong token/);
    expectError(await call(method, path, { body, token: "" }), 401, /Bearer/);
  }
});

test("the OpenAPI document describes every route with a schema; /docs and the console need no token", async () => {
  const doc = await call("GET", "/openapi.json", { token: null });
  assert.equal(doc.status, 200);
  const paths = doc.body.paths as Record<
    string,
    Record<string, { responses: Record<string, unknown>; security?: unknown }>
  >;
  for (const [method, path] of ROUTES) {
    const template = path
      .replace(/\/devices\/sim[01x]/, "/devices/{deviceId}")
      .replace(/\/sim-devices\/simx/, "/sim-devices/{deviceId}")
      .replace(/\/sessions\/[0-9a-f]{16}/, "/sessions/{sessionId}")
      .replace(/\/device-files\/1/, "/device-files/{deviceFileId}")
      .replace(/\/mappings\/0\//, "/mappings/{cookie}/");
    const op = paths[template]?.[method.toLowerCase()];
    assert.ok(op, `${method} ${template} is missing from /openapi.json`);
    assert.ok(op.responses["200"] || op.responses["201"], `${method} ${template} has no success schema`);
    assert.ok(
      op.responses["400"] && op.responses["401"] && op.responses["503"],
      `${method} ${template} lacks error schemas`,
    );
  }
  assert.deepEqual((doc.body.components as { securitySchemes: unknown }).securitySchemes, {
    bearer: { type: "http", scheme: "bearer" },
  });
  for (const page of ["/docs", "/", "/console.js", "/cookie-space.js", "/console.css"]) {
    const r = await fetch(new URL(page, admin!.url));
    assert.equal(r.status, 200, page);
    assert.match(r.headers.get("content-security-policy") ?? "", /script-src 'self'/);
  }
  expectError(await call("GET", "/../../etc/passwd", { token: null }), 404, /no route/);
});

test("health, policy and devices", async () => {
  const h = await call("GET", "/api/v1/health");
  assert.equal(h.status, 200);
  assert.equal(h.body.status, "SERVING");
  assert.match(String(h.body.startedUnixMs), /^\d+$/);
  assert.equal((h.body.policy as { source: string }).source, policyFile);
  const healthz = await call("GET", "/healthz", { token: null });
  assert.deepEqual(healthz.body, { admin: "ok", brokerd: "SERVING" });

  const p = await call("GET", "/api/v1/policy");
  assert.equal(p.status, 200);
  assert.equal(p.body.rules, 1);
  assert.match(String(p.body.digest), /^[0-9a-f]{16,}$/);

  const list = await call("GET", "/api/v1/devices");
  assert.equal(list.status, 200);
  const devices = list.body.devices as {
    id: string;
    regions: { name: string; size: string; attributes: string[] }[];
  }[];
  assert.deepEqual(
    devices.map((d) => d.id),
    ["sim0", "sim1"],
  );
  const bar2 = devices[0]!.regions.find((r) => r.name === "BAR2")!;
  assert.match(bar2.size, /^\d+$/);
  assert.ok(bar2.attributes.includes("UC") && bar2.attributes.includes("WC"), bar2.attributes.join());

  const one = await call("GET", "/api/v1/devices/sim0");
  assert.equal((one.body.device as { id: string }).id, "sim0");
  expectError(await call("GET", "/api/v1/devices/nosuch"), 404, /no device "nosuch".*sim0, sim1/);
  expectError(await call("GET", "/api/v1/devices/bad%20id"), 400, /deviceId.*expected a device id/);
  expectError(await call("GET", `/api/v1/devices/${"a".repeat(65)}`), 400, /deviceId/);
});

test("drain and undrain a device; drain revokes its mappings and the lease hears why", async () => {
  const { client } = await newMapping();
  const d = await call("POST", "/api/v1/devices/sim0/drain", { body: { reason: "maintenance" } });
  assert.equal(d.status, 200, JSON.stringify(d.body));
  // The client holds the fd: its pages stay booked until it acknowledges (CloseDevice) or exits.
  assert.deepEqual(d.body.revoked, {
    mappingsRevoked: 1,
    deviceFilesClosed: 1,
    sessionsEnded: 0,
    mappingsHeld: 1,
  });
  const dev = await call("GET", "/api/v1/devices/sim0");
  assert.equal((dev.body.device as { health: string }).health, "draining");
  await poll("the revocation on the client's lease", () =>
    client.revocations.find((r) => r.reason === "device-drain" && r.message === "maintenance"),
  );
  // Draining twice is fine; a body-less POST means no reason.
  assert.equal((await call("POST", "/api/v1/devices/sim0/drain")).status, 200);
  const u = await call("POST", "/api/v1/devices/sim0/undrain");
  assert.equal(u.status, 200);
  assert.deepEqual(u.body, { deviceId: "sim0", health: "healthy" });

  expectError(await call("POST", "/api/v1/devices/nosuch/drain", { body: {} }), 404, /nosuch/);
  expectError(await call("POST", "/api/v1/devices/nosuch/undrain"), 404, /nosuch/);
  expectError(
    await call("POST", "/api/v1/devices/sim0/drain", { body: { reason: "x", force: true } }),
    400,
    /"force" is not one of its fields/,
  );
  expectError(
    await call("POST", "/api/v1/devices/sim0/drain", { body: { reason: "x".repeat(201) } }),
    400,
    /reason/,
  );
  expectError(await call("POST", "/api/v1/devices/sim0/drain", { body: "{not json" }), 400, /JSON/i);
  expectError(
    await call("POST", "/api/v1/devices/sim0/drain", { body: { reason: 5 } }),
    400,
    /reason must be string/,
  );
});

test("sim device hotplug", async () => {
  const add = await call("POST", "/api/v1/sim-devices", {
    body: { deviceId: "simhot", regions: [{ index: 2, size: "65536", prefetchable: true }] },
  });
  assert.equal(add.status, 201, JSON.stringify(add.body));
  assert.equal((add.body.device as { id: string }).id, "simhot");
  assert.equal((await call("GET", "/api/v1/devices/simhot")).status, 200);
  const rm = await call("DELETE", "/api/v1/sim-devices/simhot");
  assert.equal(rm.status, 200, JSON.stringify(rm.body));
  assert.ok(rm.body.revoked);
  assert.equal((await call("GET", "/api/v1/devices/simhot")).status, 404);

  expectError(await call("POST", "/api/v1/sim-devices", { body: { deviceId: "x" } }), 400, /regions/);
  expectError(
    await call("POST", "/api/v1/sim-devices", {
      body: { deviceId: "x", regions: [{ index: 9, size: "4096" }] },
    }),
    400,
    /index/,
  );
  expectError(
    await call("POST", "/api/v1/sim-devices", {
      body: { deviceId: "x", regions: [{ index: 0, size: 4096 }] },
    }),
    400,
    /size must be string/,
  );
  expectError(
    await call("POST", "/api/v1/sim-devices", {
      body: { deviceId: "x", regions: [{ index: 0, size: "99999999999999999999" }] },
    }),
    400,
    /does not fit in 64 bits/,
  );
  expectError(await call("DELETE", "/api/v1/sim-devices/bad!id"), 400, /deviceId/);
});

test("sessions, device files and mappings list what a client holds; revoke one mapping", async () => {
  const { client, m } = await newMapping();
  const sessions = (await call("GET", "/api/v1/sessions")).body.sessions as {
    sessionId: string;
    identity: {
      uid: number;
      pid: number;
      gid: number;
      cgroup: string;
      containerId: string;
      containerRuntime: string;
      podUid: string;
      qosClass: string;
    };
    mappings: number;
    bytesMapped: string;
  }[];
  const s = sessions.find((x) => x.sessionId === client.sessionId);
  assert.ok(s, "the client's session is listed");
  assert.equal(s.identity.pid, process.pid);
  assert.equal(s.identity.uid, process.getuid!());
  // The container fields are what brokerd reads from this process's cgroup path ("" when none).
  const c = parseCgroup(s.identity.cgroup);
  assert.equal(s.identity.containerId, c.containerId ?? "");
  assert.equal(s.identity.containerRuntime, c.containerRuntime ?? "");
  assert.equal(s.identity.podUid, c.podUid ?? "");
  assert.equal(s.identity.qosClass, c.qosClass ?? "");
  assert.equal(s.mappings, 1);
  assert.equal(s.bytesMapped, "4096");
  const one = await call("GET", `/api/v1/sessions/${client.sessionId}`);
  assert.equal((one.body.session as { sessionId: string }).sessionId, client.sessionId);
  expectError(await call("GET", "/api/v1/sessions/0123456789abcdef"), 404, /no session/);
  expectError(await call("GET", "/api/v1/sessions/XYZ"), 400, /sessionId.*16 lower-case hex/);

  const dfId = m.deviceFileId.toString();
  const files = (await call("GET", `/api/v1/device-files?sessionId=${client.sessionId}`)).body
    .deviceFiles as {
    deviceFileId: string;
    deviceId: string;
  }[];
  assert.deepEqual(
    files.map((f) => [f.deviceFileId, f.deviceId]),
    [[dfId, "sim0"]],
  );
  assert.equal(
    ((await call("GET", "/api/v1/device-files?deviceId=sim1")).body.deviceFiles as unknown[]).length,
    0,
  );
  expectError(await call("GET", "/api/v1/device-files?sessionId=nothex"), 400, /sessionId/);
  expectError(await call("GET", "/api/v1/device-files?color=blue"), 400, /"color" is not one of its fields/);

  const dump = await call("GET", `/api/v1/device-files/${dfId}`);
  assert.equal(dump.status, 200);
  const entries = dump.body.entries as {
    start: string;
    last: string;
    kind: string;
    regionName: string;
    attribute: string;
    state: string;
  }[];
  const alias = entries.find((e) => e.kind === "mapping");
  assert.ok(alias);
  assert.equal(alias.start, m.cookie.toString());
  assert.equal(BigInt(alias.last) - BigInt(alias.start), 4095n);
  assert.deepEqual([alias.regionName, alias.attribute, alias.state], ["BAR2", "WC", "delivered"]);
  assert.ok(entries.some((e) => e.kind === "region" && e.regionName === "BAR0"));
  assert.ok(Number(dump.body.depth) >= 1);
  assert.ok(dump.body.nodes && typeof dump.body.nodes === "object");
  expectError(await call("GET", "/api/v1/device-files/999999"), 404, /no device file 999999/);
  expectError(await call("GET", "/api/v1/device-files/0"), 400, /deviceFileId/);
  expectError(await call("GET", "/api/v1/device-files/-1"), 400, /deviceFileId/);
  expectError(await call("GET", "/api/v1/device-files/99999999999999999999"), 400, /does not fit in 64 bits/);

  const dfMappings = (await call("GET", `/api/v1/device-files/${dfId}/mappings`)).body.mappings as {
    cookie: string;
  }[];
  assert.deepEqual(
    dfMappings.map((x) => x.cookie),
    [m.cookie.toString()],
  );
  expectError(await call("GET", "/api/v1/device-files/999999/mappings"), 404, /no device file/);
  const all = (await call("GET", "/api/v1/mappings?deviceId=sim0")).body.mappings as {
    cookie: string;
    deviceFileId: string;
    effectiveAttribute: string;
    requestedAttribute: string;
    prot: string;
    backing: string;
    state: string;
    sessionId: string;
    length: string;
    refs: number;
  }[];
  const mine = all.find((x) => x.sessionId === client.sessionId);
  assert.ok(mine);
  assert.deepEqual(
    [
      mine.cookie,
      mine.deviceFileId,
      mine.effectiveAttribute,
      mine.requestedAttribute,
      mine.prot,
      mine.backing,
      mine.state,
      mine.length,
      mine.refs,
    ],
    [m.cookie.toString(), dfId, "WC", "WC", "rw", "memfd", "delivered", "4096", 1],
  );
  const rv = (mine as unknown as { revocation: { kind: string; description: string; enforceable: boolean } })
    .revocation;
  assert.equal(rv.kind, "unmap-requested");
  assert.equal(rv.enforceable, true);
  assert.match(
    rv.description,
    /^asked to unmap \(a memfd mapping cannot be taken back\); the pages stay booked/,
  );
  expectError(await call("GET", "/api/v1/mappings?deviceId=%20"), 400, /deviceId/);

  const base = `/api/v1/device-files/${dfId}/mappings`;
  expectError(await call("POST", `${base}/abc/revoke`, { body: {} }), 400, /cookie.*decimal uint64/);
  expectError(
    await call("POST", `${base}/18446744073709551616/revoke`, { body: {} }),
    400,
    /does not fit in 64 bits/,
  );
  expectError(await call("POST", `${base}/12345/revoke`, { body: {} }), 404, /no mapping with cookie 12345/);
  expectError(
    await call("POST", "/api/v1/device-files/999999/mappings/0/revoke", { body: {} }),
    404,
    /no device file/,
  );
  expectError(
    await call("POST", `${base}/${m.cookie}/revoke`, { body: { graceMs: 5 } }),
    400,
    /grace_ms is only meaningful with enforce/,
  );
  expectError(
    await call("POST", `${base}/${m.cookie}/revoke`, { body: { enforce: true, graceMs: 3600001 } }),
    400,
    /graceMs/,
  );
  const r = await call("POST", `${base}/${m.cookie}/revoke`, { body: { reason: "rest test" } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(r.body.revoked, {
    mappingsRevoked: 1,
    deviceFilesClosed: 0,
    sessionsEnded: 0,
    mappingsHeld: 1,
  });
  await poll("the revocation on the lease", () =>
    client.revocations.find((x) => x.cookie === m.cookie && x.message === "rest test"),
  );
  // The client acknowledged (ReleaseMapping): nothing of it is left, held or live.
  await poll("the client's acknowledgement", async () => {
    const left = (await call("GET", "/api/v1/mappings")).body.mappings as { sessionId: string }[];
    return left.some((x) => x.sessionId === client.sessionId) ? undefined : true;
  });
  expectError(await call("POST", `${base}/${m.cookie}/revoke`, { body: {} }), 404, /no mapping/);
});

test("revoke a session", async () => {
  const { client } = await newMapping("uc");
  expectError(await call("POST", "/api/v1/sessions/not-a-session/revoke", { body: {} }), 400, /sessionId/);
  expectError(
    await call("POST", "/api/v1/sessions/0123456789abcdef/revoke", { body: {} }),
    404,
    /no session/,
  );
  const r = await call("POST", `/api/v1/sessions/${client.sessionId}/revoke`, { body: { reason: "bye" } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  // This process still has the fd and its session is gone: booked until it exits.
  assert.deepEqual(r.body.revoked, {
    mappingsRevoked: 1,
    deviceFilesClosed: 1,
    sessionsEnded: 1,
    mappingsHeld: 1,
  });
  const held = (await call("GET", "/api/v1/mappings")).body.mappings as {
    sessionId: string;
    state: string;
    revocation: { kind: string; revokedReason: string; holderPid: number };
  }[];
  const mine = held.find((x) => x.sessionId === client.sessionId);
  assert.deepEqual(
    [mine?.state, mine?.revocation.kind, mine?.revocation.revokedReason, mine?.revocation.holderPid],
    ["revoking", "unmap-requested", "revoked", process.pid],
  );
  await poll("the session to be gone", async () => {
    const s = (await call("GET", "/api/v1/sessions")).body.sessions as { sessionId: string }[];
    return s.some((x) => x.sessionId === client.sessionId) ? undefined : true;
  });
});

test("policy reload: a good file reloads, a bad one answers 422 with its errors and keeps the old policy", async () => {
  const before = (await call("GET", "/api/v1/policy")).body;
  const ok = await call("POST", "/api/v1/policy/reload");
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal(ok.body.digest, before.digest);
  writeFileSync(policyFile, "version: 1\nrules:\n  - name: broken\n    match: {}\n    devices: 42\n");
  const bad = await call("POST", "/api/v1/policy/reload", { body: {} });
  expectError(bad, 422, /policy file is invalid.*keeps the old policy/);
  assert.ok(
    Array.isArray(bad.body.errors) && (bad.body.errors as string[]).length > 0,
    JSON.stringify(bad.body),
  );
  assert.equal((await call("GET", "/api/v1/policy")).body.digest, before.digest);
  copyFileSync(join(REPO, "deploy/policy/sim-local.yaml"), policyFile);
  chmodSync(policyFile, 0o644);
  expectError(
    await call("POST", "/api/v1/policy/reload", { body: { now: true } }),
    400,
    /"now" is not one of its fields/,
  );
});

test("503 while brokerd is down, and back to 200 when it returns", async () => {
  await brokerd!.stop();
  for (const [method, path, body] of ROUTES) {
    const r = await call(method, path, { body });
    expectError(r, 503, /brokerd is unreachable/);
    assert.equal(r.headers.get("retry-after"), "1");
  }
  // Input is still validated first: bad input is a 400 even while brokerd is down.
  expectError(await call("GET", "/api/v1/devices/bad%20id"), 400, /deviceId/);
  expectError(await call("GET", "/healthz", { token: null }), 503, /unreachable/);
  // The console page still loads (and says brokerd is unreachable; see console.test.ts).
  assert.equal((await fetch(admin!.url)).status, 200);

  brokerd = await startBrokerd(tmp.path, { extra: ["--policy", policyFile] });
  await poll("the API to reach the restarted brokerd", async () => {
    const r = await call("GET", "/api/v1/devices");
    return r.status === 200 ? r : undefined;
  });
});

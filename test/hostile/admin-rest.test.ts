// The admin REST API against hostile local clients and the web pages an operator's browser opens
// (the browser itself: admin-browser.test.ts). brokerd and vfio-broker-admin run as their own
// processes; the attacker's requests are sent verbatim (support/raw-http.ts) by a separate
// process running as uid 65534 where we can (any local user can reach 127.0.0.1).
// - every spelling (support/spellings.ts) of every /api route in /openapi.json, with every
//   method, without the token: 401 (or 404/400 when nothing is routed), never data, and nothing
//   in brokerd changed (the victim holds a live mapping on sim0; the policy file was edited so a
//   reload would show);
// - Host must be a loopback name or an --allowed-host name (DNS rebinding) -> 421;
// - state-changing routes refuse a foreign Origin / Sec-Fetch-Site cross-site or same-site -> 403;
// - listening beyond loopback needs --allow-remote (exit 2 without it);
// - error messages quote what the caller sent and cut it to 64 characters.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { REPO } from "../observability/support/processes.js";
import {
  ADMIN_MAIN,
  api,
  assertUnchanged,
  describeChanges,
  leaks,
  portOf,
  type Stack,
  snapshot,
  startAdminWith,
  startStack,
} from "./support/admin-stack.js";
import { type RawRequest, type RawResponse, rawBatch, rawRequest, rawSocket } from "./support/raw-http.js";
import { ALL_METHODS, apiOperations, fill, STATE_CHANGING, spellings } from "./support/spellings.js";

const NOBODY = 65534;
const AGENT = join(REPO, "test/dist/hostile/agents/http-attacker.js");
let s: Stack;

before(async () => {
  s = await startStack("vfio-hostile-rest-");
});
after(async () => {
  await s?.stop();
});

const host = () => `127.0.0.1:${s.port}`;

/** Sends `requests` from a separate process as uid 65534 (as this process's uid when not root). */
async function attack(requests: RawRequest[]): Promise<RawResponse[]> {
  const asNobody = process.getuid?.() === 0;
  const child = spawn(process.execPath, [AGENT], {
    stdio: ["pipe", "pipe", "pipe"],
    ...(asNobody ? { uid: NOBODY, gid: NOBODY } : {}),
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => {
    out += d;
  });
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    err += d;
  });
  const done = new Promise<number | null>((resolve) => child.on("close", resolve));
  child.stdin.end(JSON.stringify({ port: s.port, requests }));
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  const code = await done;
  clearTimeout(timer);
  assert.equal(code, 0, `the attacker process failed (${code}): ${err}`);
  return JSON.parse(out) as RawResponse[];
}

const SAMPLE_BODIES: Record<string, unknown> = {
  // The 16 GiB simulated device of the issue.
  "/api/v1/sim-devices": { deviceId: "hostile16g", regions: [{ index: 0, size: String(16 * 2 ** 30) }] },
};
const bodyFor = (template: string) => JSON.stringify(SAMPLE_BODIES[template] ?? { reason: "hostile" });

async function operations() {
  const doc = (
    await rawRequest(s.port, { method: "GET", target: "/openapi.json", headers: { host: host() } })
  ).body;
  const ops = apiOperations(JSON.parse(doc));
  assert.ok(ops.length >= 17, `expected every /api route in /openapi.json, found ${ops.length}`);
  return ops;
}

/** An error answer: {statusCode, error, message} and nothing else, nothing of brokerd's state. */
function assertNoData(r: RawResponse, digest: string, what: string): void {
  if (r.body === "") return; // HEAD
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(r.body);
  } catch {
    assert.fail(`${what}: not a JSON error: ${r.body.slice(0, 200)}`);
  }
  const extra = Object.keys(j).filter((k) => !["statusCode", "error", "message"].includes(k));
  assert.deepEqual(extra, [], `${what}: the answer carries ${extra.join(", ")}: ${r.body.slice(0, 300)}`);
  const leak = leaks(r.body, digest);
  assert.equal(leak, undefined, `${what}: the answer shows ${leak}: ${r.body.slice(0, 300)}`);
}

test("every spelling of every /api route, with every method and no token: 401/404/400, no data, nothing changes", async () => {
  const before = await snapshot(s);
  const ops = await operations();
  const templates = [...new Set(ops.map((o) => o.template))];
  const reqs: (RawRequest & { label: string })[] = [];
  for (const t of templates)
    for (const sp of spellings(fill(t, s.ids), s.port))
      for (const method of ALL_METHODS) {
        const withBody = method === "POST" || method === "PUT" || method === "PATCH";
        reqs.push({
          label: `${method} ${sp.target} (${sp.label}, ${t})`,
          method,
          target: sp.target,
          headers: { host: host(), ...(withBody ? { "content-type": "application/json" } : {}) },
          ...(withBody ? { body: bodyFor(t) } : {}),
        });
      }
  // The same for the known bypass with an empty body and no Content-Type (what a no-cors fetch sends).
  for (const t of templates)
    for (const method of ["POST", "DELETE"])
      reqs.push({
        label: `${method} %61pi, no body`,
        method,
        target: fill(t, s.ids).replace("/api/", "/%61pi/"),
        headers: { host: host() },
      });

  const t0 = Date.now();
  const answers = await attack(reqs);
  const ms = Date.now() - t0;
  const byStatus: Record<number, number> = {};
  const bad: string[] = [];
  answers.forEach((r, i) => {
    byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
    if (![400, 401, 404].includes(r.status))
      bad.push(`${r.status} ${reqs[i]!.label}: ${r.body.slice(0, 160)}`);
  });
  const afterSweep = await snapshot(s);
  console.log(
    `admin sweep: ${reqs.length} requests (${templates.length} routes x ${ALL_METHODS.length} methods x ` +
      `~${Math.round(reqs.length / templates.length / ALL_METHODS.length)} spellings) in ${ms} ms as ` +
      `uid ${process.getuid?.() === 0 ? NOBODY : process.getuid?.()}; statuses ${JSON.stringify(byStatus)}; ` +
      `answered otherwise: ${bad.length}; brokerd state changed: ${describeChanges(before, afterSweep)}`,
  );
  assert.deepEqual(bad.slice(0, 20), [], `${bad.length} requests got through or failed oddly`);
  answers.forEach((r, i) => {
    assertNoData(r, before.policyDigest, reqs[i]!.label);
  });
  // 401 must say Bearer; no CORS header may ever let a page read an answer.
  for (const r of answers) {
    if (r.status === 401) assert.match(String(r.headers["www-authenticate"]), /^Bearer/);
    assert.equal(r.headers["access-control-allow-origin"], undefined);
  }
  assertUnchanged(before, afterSweep, "the sweep");
  assert.equal((await api(s.admin, "GET", "/api/v1/devices/hostile16g")).status, 404);
});

test("the spellings reach the routes: with the token /%61pi/v1/devices answers 200, so the 401s are the guard's", async () => {
  for (const target of ["/%61pi/v1/devices", "/a%70i/v1/devices", "/ap%69/v1/devices", "/api/v1/%64evices"]) {
    const r = await rawRequest(s.port, {
      method: "GET",
      target,
      headers: { host: host(), authorization: `Bearer ${s.admin.token}` },
    });
    assert.equal(r.status, 200, `${target}: ${r.body.slice(0, 200)}`);
  }
  // Absolute-form is refused whatever it names: one spelling of where a request goes.
  const abs = await rawRequest(s.port, {
    method: "GET",
    target: `http://${host()}/api/v1/devices`,
    headers: { host: host(), authorization: `Bearer ${s.admin.token}` },
  });
  assert.equal(abs.status, 400);
  assert.match(JSON.parse(abs.body).message, /is not a path/);
});

const TOKEN = () => ({ authorization: `Bearer ${s.admin.token}` });
const ALLOWED_HOSTS = () => [
  `127.0.0.1:${s.port}`,
  "127.0.0.1",
  `localhost:${s.port}`,
  "localhost",
  `LocalHost:${s.port}`,
  `[::1]:${s.port}`,
  "[::1]",
];
const REFUSED_HOSTS = () => [
  "evil.example",
  `evil.example:${s.port}`,
  `rebind.evil.example:${s.port}`,
  `localhost.evil.example:${s.port}`,
  `127.0.0.1.nip.io:${s.port}`,
  `localhost:${s.port === 1 ? 2 : 1}`,
  `127.0.0.1:${s.port}0`,
  "localhost.",
  `localhost.:${s.port}`,
  `0x7f000001:${s.port}`,
  `127.1:${s.port}`,
  `2130706433:${s.port}`,
  `[::ffff:127.0.0.1]:${s.port}`,
  `[0:0:0:0:0:0:0:1]:${s.port}`,
  `user@127.0.0.1:${s.port}`,
  `127.0.0.1:${s.port}/`,
  `127.0.0.1:${s.port}@evil.example`,
  "",
  "*",
];

test("Host must be a loopback name (no port or the listening port); any other gets 421 and no data", async () => {
  const before = await snapshot(s);
  const probes: RawRequest[] = [];
  const targets: [string, string][] = [
    ["GET", "/api/v1/devices"],
    ["GET", "/%61pi/v1/sessions"],
    ["GET", "/"],
    ["GET", "/healthz"],
    ["GET", "/openapi.json"],
    ["POST", `/api/v1/devices/sim0/drain`],
  ];
  for (const h of REFUSED_HOSTS())
    for (const [method, target] of targets) probes.push({ method, target, headers: { host: h, ...TOKEN() } });
  const answers = await rawBatch(s.port, probes, 4);
  answers.forEach((r, i) => {
    const p = probes[i]!;
    const what = `${p.method} ${p.target} Host ${JSON.stringify(p.headers!.host)}`;
    assert.equal(r.status, 421, `${what}: ${r.status} ${r.body.slice(0, 200)}`);
    const msg = JSON.parse(r.body).message as string;
    assert.match(msg, /is not a name of this console.*DNS rebinding.*--allowed-host NAME/);
    assert.ok(msg.includes(JSON.stringify(p.headers!.host)), `${what}: the message names the Host: ${msg}`);
    assertNoData(r, before.policyDigest, what);
  });
  // Two Host headers, or none (HTTP/1.0 allows that): refused too.
  const auth = `Authorization: Bearer ${s.admin.token}\r\n`;
  const two = await rawSocket(
    s.port,
    `GET /api/v1/devices HTTP/1.1\r\nHost: ${host()}\r\nHost: evil.example\r\n${auth}Connection: close\r\n\r\n`,
  );
  assert.equal(two.status, 400, two.text);
  const none10 = await rawSocket(s.port, `GET /api/v1/devices HTTP/1.0\r\n${auth}\r\n`);
  assert.equal(none10.status, 421, none10.text);
  const none11 = await rawSocket(s.port, `GET /api/v1/devices HTTP/1.1\r\n${auth}Connection: close\r\n\r\n`);
  assert.equal(none11.status, 400, none11.text);

  for (const h of ALLOWED_HOSTS()) {
    const r = await rawRequest(s.port, {
      method: "GET",
      target: "/api/v1/devices",
      headers: { host: h, ...TOKEN() },
    });
    assert.equal(r.status, 200, `Host ${h}: ${r.body.slice(0, 200)}`);
    const page = await rawRequest(s.port, { method: "GET", target: "/", headers: { host: h } });
    assert.equal(page.status, 200, `Host ${h}: the console page`);
  }
  assertUnchanged(before, await snapshot(s), "the Host probes");
});

test("--allowed-host adds names (NAME: no port or the listening port; NAME:PORT: that port only)", async () => {
  const admin = await startAdminWith(s.brokerd.adminSocket, join(s.tmp.path, "allowed"), [
    "--allowed-host",
    "Console.Example.test",
    "--allowed-host=proxy.example.test:8443",
  ]);
  try {
    const port = portOf(admin);
    const get = (h: string, extra: Record<string, string> = {}) =>
      rawRequest(port, {
        method: "GET",
        target: "/api/v1/devices",
        headers: { host: h, authorization: `Bearer ${admin.token}`, ...extra },
      });
    for (const h of [
      "console.example.test",
      `console.example.test:${port}`,
      "proxy.example.test:8443",
      `localhost:${port}`,
    ])
      assert.equal((await get(h)).status, 200, h);
    for (const h of [
      "console.example.test:9",
      "proxy.example.test",
      `proxy.example.test:${port}`,
      "x.console.example.test",
    ])
      assert.equal((await get(h)).status, 421, h);
    const refused = JSON.parse((await get("evil.example")).body).message as string;
    assert.match(refused, /--allowed-host \(console\.example\.test, proxy\.example\.test:8443\)/);

    // Those names are also the console's origins: a page served by the proxy may drain.
    const undrain = (origin: string, h = "console.example.test") =>
      rawRequest(port, {
        method: "POST",
        target: "/api/v1/devices/sim1/undrain",
        headers: { host: h, origin, authorization: `Bearer ${admin.token}`, "sec-fetch-site": "same-origin" },
      });
    assert.equal((await undrain("https://console.example.test")).status, 200);
    assert.equal((await undrain(`http://console.example.test:${port}`)).status, 200);
    assert.equal((await undrain("https://proxy.example.test:8443", "proxy.example.test:8443")).status, 200);
    assert.equal((await undrain("https://console.example.test:9")).status, 403);
    assert.equal((await undrain("https://proxy.example.test")).status, 403);
  } finally {
    await admin.stop();
  }
});

const FOREIGN_ORIGINS = () => [
  "http://evil.example",
  "https://evil.example",
  `http://evil.example:${s.port}`,
  "null",
  `http://localhost:${s.port === 3000 ? 3001 : 3000}`,
  `http://127.0.0.1:${s.port === 1 ? 2 : 1}`,
  "http://127.0.0.1",
  `http://127.0.0.1.evil.example:${s.port}`,
  `http://localhost.evil.example:${s.port}`,
  `http://[::1]:${s.port + 1}`,
  `file://`,
  `chrome-extension://abcdefghijklmnop`,
  `http://127.0.0.1:${s.port}/`,
  `http://user@127.0.0.1:${s.port}`,
  `ftp://127.0.0.1:${s.port}`,
  "",
];

test("every state-changing route refuses a foreign Origin or Sec-Fetch-Site cross-site/same-site with 403", async () => {
  const before = await snapshot(s);
  const ops = (await operations()).filter((o) => STATE_CHANGING.has(o.method));
  assert.ok(ops.length >= 7, `state-changing routes: ${ops.map((o) => o.template)}`);
  const own = `http://127.0.0.1:${s.port}`;
  const variants: Record<string, string | string[]>[] = [
    ...FOREIGN_ORIGINS().map((origin) => ({ origin })),
    ...FOREIGN_ORIGINS().map((origin) => ({ origin, "sec-fetch-site": "same-origin" })),
    { origin: [own, "http://evil.example"] },
    { "sec-fetch-site": "cross-site" },
    { "sec-fetch-site": "same-site" },
    { "sec-fetch-site": "CROSS-SITE" },
    { "sec-fetch-site": "sideways" },
    { origin: own, "sec-fetch-site": "cross-site" },
    { origin: own, "sec-fetch-site": "same-site" },
  ];
  const reqs: (RawRequest & { label: string })[] = [];
  for (const op of ops)
    for (const v of variants)
      for (const token of [true, false])
        for (const path of [fill(op.template, s.ids), fill(op.template, s.ids).replace("/api/", "/%61pi/")]) {
          const withBody = op.method !== "DELETE";
          reqs.push({
            label: `${op.method} ${path} ${JSON.stringify(v)}${token ? " with the token" : ""}`,
            method: op.method,
            target: path,
            headers: {
              host: host(),
              ...v,
              ...(token ? TOKEN() : {}),
              ...(withBody ? { "content-type": "application/json" } : {}),
            },
            ...(withBody ? { body: bodyFor(op.template) } : {}),
          });
        }
  const answers = await rawBatch(s.port, reqs, 8);
  const refusedBy: Record<string, number> = {};
  answers.forEach((r, i) => {
    const what = reqs[i]!.label;
    assert.equal(r.status, 403, `${what}: ${r.status} ${r.body.slice(0, 200)}`);
    const msg = JSON.parse(r.body).message as string;
    assert.match(
      msg,
      /^refused (POST|DELETE) (from Origin ".*"|marked Sec-Fetch-Site: ".*"): .*use the console at http:\/\/127\.0\.0\.1:\d+\//,
    );
    const kind = msg.includes("from Origin") ? "Origin" : "Sec-Fetch-Site";
    refusedBy[kind] = (refusedBy[kind] ?? 0) + 1;
    assertNoData(r, before.policyDigest, what);
  });
  console.log(
    `admin origin checks: ${reqs.length} state-changing requests (${ops.length} routes) refused with 403: ${JSON.stringify(refusedBy)}`,
  );
  assertUnchanged(before, await snapshot(s), "the cross-origin requests");

  // The console's own requests pass: its origin under any loopback name at this port, same-origin
  // or user-initiated fetch metadata, or no browser headers at all (curl).
  const undrain = (extra: Record<string, string>) =>
    rawRequest(s.port, {
      method: "POST",
      target: "/api/v1/devices/sim1/undrain",
      headers: { host: host(), ...TOKEN(), ...extra },
    });
  const accepted: Record<string, string>[] = [
    { origin: own, "sec-fetch-site": "same-origin" },
    { origin: `http://localhost:${s.port}` },
    { origin: `http://[::1]:${s.port}` },
    { origin: own.toUpperCase().replace("HTTP", "http") },
    { "sec-fetch-site": "none" },
    {},
  ];
  for (const ok of accepted) assert.equal((await undrain(ok)).status, 200, JSON.stringify(ok));
  // Reads are left to the token (a foreign page cannot read the answer: no CORS headers).
  const read = await rawRequest(s.port, {
    method: "GET",
    target: "/api/v1/devices",
    headers: { host: host(), ...TOKEN(), origin: "http://evil.example", "sec-fetch-site": "cross-site" },
  });
  assert.equal(read.status, 200);
  assert.equal(read.headers["access-control-allow-origin"], undefined);
});

function runAdmin(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [ADMIN_MAIN, "--admin-socket", s.brokerd.adminSocket, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

test("a non-loopback --listen is refused (exit 2) unless --allow-remote, which warns on stderr", async () => {
  const tokenFile = join(s.tmp.path, "remote", "admin-token");
  // None of these is ever bound: the configuration is refused before anything listens.
  for (const listen of [
    "0.0.0.0:0",
    "[::]:0",
    "192.0.2.10:8080",
    "[2001:db8::1]:8080",
    "admin.example.test:8080",
  ]) {
    const r = await runAdmin(["--listen", listen, "--token-file", tokenFile]);
    assert.equal(r.code, 2, `--listen ${listen}: exit ${r.code}; ${r.stderr}`);
    assert.match(r.stderr, /is not a loopback address, refused: .*clear text.*--allow-remote/);
  }
  const viaEnv = await runAdmin(["--token-file", tokenFile], { VFIO_BROKER_ADMIN_LISTEN: "0.0.0.0:0" });
  assert.equal(viaEnv.code, 2, viaEnv.stderr);
  const wildcard = await runAdmin(["--allowed-host", "*.example.com", "--token-file", tokenFile]);
  assert.equal(wildcard.code, 2);
  assert.match(wildcard.stderr, /no wildcards/);

  // Loopback addresses other than 127.0.0.1 need no flag.
  const lo = await startAdminWith(s.brokerd.adminSocket, join(s.tmp.path, "lo2"), [
    "--listen",
    "127.0.0.2:0",
  ]);
  await lo.stop();
  const remote = await startAdminWith(s.brokerd.adminSocket, join(s.tmp.path, "remote"), [
    "--listen",
    "0.0.0.0:0",
    "--allow-remote",
  ]);
  try {
    assert.match(
      remote.stderr(),
      /warning: --allow-remote: listening on 0\.0\.0\.0, not loopback.*clear text/,
    );
    const port = Number(/:(\d+)\/$/.exec(remote.url)![1]);
    const r = await rawRequest(port, {
      method: "GET",
      target: "/healthz",
      headers: { host: `127.0.0.1:${port}` },
    });
    assert.equal(r.status, 200);
  } finally {
    await remote.stop();
  }
});

test("error messages quote what the caller sent and cut it to 64 characters", async () => {
  const send = (req: Omit<RawRequest, "headers"> & { headers?: Record<string, string | string[]> }) =>
    rawRequest(s.port, { ...req, headers: { host: host(), ...TOKEN(), ...req.headers } });
  const message = (r: RawResponse) => JSON.parse(r.body).message as string;
  const long = "Q".repeat(3000);
  const cut = `"${"Q".repeat(64)}…"`;
  const assertCut = (r: RawResponse, status: number, what: string) => {
    assert.equal(r.status, status, `${what}: ${r.body.slice(0, 200)}`);
    const m = message(r);
    assert.ok(m.length < 600, `${what}: a ${m.length}-character message`);
    assert.ok(!m.includes("Q".repeat(65)), `${what}: more than 64 characters of the input: ${m}`);
    return m;
  };

  // Ids that fit are quoted whole.
  const id = `a${"b".repeat(63)}`;
  assert.ok(
    message(await send({ method: "GET", target: `/api/v1/devices/${id}` })).includes(`no device "${id}"`),
  );
  assert.match(
    message(await send({ method: "GET", target: "/api/v1/sessions/0123456789abcdef" })),
    /^no session "0123456789abcdef"/,
  );
  assert.match(
    message(
      await send({
        method: "POST",
        target: `/api/v1/device-files/${s.ids.deviceFileId}/mappings/99999999999999999999/revoke`,
      }),
    ),
    /^cookie "99999999999999999999" does not fit in 64 bits/,
  );
  // Longer input is cut.
  assert.ok(
    assertCut(await send({ method: "GET", target: `/api/v1/${long}` }), 404, "unrouted path").includes(
      `"/api/v1/${"Q".repeat(56)}…"`,
    ),
  );
  assertCut(await send({ method: "GET", target: `/api/v1/devices/%ZZ${long}` }), 400, "bad %-escape");
  assertCut(
    await send({ method: "GET", target: `/api/v1/devices/${long}/drain` }),
    414,
    "over-long parameter",
  );
  assert.ok(
    assertCut(await send({ method: "GET", target: "/", headers: { host: long } }), 421, "Host").includes(cut),
  );
  assert.ok(
    assertCut(
      await send({
        method: "POST",
        target: "/api/v1/devices/sim1/undrain",
        headers: { origin: `http://${long}` },
      }),
      403,
      "Origin",
    ).includes(`"http://${"Q".repeat(57)}…"`),
  );
  assert.ok(
    assertCut(
      await send({
        method: "POST",
        target: "/api/v1/devices/sim1/undrain",
        headers: { "sec-fetch-site": long },
      }),
      403,
      "Sec-Fetch-Site",
    ).includes(cut),
  );
  assert.ok(
    assertCut(
      await send({
        method: "POST",
        target: "/api/v1/devices/sim1/drain",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ [long]: 1 }),
      }),
      400,
      "unknown body field",
    ).includes(`${cut} is not one of its fields`),
  );
  assertCut(
    await send({
      method: "POST",
      target: "/api/v1/devices/sim1/drain",
      headers: { "content-type": `application/${long}` },
      body: "{}",
    }),
    415,
    "content type",
  );
  assertCut(
    await send({
      method: "POST",
      target: "/api/v1/devices/sim1/drain",
      headers: { "content-type": "application/json" },
      body: `{${long}`,
    }),
    400,
    "bad JSON",
  );
  // Control and invisible characters are escaped, not passed on (\x85 is NEL, a C1 control).
  const nel = message(await send({ method: "GET", target: "/", headers: { host: "evil\x85.example" } }));
  assert.ok(nel.includes('"evil\\u0085.example"'), nel);
});

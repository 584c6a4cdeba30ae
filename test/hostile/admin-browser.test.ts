// The admin console against hostile web pages, in a real browser: Debian's Chromium (driven by
// playwright-core) opens attacker pages while a token-holding operator client keeps polling.
// - http://127.0.0.1:OTHER/ (another port: "same-site", cross-origin) and http://attacker.test:OTHER/
//   (cross-site) fire drains, session/mapping revokes, policy reloads and sim-device deletes at
//   the admin, spelled /api/ and /%61pi/ /a%70i/ /ap%69/ (the bypass of the raw-URL check), as
//   no-cors fetches, form POSTs, beacons and preflighted DELETEs;
// - http://rebind.test:ADMIN/ is DNS rebinding: its first document comes from the attacker's
//   server (page.route sends that one request there), then the name points at the admin
//   (--host-resolver-rules), so its script is same-origin with the admin and could even read
//   answers; only the Host header gives it away. (Chromium's Private Network Access blocks a
//   rebinding whose first answer was a public address; one on this host or the LAN is not, nor
//   is any in browsers without it. Note that over plain http to a name that is not localhost,
//   browsers send no Sec-Fetch-* headers: Origin and Host are what is left to check.)
// Asserted: sim0 is not drained, the victim's mapping and session live, the policy was not
// reloaded, the admin log shows the attack arrived and was refused (403/421/401/404), and the
// operator's polls succeed >= 99 %. The console itself (same origin) can still drain and undrain.
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { after, before, test } from "node:test";
import type { Browser } from "playwright-core";
import { launchChromium } from "../lib/browser.js";
import {
  api,
  assertUnchanged,
  describeChanges,
  rssKiB,
  type Stack,
  snapshot,
  startStack,
} from "./support/admin-stack.js";
import { type AttackConfig, attackPage } from "./support/attack-page.js";

const ATTACK_MS = 5000;
let s: Stack;
let browser: Browser | undefined;
let attacker: Server | undefined;
let attackerPort = 0;

before(async () => {
  // --log: fastify logs every request with its Host and status, so the test can see the attack arrive.
  s = await startStack("vfio-hostile-browser-", ["--log"]);
  attacker = createServer((req, res) => {
    const cfg = JSON.parse(
      new URL(req.url ?? "/", "http://x").searchParams.get("cfg") ?? "null",
    ) as AttackConfig;
    if (!cfg) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(attackPage(cfg));
  });
  await new Promise<void>((resolve) => attacker!.listen(0, "127.0.0.1", resolve));
  attackerPort = (attacker.address() as { port: number }).port;
  // attacker.test and rebind.test are the attacker's names; both "resolve" to this host.
  browser = await launchChromium([
    "--host-resolver-rules=MAP attacker.test 127.0.0.1, MAP rebind.test 127.0.0.1",
  ]);
});

after(async () => {
  await browser?.close();
  await new Promise<void>((resolve) => (attacker ? attacker.close(() => resolve()) : resolve()));
  await s?.stop();
});

/** The admin's request log from line `from` on: {host, method, url, status} of each completed request. */
function adminRequests(from: number): { host: string; method: string; url: string; status: number }[] {
  const incoming = new Map<string, { host: string; method: string; url: string }>();
  const out: { host: string; method: string; url: string; status: number }[] = [];
  for (const line of s.admin.stdout.slice(from)) {
    let j: {
      reqId?: string;
      req?: { host: string; method: string; url: string };
      res?: { statusCode: number };
    };
    try {
      j = JSON.parse(line);
    } catch {
      continue;
    }
    if (!j.reqId) continue;
    if (j.req) incoming.set(j.reqId, j.req);
    const req = incoming.get(j.reqId);
    if (j.res && req) out.push({ ...req, status: j.res.statusCode });
  }
  return out;
}

test("cross-origin and DNS-rebinding pages cannot change brokerd; the operator's polls keep succeeding", async () => {
  const before = await snapshot(s);
  const { sessionId, deviceFileId, cookie } = s.ids;
  const spell = (p: string) => ["/api/", "/%61pi/", "/a%70i/", "/ap%69/"].map((a) => p.replace("/api/", a));
  const cfg = (bases: string[]): AttackConfig => ({
    bases,
    posts: [
      ...spell("/api/v1/devices/sim0/drain"),
      ...spell(`/api/v1/sessions/${sessionId}/revoke`),
      ...spell(`/api/v1/device-files/${deviceFileId}/mappings/${cookie}/revoke`),
      ...spell("/api/v1/policy/reload"),
    ],
    deletes: spell("/api/v1/sim-devices/sim0"),
    reads: spell("/api/v1/sessions"),
    durationMs: ATTACK_MS,
  });
  const adminPort = s.port;
  const targets = [`http://127.0.0.1:${adminPort}`, `http://localhost:${adminPort}`];
  const pageUrl = (origin: string, c: AttackConfig) =>
    `${origin}/attack.html?cfg=${encodeURIComponent(JSON.stringify(c))}`;

  const ctx = await browser!.newContext();
  const sameSite = await ctx.newPage();
  const crossSite = await ctx.newPage();
  const rebind = await ctx.newPage();
  // DNS rebinding: the first answer for rebind.test is the attacker's server (page.route sends
  // the document request there); every later request goes to where the name now points: the admin.
  const rebindOrigin = `http://rebind.test:${adminPort}`;
  await rebind.route(
    `${rebindOrigin}/`,
    (route) => route.continue({ url: pageUrl(`http://127.0.0.1:${attackerPort}`, cfg([""])) }),
    { times: 1 },
  );

  const rssBefore = rssKiB(s.admin.child.pid!);
  const logFrom = s.admin.stdout.length;
  let polls = 0;
  let ok = 0;
  let stop = false;
  const poller = (async () => {
    while (!stop) {
      polls++;
      try {
        const r = await api(s.admin, "GET", "/api/v1/devices");
        if (r.status === 200 && Array.isArray(r.body.devices)) ok++;
      } catch {
        // counted as a failure
      }
    }
  })();
  const t0 = Date.now();
  await Promise.all([
    sameSite.goto(pageUrl(`http://127.0.0.1:${attackerPort}`, cfg(targets))),
    crossSite.goto(pageUrl(`http://attacker.test:${attackerPort}`, cfg(targets))),
    rebind.goto(`${rebindOrigin}/`),
  ]);
  type Counts = {
    done: boolean;
    rounds: number;
    fetches: number;
    fetchErrors: number;
    deletes: number;
    deleteErrors: number;
    forms: number;
    beacons: number;
    reads: string[];
  };
  const results: Counts[] = [];
  for (const p of [sameSite, crossSite, rebind]) {
    await p.waitForFunction("window.__attack && window.__attack.done", undefined, {
      timeout: ATTACK_MS + 60_000,
    });
    results.push((await p.evaluate("window.__attack")) as Counts);
  }
  stop = true;
  await poller;
  const seconds = (Date.now() - t0) / 1000;
  // Form posts and beacons may still be in flight: let them land before looking at the state.
  await new Promise((r) => setTimeout(r, 500));
  const rssAfter = rssKiB(s.admin.child.pid!);
  await ctx.close();

  const attackReqs = adminRequests(logFrom).filter(
    (r) => !(r.method === "GET" && r.url === "/api/v1/devices"),
  );
  const statuses: Record<string, number> = {};
  for (const r of attackReqs) {
    const key = `${r.status}${r.host.startsWith("rebind.test") ? " (rebind.test)" : ""}`;
    statuses[key] = (statuses[key] ?? 0) + 1;
  }
  const [a, b, c] = results as [Counts, Counts, Counts];
  const afterAttack = await snapshot(s);
  console.log(
    `admin browser attack: ${seconds.toFixed(1)} s; page requests sent: same-site ${a.fetches + a.forms + a.beacons + a.deletes}, ` +
      `cross-site ${b.fetches + b.forms + b.beacons + b.deletes}, rebinding ${c.fetches + c.forms + c.beacons + c.deletes} ` +
      `(fetch errors ${a.fetchErrors + b.fetchErrors + c.fetchErrors}); admin saw ${attackReqs.length} attack requests, ` +
      `statuses ${JSON.stringify(statuses)}; operator polls ${ok}/${polls} ok (${((100 * ok) / polls).toFixed(2)} %), ` +
      `${(polls / seconds).toFixed(0)}/s; admin RSS ${(rssBefore / 1024).toFixed(1)} -> ${(rssAfter / 1024).toFixed(1)} MiB`,
  );
  console.log(`admin browser attack: brokerd state changed: ${describeChanges(before, afterAttack)}`);
  console.log(
    `admin browser attack: what the rebinding page could read: ${JSON.stringify(c.reads.map((x) => x.slice(0, 80)))}`,
  );

  // The attack arrived (else this test proves nothing) and every request of it was refused.
  assert.ok(attackReqs.length >= 100, `only ${attackReqs.length} attack requests reached the admin`);
  const accepted = attackReqs.filter((r) => r.status < 400);
  assert.deepEqual(accepted.slice(0, 10), [], `${accepted.length} attack requests were answered < 400`);
  assert.ok(
    attackReqs.some((r) => r.host.startsWith("rebind.test") && r.status === 421),
    "the rebinding page's requests must reach the admin and get 421",
  );
  // The rebinding page is same-origin with the admin: it could read an answer if there were one.
  for (const read of c.reads) assert.match(read, /^421 /, `the rebinding page read: ${read}`);
  for (const read of [...a.reads, ...b.reads])
    assert.match(read, /^unreadable/, `a cross-origin page read: ${read}`);
  // Nothing changed: sim0 healthy, the victim's session, device file and mapping alive, no reload.
  assertUnchanged(before, afterAttack, "the browser attack");
  assert.ok(polls >= 50, `only ${polls} operator polls`);
  assert.ok(ok / polls >= 0.99, `operator polls ${ok}/${polls} succeeded`);
});

test("the console itself (same origin, in the same browser) still drains and undrains", async () => {
  const ctx = await browser!.newContext();
  try {
    const p = await ctx.newPage();
    p.setDefaultTimeout(20_000);
    await p.goto(`${s.admin.url}#token=${encodeURIComponent(s.admin.token)}`);
    await p.getByRole("button", { name: "Drain sim1" }).click();
    await p.getByRole("dialog").waitFor();
    await p.getByLabel("Reason").fill("console drain");
    await p.getByRole("dialog").getByRole("button", { name: "Drain sim1" }).click();
    await p.locator("#status", { hasText: "sim1 drained" }).waitFor();
    const dev = await api(s.admin, "GET", "/api/v1/devices/sim1");
    assert.equal((dev.body.device as { health: string }).health, "draining");
    await p.getByRole("button", { name: "Undrain sim1" }).click();
    await p.locator("#status", { hasText: "sim1 is available again" }).waitFor();
    const back = await api(s.admin, "GET", "/api/v1/devices/sim1");
    assert.equal((back.body.device as { health: string }).health, "healthy");
    // Policy reload from the console, too.
    const reload = p.getByRole("button", { name: /reload/i });
    if ((await reload.count()) > 0) {
      await reload.first().click();
      await p.locator("#status", { hasText: "policy reloaded" }).waitFor();
    }
  } finally {
    await ctx.close();
  }
});

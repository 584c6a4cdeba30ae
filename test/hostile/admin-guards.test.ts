// The admin guards' decisions as pure functions (no processes): which Host and Origin values name
// this console, which state-changing requests a browser says came from another page, how caller
// strings are quoted, and the configuration flags behind them. The same rules are exercised
// against the real service in admin-rest.test.ts and admin-browser.test.ts.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseConfig } from "@vfio-broker/admin/config";
import { crossSiteRefusal } from "@vfio-broker/admin/guard/browser";
import { HostPolicy, isLoopbackListen, parseAuthority } from "@vfio-broker/admin/guard/hosts";
import { installGuards } from "@vfio-broker/admin/guard/index";
import { quoted } from "@vfio-broker/admin/quote";
import Fastify from "fastify";

const local = { address: "127.0.0.1", port: 8080 };
const hosts = new HostPolicy([
  parseAuthority("admin.example.com")!,
  parseAuthority("proxy.example.com:8443")!,
]);

test("Host: loopback names with no port or the listening port, the connection's address, configured names", () => {
  for (const h of [
    "localhost",
    "localhost:8080",
    "127.0.0.1",
    "127.0.0.1:8080",
    "[::1]",
    "[::1]:8080",
    "LOCALHOST:8080",
  ])
    assert.ok(hosts.hostAllowed(h, local), h);
  for (const h of ["admin.example.com", "admin.example.com:8080", "proxy.example.com:8443"])
    assert.ok(hosts.hostAllowed(h, local), h);
  for (const h of [
    undefined,
    "",
    "localhost:8081",
    "localhost:0",
    "localhost.",
    "evil.example",
    "localhost.evil.example",
    "127.0.0.1.nip.io",
    "admin.example.com:9",
    "x.admin.example.com",
    "proxy.example.com",
    "proxy.example.com:8080",
    "127.1",
    "0x7f000001",
    "[::ffff:127.0.0.1]",
    "user@localhost",
    "localhost:8080:8080",
    "localhost:99999",
  ])
    assert.ok(!hosts.hostAllowed(h, local), String(h));
  // Listening on 0.0.0.0 with --allow-remote: the address a request arrived on is its own name
  // (an IP literal cannot be rebound), IPv4-mapped or not.
  assert.ok(hosts.hostAllowed("10.1.2.3:8080", { address: "10.1.2.3", port: 8080 }));
  assert.ok(hosts.hostAllowed("10.1.2.3", { address: "::ffff:10.1.2.3", port: 8080 }));
  assert.ok(hosts.hostAllowed("[fe80::1]:8080", { address: "fe80::1", port: 8080 }));
  assert.ok(!hosts.hostAllowed("10.1.2.4:8080", { address: "10.1.2.3", port: 8080 }));
});

test("Origin: this console's own origins only (exact listening port), or configured names", () => {
  for (const o of [
    "http://127.0.0.1:8080",
    "http://localhost:8080",
    "http://[::1]:8080",
    "https://admin.example.com",
    "http://admin.example.com:8080",
    "https://proxy.example.com:8443",
  ])
    assert.ok(hosts.originAllowed(o, local), o);
  for (const o of [
    "null",
    "",
    "http://localhost",
    "http://localhost:3000",
    "https://127.0.0.1",
    "http://evil.example:8080",
    "http://127.0.0.1:8080/",
    "http://127.0.0.1:8080.evil.example",
    "file://",
    "ftp://127.0.0.1:8080",
    "https://admin.example.com:9",
    "https://proxy.example.com",
  ])
    assert.ok(!hosts.originAllowed(o, local), o);
  // On port 80 a default-port origin is the console's.
  assert.ok(hosts.originAllowed("http://localhost", { address: "127.0.0.1", port: 80 }));
});

test("state-changing requests: refused on a foreign Origin or Sec-Fetch-Site cross-site / same-site", () => {
  const refuse = (method: string, headers: Record<string, string | string[]>) =>
    crossSiteRefusal(method, headers, hosts, local);
  for (const m of ["POST", "PUT", "PATCH", "DELETE", "PROPFIND"]) {
    assert.match(
      refuse(m, { origin: "http://evil.example" }) ?? "",
      /^refused .* from Origin "http:\/\/evil.example"/,
    );
    assert.match(refuse(m, { "sec-fetch-site": "cross-site" }) ?? "", /Sec-Fetch-Site: "cross-site"/);
    assert.match(refuse(m, { "sec-fetch-site": "same-site" }) ?? "", /same-site includes other ports/);
    assert.ok(refuse(m, { origin: "null" }));
    assert.ok(refuse(m, { origin: ["http://127.0.0.1:8080", "http://evil.example"] }));
    assert.ok(refuse(m, { origin: "http://127.0.0.1:8080", "sec-fetch-site": "cross-site" }));
    assert.equal(refuse(m, { origin: "http://127.0.0.1:8080", "sec-fetch-site": "same-origin" }), undefined);
    assert.equal(refuse(m, { "sec-fetch-site": "none" }), undefined);
    assert.equal(refuse(m, {}), undefined, "no browser headers: curl, the CLI");
  }
  for (const m of ["GET", "HEAD", "OPTIONS"])
    assert.equal(refuse(m, { origin: "http://evil.example", "sec-fetch-site": "cross-site" }), undefined);
});

test("quoted(): JSON-quoted, invisible characters escaped, cut to 64 characters", () => {
  assert.equal(quoted("sim0"), '"sim0"');
  assert.equal(quoted("a".repeat(64)), `"${"a".repeat(64)}"`);
  assert.equal(quoted("a".repeat(65)), `"${"a".repeat(64)}…"`);
  assert.equal(quoted('x"\n\u202ey\u0085'), '"x\\"\\n\\u202ey\\u0085"');
  // The class, not a list: a tag character (past U+FFFF, a surrogate pair) and U+206A too.
  assert.equal(quoted("a\u{e0041}\u206a"), '"a\\udb40\\udc41\\u206a"');
});

test("listen and allowed-host configuration", () => {
  for (const h of [
    "127.0.0.1",
    "127.9.8.7",
    "localhost",
    "::1",
    "[::1]",
    "::ffff:127.0.0.1",
    "0:0:0:0:0:0:0:1",
  ])
    assert.ok(isLoopbackListen(h), h);
  for (const h of ["0.0.0.0", "::", "10.0.0.1", "::ffff:10.0.0.1", "example.com", "128.0.0.1"])
    assert.ok(!isLoopbackListen(h), h);

  const env = { VFIO_BROKER_ADMIN_TOKEN_FILE: "/tmp/t" };
  assert.throws(
    () => parseConfig(["--listen", "0.0.0.0:8080"], env),
    /not a loopback address.*--allow-remote/,
  );
  const remote = parseConfig(["--listen", "0.0.0.0:8080", "--allow-remote"], env);
  assert.ok(remote !== "help" && remote.allowRemote);
  const viaEnv = parseConfig([], {
    ...env,
    VFIO_BROKER_ADMIN_LISTEN: "[::]:8080",
    VFIO_BROKER_ADMIN_ALLOW_REMOTE: "1",
  });
  assert.ok(viaEnv !== "help" && viaEnv.allowRemote && viaEnv.host === "::");

  const c = parseConfig(
    ["--allowed-host", "Admin.Example.com", "--allowed-host=proxy.example.com:8443"],
    env,
  );
  assert.ok(c !== "help");
  assert.deepEqual(c.allowedHosts, [
    { name: "admin.example.com", port: null },
    { name: "proxy.example.com", port: 8443 },
  ]);
  const e = parseConfig([], { ...env, VFIO_BROKER_ADMIN_ALLOWED_HOSTS: "a.example, b.example:9000" });
  assert.ok(e !== "help");
  assert.deepEqual(
    e.allowedHosts.map((a) => a.name),
    ["a.example", "b.example"],
  );
  assert.throws(() => parseConfig(["--allowed-host", "*.example.com"], env), /no wildcards/);
  assert.throws(() => parseConfig(["--allowed-host", "http://x"], env), /expected NAME or NAME:PORT/);
  assert.throws(() => parseConfig(["--allowed-host", "x:99999"], env), /expected NAME or NAME:PORT/);
});

test("no /api route can be declared public; HEAD routes inherit their GET route's access", async () => {
  const app = Fastify();
  installGuards(app, { hosts: new HostPolicy(), token: "t".repeat(32), tokenFile: "/x" });
  app.get("/page", { config: { access: "public" } }, async () => "page");
  app.get("/secret", async () => "secret");
  assert.throws(
    () => app.get("/api/v1/open", { config: { access: "public" } }, async () => "oops"),
    /\/api routes always need the token/,
  );
  const inject = (method: "GET" | "HEAD", url: string) =>
    app.inject({ method, url, headers: { host: "127.0.0.1" } });
  assert.equal((await inject("HEAD", "/page")).statusCode, 200);
  assert.equal((await inject("HEAD", "/secret")).statusCode, 401);
  assert.equal((await inject("GET", "/%73ecret")).statusCode, 401);
  await app.close();
});

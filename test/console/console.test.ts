// The web console in a real browser (Debian's Chromium driven by playwright-core) against the
// real admin service and brokerd: enter the token, see the sim devices, watch a mapping made by
// the CLI (`vfio-broker map ... --hold`) appear with its cookie space, revoke it through the
// confirmation dialog, and check the CLI's lease got the revocation (it prints "revoked: ..." and
// exits 3). Then stop brokerd: the console must say so instead of breaking. Screenshots go to
// test-output/console/. Everything started here is stopped in after().
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Browser, Locator, Page } from "playwright-core";
import { launchChromium } from "../lib/browser.js";
import {
  type Admin,
  type Brokerd,
  poll,
  REPO,
  startAdmin,
  startBrokerd,
  tempDir,
} from "../observability/support/processes.js";

const OUT = join(REPO, "test-output/console");
const tmp = tempDir("vfio-console-");
let brokerd: Brokerd | undefined;
let admin: Admin | undefined;
let browser: Browser | undefined;
let page: Page | undefined;
const children: ChildProcess[] = [];

before(async () => {
  mkdirSync(OUT, { recursive: true });
  brokerd = await startBrokerd(tmp.path);
  admin = await startAdmin(brokerd.adminSocket, tmp.path);
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(20_000);
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await browser?.close();
  await admin?.stop();
  await brokerd?.stop();
  tmp.remove();
});

/** The text as rendered (cells separated by tabs), which is what a user reads. */
// biome-ignore lint/performance/useDomNodeTextContent: Playwright's Locator.innerText, not the DOM property
const shown = (l: Locator) => l.innerText();

/** `vfio-broker map sim0 BAR2 --length 4096 --attr wc --hold`, with its output and exit collected. */
function holdMapping(socket: string) {
  const child = spawn(
    process.execPath,
    [
      join(REPO, "clients/node/dist/cli.js"),
      "map",
      "sim0",
      "BAR2",
      "--length",
      "4096",
      "--attr",
      "wc",
      "--hold",
      "--socket",
      socket,
    ],
    { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] },
  );
  children.push(child);
  const out = { stdout: "", stderr: "", code: undefined as number | null | undefined };
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    out.stdout += d;
  });
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    out.stderr += d;
  });
  child.on("exit", (code) => {
    out.code = code;
  });
  return out;
}

test("the console asks for the token, then shows the sim devices", async () => {
  const p = page!;
  await p.goto(admin!.url);
  const input = p.getByLabel("Token", { exact: true });
  await input.waitFor();
  await input.fill("not-the-token");
  await p.getByRole("button", { name: "Use token" }).click();
  await p.locator("#token-error", { hasText: "wrong token" }).waitFor();
  await input.fill(admin!.token);
  await input.press("Enter");
  await p.locator("#devices-body code", { hasText: /^sim0$/ }).waitFor();
  await p.locator("#devices-body code", { hasText: /^sim1$/ }).waitFor();
  const text = await shown(p.locator("#devices-body"));
  assert.match(text, /BAR2: 16 MiB, prefetchable/);
  assert.match(await shown(p.locator("#summary")), /SERVING/);
  assert.equal(await p.evaluate('sessionStorage.getItem("vfio-broker-admin-token")'), admin!.token);
});

test("a mapping made by the CLI appears with its cookie space, and revoking it reaches the CLI's lease", async () => {
  const p = page!;
  const cli = holdMapping(brokerd!.socket);
  await poll("the CLI to hold its mapping", () =>
    cli.stdout.includes("holding the mapping") ? true : undefined,
  );
  assert.equal(cli.code, undefined, `the CLI exited early: ${cli.stdout}${cli.stderr}`);

  const revoke = p.getByRole("button", { name: "Revoke mapping" });
  await revoke.waitFor();
  const row = await shown(p.locator("#mappings-body tbody tr").first());
  assert.match(row, /sim0/);
  assert.match(row, /BAR2/);
  assert.match(row, /WC/);
  assert.match(row, /delivered/);
  // Its session, with the kernel-verified identity of the CLI process.
  const pid = /pid (\d+)/.exec(cli.stdout)?.[1];
  const sessions = await shown(p.locator("#sessions-body"));
  assert.match(sessions, /Revoke session/);
  if (pid) assert.match(sessions, new RegExp(`\\b${pid}\\b`));
  // Container and pod columns (this CLI runs in no container: a dash in each).
  assert.match(sessions, /Container/);
  assert.match(sessions, /Pod/);
  // The cookie space picture of its device file: regions, the WC alias, gaps.
  await p.locator("#cookie-space svg g[data-kind=mapping]").waitFor();
  assert.ok((await p.locator("#cookie-space svg g[data-kind=region]").count()) >= 2);
  assert.ok((await p.locator("#cookie-space svg g[data-kind=gap]").count()) >= 1);
  assert.match(
    await shown(p.locator("#cookie-space table")),
    /mapping\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+4 KiB\s+BAR2\s+WC\s+delivered/,
  );
  await p.screenshot({ path: join(OUT, "console.png"), fullPage: true });

  // Escape cancels: nothing is revoked.
  await revoke.click();
  const dialog = p.getByRole("dialog");
  await dialog.waitFor();
  await p.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
  assert.equal(cli.code, undefined);
  assert.equal(await revoke.count(), 1);

  // Confirm, with a reason.
  await revoke.click();
  await dialog.waitFor();
  assert.match(await shown(dialog), /Revoke the mapping sim0 BAR2 WC 4 KiB/);
  await p.getByLabel("Reason").fill("console test");
  await p.screenshot({ path: join(OUT, "console-confirm.png") });
  await dialog.getByRole("button", { name: "Revoke mapping" }).click();

  await poll("the CLI to report the revocation and exit 3", () =>
    cli.code !== undefined ? true : undefined,
  );
  assert.equal(cli.code, 3, `CLI output:\n${cli.stdout}${cli.stderr}`);
  assert.match(cli.stdout + cli.stderr, /revoked: /);
  await p.locator("#status", { hasText: "1 mapping revoked" }).waitFor();
  await p.locator("#mappings-body", { hasText: "No live mappings." }).waitFor();
});

test("the Devices table shows each device's mode; its button switches it, and a refusal names the holder", async () => {
  const p = page!;
  assert.match(await shown(p.locator("#devices-body")), /sysfs-wc/);
  const cli = holdMapping(brokerd!.socket); // holds sim0
  await poll("the CLI to hold its mapping", () =>
    cli.stdout.includes("holding the mapping") ? true : undefined,
  );
  const dialog = p.getByRole("dialog");
  await p.getByRole("button", { name: "Serve sim0 in vfio" }).click();
  await dialog.waitFor();
  await dialog.getByRole("button", { name: "Serve in vfio" }).click();
  await p.locator("#status", { hasText: /sim0 stays in mode sysfs-wc: it is in use: session/ }).waitFor();
  await p.getByRole("button", { name: "Serve sim1 in vfio" }).click();
  await dialog.waitFor();
  await p.getByLabel("Reason").fill("console test");
  await dialog.getByRole("button", { name: "Serve in vfio" }).click();
  await p.locator("#status", { hasText: "sim1 is served in mode vfio now (was sysfs-wc)" }).waitFor();
  await p.getByRole("button", { name: "Serve sim1 in sysfs-wc" }).waitFor();
});

test("#token= in the URL logs in without the form, and the token leaves the address bar", async () => {
  const ctx = await browser!.newContext();
  try {
    const p2 = await ctx.newPage();
    await p2.goto(`${admin!.url}#token=${encodeURIComponent(admin!.token)}`);
    await p2.locator("#devices-body code", { hasText: /^sim0$/ }).waitFor({ timeout: 20_000 });
    assert.ok(!p2.url().includes("token"), p2.url());
    assert.equal(await p2.locator("#token-section").isHidden(), true);
  } finally {
    await ctx.close();
  }
});

test("with brokerd stopped the console says it is unreachable instead of breaking", async () => {
  const p = page!;
  await brokerd!.stop();
  const banner = p.getByRole("alert");
  await banner.filter({ hasText: "brokerd is unreachable" }).waitFor();
  // Last known state stays on screen.
  await p.locator("#devices-body code", { hasText: /^sim0$/ }).waitFor();
  await p.screenshot({ path: join(OUT, "console-brokerd-down.png"), fullPage: true });
  brokerd = await startBrokerd(tmp.path);
  await banner.filter({ hasText: "brokerd is unreachable" }).waitFor({ state: "hidden", timeout: 30_000 });
});

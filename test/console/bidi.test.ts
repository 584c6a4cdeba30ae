// Text the console did not write, shown as what it is: a client whose cgroup name carries a bidi
// override (any user with a delegated cgroup subtree can name one so) must not make a row of the
// sessions table read as something else. brokerd refuses such characters in client-supplied
// strings (rpc/strings.ts), but a cgroup path comes from the kernel as the user named it, so the
// console marks every hidden or reordering character (services/admin/public/visible.js) in every
// cell. Runs the real admin service, brokerd and Chromium.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Browser, Page } from "playwright-core";
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

const { visible } = (await import(join(REPO, "services/admin/public/visible.js"))) as {
  visible(text: string): string;
};

test("visible(): bidi, zero-width, C1, control and separator characters are marked; other text is untouched", () => {
  assert.equal(visible("sim0 BAR2 é € 😀"), "sim0 BAR2 é € 😀");
  assert.equal(visible("a\u202eexe.txt"), "a⟦U+202E⟧exe.txt");
  assert.equal(visible("\u2066x\u2069"), "⟦U+2066⟧x⟦U+2069⟧");
  assert.equal(visible("a\u200bb\ufeff"), "a⟦U+200B⟧b⟦U+FEFF⟧");
  assert.equal(visible("a\u0085b\u009bc"), "a⟦U+0085⟧b⟦U+009B⟧c");
  assert.equal(visible("a\nb\u2028c\u2029d\u0000"), "a⟦U+000A⟧b⟦U+2028⟧c⟦U+2029⟧d⟦U+0000⟧");
  // Called twice (the global regex keeps no state between calls).
  assert.equal(visible("x\u202e"), "x⟦U+202E⟧");
  assert.equal(visible("x\u202e"), "x⟦U+202E⟧");
});

// The unified cgroup hierarchy (cgroup v2, alone or beside v1).
const CGROUP_ROOT = existsSync("/sys/fs/cgroup/unified/cgroup.procs")
  ? "/sys/fs/cgroup/unified"
  : "/sys/fs/cgroup";
const NAME = `vfio-console-${process.pid}-\u202egnp.exe`;
const tmp = tempDir("vfio-console-bidi-");
let brokerd: Brokerd | undefined;
let admin: Admin | undefined;
let browser: Browser | undefined;
let page: Page | undefined;
let holder: ChildProcess | undefined;

before(async () => {
  mkdirSync(join(CGROUP_ROOT, NAME));
  brokerd = await startBrokerd(tmp.path);
  admin = await startAdmin(brokerd.adminSocket, tmp.path);
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(20_000);
});

after(async () => {
  if (holder && holder.exitCode === null && holder.signalCode === null) holder.kill("SIGKILL");
  await browser?.close();
  await admin?.stop();
  await brokerd?.stop();
  tmp.remove();
  await poll("the cgroup to empty", () => {
    try {
      rmdirSync(join(CGROUP_ROOT, NAME));
      return true;
    } catch {
      return undefined;
    }
  }).catch(() => {});
});

test("a session whose cgroup name holds a bidi override is shown with the override marked, not applied", async () => {
  const p = page!;
  // The holder moves itself into the cgroup, then becomes the CLI holding a mapping.
  let out = "";
  holder = spawn(
    "sh",
    [
      "-c",
      'echo $$ > "$1/cgroup.procs" && shift && exec "$@"',
      "sh",
      join(CGROUP_ROOT, NAME),
      process.execPath,
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
      brokerd!.socket,
    ],
    { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] },
  );
  holder.stdout!.setEncoding("utf8").on("data", (d: string) => {
    out += d;
  });
  holder.stderr!.setEncoding("utf8").on("data", (d: string) => {
    out += d;
  });
  await poll("the CLI to hold its mapping", () => (out.includes("holding the mapping") ? true : undefined));
  await p.goto(admin!.url);
  const input = p.getByLabel("Token", { exact: true });
  await input.waitFor();
  await input.fill(admin!.token);
  await input.press("Enter");
  await p.locator("#sessions-body code", { hasText: "vfio-console-" }).waitFor();
  const cell = await p.locator("#sessions-body code", { hasText: "vfio-console-" }).textContent();
  console.log(`console: the cgroup cell reads ${JSON.stringify(cell)}`);
  assert.ok(cell?.includes("⟦U+202E⟧gnp.exe"), `the cell reads ${JSON.stringify(cell)}`);
  assert.ok(!cell?.includes("\u202e"), "the override character itself is in the page");
  const table = await p.locator("#sessions-body").textContent();
  assert.doesNotMatch(table ?? "", /[\u202a-\u202e\u2066-\u2069\u200b-\u200f]/);
});

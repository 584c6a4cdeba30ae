// Test support for the admin hostile suites: brokerd + vfio-broker-admin as real processes (the
// helpers of test/observability/support/processes.ts), a victim client that holds a live WC
// mapping on sim0 (so a drain, a session revoke or a mapping revoke would show on its lease), a
// token-holding REST caller, and a snapshot of everything an attack must not change.
import assert from "node:assert/strict";
import { appendFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  type Admin,
  type Brokerd,
  REPO,
  spawnReady,
  startBrokerd,
  tempDir,
} from "../../observability/support/processes.js";
import { type HeldMapping, RawClient } from "../../observability/support/raw-client.js";

export const ADMIN_MAIN = join(REPO, "services/admin/dist/main.js");

/** vfio-broker-admin on a free loopback port with extra flags (e.g. --allowed-host, --log). */
export async function startAdminWith(
  adminSocket: string,
  dir: string,
  extra: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<Admin> {
  const tokenFile = join(dir, "state", "admin-token");
  const p = await spawnReady(
    "vfio-broker-admin",
    [
      ADMIN_MAIN,
      "--admin-socket",
      adminSocket,
      "--listen",
      "127.0.0.1:0",
      "--token-file",
      tokenFile,
      ...extra,
    ],
    env,
  );
  return { ...p, url: String(p.ready.url), token: readFileSync(tokenFile, "utf8").trim(), tokenFile };
}

export const portOf = (admin: Admin): number => Number(new URL(admin.url).port);

/** Resident memory of a process in KiB (VmRSS). */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : Number.NaN;
}

export interface Res {
  status: number;
  body: Record<string, unknown>;
  text: string;
  headers: Headers;
}

/** The operator's own REST call: the token, no Origin (like curl). */
export async function api(admin: Admin, method: string, path: string, body?: unknown): Promise<Res> {
  const headers: Record<string, string> = { authorization: `Bearer ${admin.token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(new URL(path, admin.url), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = {};
  }
  return { status: res.status, body: parsed, text, headers: res.headers };
}

export interface Stack {
  tmp: { path: string; remove(): void };
  brokerd: Brokerd;
  admin: Admin;
  port: number;
  victim: RawClient;
  held: HeldMapping;
  /** Sample values for every {param} of the API, all naming the victim's live state. */
  ids: Record<string, string>;
  stop(): Promise<void>;
}

/**
 * brokerd, admin (with `adminArgs`) and a victim holding sim0 BAR2 (4 KiB, WC). The policy file
 * gets a comment appended after brokerd loaded it: its digest covers the text, so a policy
 * reload that an attack slips through shows as a changed digest.
 */
export async function startStack(prefix: string, adminArgs: string[] = []): Promise<Stack> {
  const tmp = tempDir(prefix);
  let brokerd: Brokerd | undefined;
  let admin: Admin | undefined;
  let victim: RawClient | undefined;
  const stop = async () => {
    victim?.close();
    await admin?.stop();
    await brokerd?.stop();
    tmp.remove();
  };
  try {
    brokerd = await startBrokerd(tmp.path);
    admin = await startAdminWith(brokerd.adminSocket, tmp.path, adminArgs);
    victim = await RawClient.connect(brokerd.socket, brokerd.fdSocket);
    const held = await victim.map("sim0", "BAR2", 4096n, "wc");
    appendFileSync(join(tmp.path, "sim-local.yaml"), "# hostile test: a reload would change the digest\n");
    return {
      tmp,
      brokerd,
      admin,
      port: portOf(admin),
      victim,
      held,
      ids: {
        deviceId: "sim0",
        sessionId: victim.sessionId,
        deviceFileId: held.deviceFileId.toString(),
        cookie: held.cookie.toString(),
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

export interface Snapshot {
  devices: string[];
  sessions: string[];
  mappings: string[];
  policyDigest: string;
  revocations: number;
}

/** What brokerd holds now, read with the token; plus what the victim's lease has heard. */
export async function snapshot(s: Stack): Promise<Snapshot> {
  const devices = (await api(s.admin, "GET", "/api/v1/devices")).body.devices as {
    id: string;
    health: string;
  }[];
  const sessions = (await api(s.admin, "GET", "/api/v1/sessions")).body.sessions as { sessionId: string }[];
  const mappings = (await api(s.admin, "GET", "/api/v1/mappings")).body.mappings as {
    deviceFileId: string;
    cookie: string;
  }[];
  const policy = (await api(s.admin, "GET", "/api/v1/policy")).body as { digest: string };
  return {
    devices: devices.map((d) => `${d.id}:${d.health}`).sort(),
    sessions: sessions.map((x) => x.sessionId).sort(),
    mappings: mappings.map((m) => `${m.deviceFileId}/${m.cookie}`).sort(),
    policyDigest: policy.digest,
    revocations: s.victim.revocations.length,
  };
}

/** What differs between two snapshots, in words, for the figures a test prints. */
export function describeChanges(before: Snapshot, after: Snapshot): string {
  const out: string[] = [];
  const gone = (a: string[], b: string[]) => a.filter((x) => !b.includes(x));
  if (gone(before.devices, after.devices).length || gone(after.devices, before.devices).length)
    out.push(`devices ${before.devices.join(",")} -> ${after.devices.join(",")}`);
  if (gone(before.sessions, after.sessions).length)
    out.push(`${gone(before.sessions, after.sessions).length} session(s) ended`);
  if (gone(before.mappings, after.mappings).length)
    out.push(`${gone(before.mappings, after.mappings).length} mapping(s) revoked`);
  if (before.policyDigest !== after.policyDigest) out.push("policy reloaded");
  if (after.revocations > before.revocations)
    out.push(`victim's lease heard ${after.revocations - before.revocations} revocation(s)`);
  return out.length ? out.join("; ") : "nothing";
}

/** The attack changed nothing: same devices (all healthy), sessions, mappings, policy; no revocation. */
export function assertUnchanged(before: Snapshot, after: Snapshot, what: string): void {
  assert.deepEqual(after, before, `${what} changed brokerd's state`);
  assert.ok(
    after.devices.every((d) => d.endsWith(":healthy")),
    `${what}: a device is not healthy: ${after.devices}`,
  );
  assert.equal(after.revocations, 0, `${what}: the victim's lease heard a revocation`);
}

/** Does an error answer carry anything of brokerd's state? (strings no request path contains) */
export function leaks(text: string, digest: string): string | undefined {
  for (const marker of [
    "sim1",
    "BAR",
    '"revoked"',
    '"identity"',
    "SERVING",
    '"devices"',
    '"sessions"',
    digest,
  ])
    if (marker && text.includes(marker)) return marker;
  return undefined;
}

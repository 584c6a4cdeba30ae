// State first, events after (issue 19): the core records a change through the ledger before it
// publishes it or replies, and nothing a listener does can undo it. In process, on the sim
// backend, with a real state store on a real file system that fills up (a 256 KiB tmpfs).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { PAGE_SIZE } from "@vfio-broker/native";
import { Broker } from "../broker.js";
import { identityOf } from "../core-tests/support.js";
import { SimBackend } from "../devices/sim.js";
import { BrokerError } from "../errors.js";
import type { PeerIdentity } from "../identity/peer.js";
import { parsePolicy } from "../policy/index.js";
import { Ledger } from "../state/ledger.js";
import { StateStore } from "../state/store.js";

const policyFile = new URL("../../../../deploy/policy/sim-local.yaml", import.meta.url);
const home = mkdtempSync(join(tmpdir(), "vfio-broker-statefirst-"));
const state = join(home, "state");
mkdirSync(state, { mode: 0o700 });
execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", state]);
after(() => {
  execFileSync("umount", ["-l", state]);
  rmSync(home, { recursive: true, force: true });
});

/** This test process, as a kernel-verified peer (a pidfd of its own). */
function identity(): PeerIdentity {
  return identityOf(process.pid, process.getuid!(), { gid: process.getgid!() });
}

function open(): { broker: Broker; store: StateStore } {
  const { store } = StateStore.open(state, "boot");
  const broker = new Broker({
    ledger: new Ledger(store),
    backends: [new SimBackend()],
    policy: parsePolicy(readFileSync(policyFile, "utf8"), "sim-local.yaml"),
    pageSize: BigInt(PAGE_SIZE),
    ticketTtlMs: 10_000,
    maxSessions: 64,
    maxAccessBytes: 4096,
    fdSocketPath: "/nonexistent/fd.sock",
  });
  return { broker, store };
}

const args = (deviceFileId: bigint, offset: bigint, attribute: "UC" | "WC") => ({
  deviceFileId,
  regionIndex: 2,
  offset,
  length: 4096n,
  attribute,
  prot: "rw" as const,
  allowFallback: false,
});

/** Fills the state store's file system until no byte is left; returns how to free it again. */
function fill(): () => void {
  const file = join(state, "filler");
  const fd = openSync(file, "w");
  try {
    for (const chunk of [Buffer.alloc(16 << 10), Buffer.alloc(1)])
      for (;;)
        try {
          writeSync(fd, chunk);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOSPC") break;
          throw e;
        }
  } finally {
    closeSync(fd);
  }
  return () => rmSync(file);
}

const storeFailed = (e: unknown) =>
  e instanceof BrokerError && e.code === "UNAVAILABLE" && e.reason === "store_failed";

describe("state first, events after", () => {
  it("a listener that throws neither undoes a grant nor reaches the caller", async () => {
    const { broker, store } = open();
    try {
      for (const ev of ["session.open", "devicefile.open", "mapping.create", "mapping.refs"] as const)
        broker.on(ev, () => {
          throw new Error(`a broken ${ev} listener`);
        });
      let later = 0;
      broker.on("mapping.create", () => later++);
      const s = broker.openSession(identity());
      const df = broker.openDevice(s, "sim0", "compact");
      const g = broker.createMapping(s, args(df.id, 0n, "WC"));
      assert.equal(later, 1, "a listener after the broken one still ran");
      assert.equal(df.mappings.get(g.mapping.cookie), g.mapping);
      assert.equal(store.model.mappingsOf(String(df.id)).length, 1, "the grant is recorded");
      const again = broker.createMapping(s, args(df.id, 0n, "WC"));
      assert.equal(again.mapping.refs, 2);
      assert.equal(store.model.mappingsOf(String(df.id))[0]!.refs, 2);
    } finally {
      await broker.close();
      store.close();
    }
  });

  it("a record that cannot be written refuses the call and leaves nothing behind", async () => {
    const { broker, store } = open();
    try {
      const s = broker.openSession(identity());
      const df = broker.openDevice(s, "sim0", "compact");
      const first = broker.createMapping(s, args(df.id, 0n, "WC"));
      /** What a refused call must leave as it was. */
      const view = () => ({
        usage: { ...broker.quotas.usage(`uid:${s.identity.uid}`) },
        pending: broker.pendingMappings,
        tickets: broker.tickets.size,
        refs: first.mapping.refs,
        cookies: [...df.mappings.keys()],
        deviceFiles: s.deviceFiles.size,
        sessions: broker.sessions.size,
      });
      /**
       * Calls fn until the full disk refuses it (the log's last page may take a record or two
       * first: those calls succeed and are recorded), then checks the refusal changed nothing.
       */
      const refusedCleanly = (what: string, fn: (i: number) => void) => {
        for (let i = 1; i < 64; i++) {
          const before = view();
          try {
            fn(i);
          } catch (e) {
            assert.ok(storeFailed(e), `${what}: expected UNAVAILABLE store_failed, got ${String(e)}`);
            assert.deepEqual(view(), before, `${what}: a refused call left something behind`);
            return;
          }
        }
        assert.fail(`${what} was never refused on a full disk`);
      };
      const free = fill();
      let cookies = 0;
      refusedCleanly("a new mapping", (i) => {
        broker.createMapping(s, args(df.id, BigInt(i) * 8192n, "WC"));
        cookies++;
      });
      refusedCleanly("another reference", () => broker.createMapping(s, args(df.id, 0n, "WC")));
      refusedCleanly("a device file", () => broker.openDevice(s, "sim0", "compact"));
      refusedCleanly("a session", () => {
        const id = identity();
        try {
          broker.openSession(id);
        } catch (e) {
          closeSync(id.pidfd);
          throw e;
        }
      });
      free();
      // Space back: the refused mapping's pages were never booked (UC on them is granted).
      const uc = broker.createMapping(s, args(df.id, BigInt(cookies + 1) * 8192n, "UC"));
      assert.equal(uc.mapping.effectiveAttribute, "UC");
      assert.equal(store.model.mappingsOf(String(df.id)).length, df.mappings.size);
    } finally {
      await broker.close();
      store.close();
    }
  });
});

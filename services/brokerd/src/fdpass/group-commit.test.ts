// The fd channel's fast path commits in groups: grants (and releases) of different connections in
// one turn of the event loop have their state records written in one write(2), and each reply, the
// fd with it, goes out only once that write is done; when it fails, the grant is given back and
// refused, its fd never sent. In process: a real Broker on a real state store (core-tests), the
// adapter's fast path over fake connections that note what the store held when each reply left.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Attribute, FdReplySchema, FdStatus, Prot } from "@vfio-broker/proto";
import {
  identityOf,
  openCore,
  openSession,
  PAGE,
  policy,
  rulesFor,
  stopCore,
  testScope,
} from "../core-tests/support.js";
import type { Session } from "../identity/session.js";
import { FdAdapter, type GrantPath } from "./adapter.js";
import type { FdConnection } from "./transport.js";

const { proc, dir } = testScope(after);

interface Sent {
  status: FdStatus;
  grpcCode: string;
  fds: number;
  /** The store's write(2)s when the reply left. */
  writes: number;
}

function connection(s: Session, writes: () => number, sent: Sent[]): FdConnection {
  return {
    peer: { uid: s.identity.uid, gid: s.identity.gid, pid: s.identity.pid },
    queued: 0,
    reply(bytes: Uint8Array, fds: number[] = []): Promise<void> {
      const r = fromBinary(FdReplySchema, bytes);
      sent.push({ status: r.status, grpcCode: r.grpcCode, fds: fds.length, writes: writes() });
      return Promise.resolve();
    },
    room: () => Promise.resolve(true),
    identify: () => {
      throw new Error("not here");
    },
    holdOpen() {},
    end() {},
  };
}

const grant = (dfId: bigint, offset: bigint) =>
  ({
    $typeName: "vfiobroker.v1.FdGrant",
    sessionToken: "",
    deviceFileId: dfId,
    regionIndex: 2,
    offset,
    length: PAGE,
    attribute: Attribute.WC,
    prot: Prot.READ_WRITE,
    allowFallback: false,
    requestId: "",
  }) as never;

test("fast-path grants of two connections in one turn: one write, each reply after it", async () => {
  const c = openCore(`${dir()}/state`, policy(rulesFor([1000])));
  try {
    const p = proc();
    const [s1, s2] = [
      openSession(c.broker, identityOf(p.pid, 1000)),
      openSession(c.broker, identityOf(p.pid, 1000)),
    ];
    const df1 = c.broker.openDevice(s1!, "simA", "compact");
    const df2 = c.broker.openDevice(s2!, "simA", "compact");
    const adapter = new FdAdapter(c.broker);
    const sent: Sent[] = [];
    const writes = () => c.store.stats.writes;
    const w0 = writes();
    const a0 = c.store.stats.appends;
    const encode: GrantPath["encode"] = (r) => toBinary(FdReplySchema, create(FdReplySchema, r));
    const path = (s: Session): GrantPath => ({ session: () => s, encode });
    await Promise.all([
      adapter.grant(connection(s1!, writes, sent), grant(df1.id, 0n), path(s1!)),
      adapter.grant(connection(s2!, writes, sent), grant(df2.id, PAGE), path(s2!)),
    ]);
    assert.deepEqual(
      sent.map((r) => [r.status, r.fds]),
      [
        [FdStatus.OK, 1],
        [FdStatus.OK, 1],
      ],
    );
    assert.equal(c.store.stats.appends - a0, 2, "one map.create each");
    assert.equal(writes() - w0, 1, "both records in one write(2)");
    for (const r of sent) assert.equal(r.writes, w0 + 1, "a reply left before its record was written");
    // A failing write: the grant is refused and given back, no fd leaves.
    const inner = c.store as unknown as { fd: number };
    const fd = inner.fd;
    inner.fd = 1 << 20;
    sent.length = 0;
    try {
      await adapter.grant(connection(s1!, writes, sent), grant(df1.id, 2n * PAGE), path(s1!));
    } finally {
      inner.fd = fd;
    }
    assert.deepEqual(
      sent.map((r) => [r.status, r.grpcCode, r.fds]),
      [[FdStatus.REFUSED, "UNAVAILABLE", 0]],
    );
    assert.equal(df1.mappings.size, 1, "the refused grant was given back");
  } finally {
    await stopCore(c);
  }
});

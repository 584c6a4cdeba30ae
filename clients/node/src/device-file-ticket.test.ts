// DeviceFile's gRPC grant path (CreateMapping + ticket) against a fake host (no brokerd): a ticket
// that a brokerd killed after recording its delivery left spent is followed by the same
// CreateMapping (same request id), whose new ticket delivers; other refusals are not retried, and
// a spent ticket is retried once only. The mmap is of a real memfd.
import assert from "node:assert/strict";
import { openSync, readdirSync } from "node:fs";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { closeFd, memfdCreate } from "@vfio-broker/native";
import {
  Attribute,
  BackingKind,
  CreateMappingResponseSchema,
  FdReplySchema,
  FdStatus,
  OpenDeviceResponseSchema,
  Prot,
} from "@vfio-broker/proto";
import { DeviceFile, type DeviceFileHost, type DeviceFile as DF } from "./device-file.js";
import { FdChannelError } from "./errors.js";
import type { FetchedFd } from "./fd-channel.js";

const COOKIE = 0x20000n;
const openFds = () => readdirSync("/proc/self/fd").length;

/** A host whose fetchFd fails with `failures` (in order) before it delivers an fd of `memfd`. */
function fakeHost(memfd: number, failures: string[]) {
  const requestIds: string[] = [];
  const tickets: string[] = [];
  const released: bigint[] = [];
  let n = 0;
  const host = {
    fdSocketPath: "/nonexistent/fd.sock",
    maxAccessBytes: 0,
    fdGrants: false,
    rpc: {
      createMapping: async (req: { requestId: string }) => {
        requestIds.push(req.requestId);
        return create(CreateMappingResponseSchema, {
          mapping: {
            cookie: COOKIE,
            regionIndex: 2,
            regionName: "BAR2",
            length: 4096n,
            effectiveAttribute: Attribute.WC,
            prot: Prot.READ_WRITE,
            backing: BackingKind.MEMFD,
          },
          ticket: `${++n}`.padStart(32, "0"),
        });
      },
      releaseMapping: async (req: { cookie: bigint }) => {
        released.push(req.cookie);
        return {};
      },
    },
    call: <T>(_m: string, fn: () => Promise<T>) => fn(),
    fetchFd: async (ticket: string): Promise<FetchedFd> => {
      tickets.push(ticket);
      const status = failures.shift();
      if (status) throw new FdChannelError(status, `refused (${status})`);
      return {
        fd: openSync(`/proc/self/fd/${memfd}`, "r+"),
        reply: create(FdReplySchema, {
          status: FdStatus.OK,
          cookie: COOKIE,
          length: 4096n,
          effectiveAttribute: Attribute.WC,
          prot: Prot.READ_WRITE,
          backing: BackingKind.MEMFD,
        }),
      };
    },
    deviceFileClosed: () => {},
  } as unknown as DeviceFileHost;
  const res = create(OpenDeviceResponseSchema, {
    deviceFileId: 1n,
    device: {
      id: "sim0",
      regions: [{ index: 2, name: "BAR2", size: 65536n, mappable: true, readable: true, writable: true }],
    },
    regions: [{ region: { index: 2, name: "BAR2", size: 65536n, mappable: true }, cookie: 0n }],
  });
  return { df: new DeviceFile(host, res) as DF, requestIds, tickets, released };
}

test("a spent ticket (UNKNOWN_TICKET, ALREADY_USED): CreateMapping again with the same request id, and its ticket delivers", async () => {
  for (const status of ["UNKNOWN_TICKET", "ALREADY_USED"]) {
    const memfd = memfdCreate("ticket", 4096);
    const before = openFds();
    const { df, requestIds, tickets, released } = fakeHost(memfd, [status]);
    const m = await df.map("BAR2", { length: 4096, attr: "wc" });
    assert.equal(m.cookie, COOKIE);
    assert.equal(requestIds.length, 2);
    assert.equal(requestIds[0], requestIds[1], "the retry carries the same request id");
    assert.notEqual(tickets[0], tickets[1], "the new ticket is presented");
    assert.deepEqual(released, []);
    m.write32(0, 0xfeedface);
    assert.equal(m.read32(0), 0xfeedface);
    assert.equal(openFds(), before, "no fd left behind");
    closeFd(memfd);
  }
});

test("a ticket refused for another reason is not retried; a spent one is retried once: the cookie is released, the error thrown", async () => {
  for (const failures of [["WRONG_PEER"], ["EXPIRED"], ["UNKNOWN_TICKET", "UNKNOWN_TICKET"]]) {
    const memfd = memfdCreate("ticket", 4096);
    const before = openFds();
    const { df, requestIds, released } = fakeHost(memfd, [...failures]);
    await assert.rejects(df.map("BAR2", { length: 4096, attr: "wc" }), (e: FdChannelError) => {
      assert.equal(e.status, failures.at(-1));
      return true;
    });
    assert.equal(requestIds.length, failures.length);
    assert.deepEqual(released, [COOKIE], "the undeliverable cookie is given back");
    assert.equal(openFds(), before, "no fd left behind");
    closeFd(memfd);
  }
});

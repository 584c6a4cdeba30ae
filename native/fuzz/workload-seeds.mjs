// workload-seeds.mjs: writes the workload-protocol seeds of the fdrecv corpus
// (corpus/fdrecv/workload-*): real frames of proto/vfiobroker/v1/workload.proto as a client and
// brokerd put them on fd.sock (a hello, a session's requests pipelined in one sendmsg, a hello
// split across two, a grant's reply with its fd, a batch's reply with 9 fds, events), in the input
// format at the top of fdrecv_fuzz.c. It owns only those files; libFuzzer mutates them from there.
// Run from the repository root after `npm run build`: node native/fuzz/workload-seeds.mjs
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { Attribute, FdStatus, Prot, WorkloadReplySchema, WorkloadRequestSchema } from "@vfio-broker/proto";

const DIR = join(dirname(fileURLToPath(import.meta.url)), "corpus", "fdrecv");
const req = (kind) => Buffer.from(toBinary(WorkloadRequestSchema, create(WorkloadRequestSchema, { kind })));
const rep = (r) => Buffer.from(toBinary(WorkloadReplySchema, create(WorkloadReplySchema, r)));
const frame = (b) => Buffer.concat([Buffer.from([0, 0, b.length >> 8, b.length & 0xff]), b]);
const grant = {
  deviceFileId: 3n,
  regionIndex: 2,
  length: 4096n,
  attribute: Attribute.WC,
  prot: Prot.READ_WRITE,
};

/** op byte: fds index (NFDS_TABLE: 0, 0, 1, 2, 3, 9, 64, MAX + 1), bit3 drain after; payload <= 255. */
function op(payload, fdsIndex = 0, drain = true) {
  if (payload.length > 255) throw new Error(`an op carries at most 255 bytes, not ${payload.length}`);
  return Buffer.concat([Buffer.from([fdsIndex | (drain ? 0x08 : 0), payload.length]), payload]);
}
/** flags 0x02: shutdown(SHUT_WR) at the end; maxfds selector 7 (the most); buffer selector, no rlimit. */
const input = (ops, buf = 0) => Buffer.concat([Buffer.from([0x02, 0x07, buf, 0x00]), ...ops]);

const hello = frame(
  req({ case: "hello", value: { version: 1, capabilities: ["events", "batch"], clientName: "seed" } }),
);
const seeds = {
  "workload-hello": input([op(hello)]),
  "workload-hello-split": input([op(hello.subarray(0, 6), 0, true), op(hello.subarray(6))]),
  "workload-session-pipelined": input([
    op(
      Buffer.concat([
        hello,
        frame(req({ case: "listDevices", value: {} })),
        frame(req({ case: "openDevice", value: { deviceId: "sim0", requestId: "r1" } })),
        frame(req({ case: "grant", value: grant })),
        frame(req({ case: "release", value: { deviceFileId: 3n, cookie: 8192n } })),
        frame(req({ case: "closeDevice", value: { deviceFileId: 3n } })),
      ]),
    ),
  ]),
  "workload-batch-request": input([
    op(
      frame(
        req({
          case: "batch",
          value: { releases: [{ deviceFileId: 3n, cookie: 4096n }], grants: [grant, grant, grant, grant] },
        }),
      ),
    ),
  ]),
  "workload-grant-reply-fd": input([
    op(
      frame(
        rep({
          status: FdStatus.OK,
          kind: { case: "grant", value: { status: FdStatus.OK, cookie: 4096n, length: 4096n } },
        }),
      ),
      2,
    ),
  ]),
  "workload-batch-reply-9-fds": input(
    [
      op(
        frame(
          rep({
            status: FdStatus.OK,
            kind: {
              case: "batch",
              value: {
                status: FdStatus.OK,
                items: Array.from({ length: 9 }, (_, i) => ({
                  status: FdStatus.OK,
                  cookie: BigInt(4096 * (i + 1)),
                  length: 4096n,
                })),
              },
            },
          }),
        ),
        5,
      ),
    ],
    1,
  ),
  "workload-events-refused": input([
    op(
      Buffer.concat([
        frame(
          rep({
            status: FdStatus.OK,
            kind: {
              case: "event",
              value: { kind: { case: "deviceHealth", value: { deviceId: "sim1", health: 2 } } },
            },
          }),
        ),
        frame(
          rep({
            status: FdStatus.OK,
            kind: {
              case: "event",
              value: {
                kind: {
                  case: "revocation",
                  value: { deviceFileId: 3n, cookie: 4096n, deviceId: "sim0", reason: "operator" },
                },
              },
            },
          }),
        ),
        frame(
          rep({
            status: FdStatus.REFUSED,
            message: "uid 65534 has 8 sessions of the 8",
            grpcCode: "RESOURCE_EXHAUSTED",
          }),
        ),
        frame(
          rep({
            status: FdStatus.OK,
            kind: {
              case: "event",
              value: { kind: { case: "leaseEnded", value: { reason: "lease-stalled" } } },
            },
          }),
        ),
      ]),
    ),
  ]),
};
for (const [name, bytes] of Object.entries(seeds)) writeFileSync(join(DIR, name), bytes);
console.log(`wrote ${Object.keys(seeds).length} seeds to ${DIR}`);

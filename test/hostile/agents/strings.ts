// Hostile agent: client-supplied strings as long as a request may carry (issue 18 row 5). Modes:
//   flood SOCKET SECONDS SESSIONS: each session loops OpenDevice with a fresh 60 KiB request_id,
//     then CloseDevice, as fast as brokerd answers (what brokerd remembers per session and writes
//     to its state store). Prints {phase:"done"} then {calls, codes}.
//   probe SOCKET FDSOCKET: every RPC that takes a string, and every fd-channel request, once with
//     each string field over its limit (and ids with characters they may not hold); prints
//     {results: {what: "CODE: message"}}.
import { randomBytes } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { closeFd, FdSocket } from "@vfio-broker/native";
import { FdReplySchema, FdRequestSchema, FdStatus, Layout } from "@vfio-broker/proto";
import { brokerClient, print } from "../../e2e/agents/raw.js";

const [mode, socket, arg2 = "10", arg3 = "4"] = process.argv.slice(2);
const BIG = 60 * 1024;
const big = (n = BIG) =>
  randomBytes(Math.ceil(n / 2))
    .toString("hex")
    .slice(0, n);

function codeOf(e: unknown): string {
  const c = (e as { code?: number }).code;
  return c === undefined ? "ERROR" : (grpc.status[c] ?? String(c));
}

async function flood(): Promise<void> {
  const end = Date.now() + Number(arg2) * 1000;
  const codes: Record<string, number> = {};
  let calls = 0;
  await Promise.all(
    Array.from({ length: Number(arg3) }, async () => {
      const rpc = brokerClient(socket!);
      try {
        await rpc.hello({ clientName: "strings-flood" });
        while (Date.now() < end) {
          try {
            const df = await rpc.openDevice({ deviceId: "sim0", layout: Layout.COMPACT, requestId: big() });
            await rpc.closeDevice({ deviceFileId: df.deviceFileId });
            codes.OK = (codes.OK ?? 0) + 1;
          } catch (e) {
            const c = codeOf(e);
            codes[c] = (codes[c] ?? 0) + 1;
          }
          calls++;
        }
      } catch (e) {
        const c = `hello:${codeOf(e)}`;
        codes[c] = (codes[c] ?? 0) + 1;
      } finally {
        rpc.close();
      }
    }),
  );
  print({ phase: "done" });
  print({ calls, codes });
}

async function probe(): Promise<void> {
  const fdSocket = arg2;
  const results: Record<string, string> = {};
  const rpc = brokerClient(socket!);
  const hello = await rpc.hello({ clientName: "strings-probe" });
  const df = await rpc.openDevice({ deviceId: "sim0", layout: Layout.COMPACT });
  const tryCall = async (what: string, f: () => Promise<unknown>) => {
    try {
      await f();
      results[what] = "OK";
    } catch (e) {
      results[what] = `${codeOf(e)}: ${String((e as { details?: string }).details ?? e).slice(0, 200)}`;
    }
  };
  const page = {
    deviceFileId: df.deviceFileId,
    regionIndex: 2,
    offset: 0n,
    length: 4096n,
    attribute: 2,
    prot: 2,
  };
  await tryCall("Hello.client_name", () => brokerClient(socket!).hello({ clientName: big() }));
  await tryCall("Hello.client_name RLO", () =>
    brokerClient(socket!).hello({ clientName: "victim\u202egnp.exe" }),
  );
  await tryCall("Hello.client_version", () => brokerClient(socket!).hello({ clientVersion: big() }));
  await tryCall("Hello.resume_token", () => brokerClient(socket!).hello({ resumeToken: big() }));
  await tryCall("GetDevice.device_id", () => rpc.getDevice({ deviceId: big() }));
  await tryCall("GetDevice.device_id U+2028", () => rpc.getDevice({ deviceId: "sim0\u2028x" }));
  await tryCall("OpenDevice.device_id", () => rpc.openDevice({ deviceId: big() }));
  await tryCall("OpenDevice.request_id", () => rpc.openDevice({ deviceId: "sim0", requestId: big() }));
  await tryCall("OpenDevice.request_id newline", () =>
    rpc.openDevice({ deviceId: "sim0", requestId: "a\nb" }),
  );
  await tryCall("CreateMapping.request_id", () => rpc.createMapping({ ...page, requestId: big() }));
  const md = new grpc.Metadata();
  md.set("vfio-broker-session", big(6000));
  await tryCall("metadata vfio-broker-session", () => rpc.listDevices({}, { metadata: md }));
  // The fd channel: a frame holds at most 3072 bytes, so the strings there are just over their limits.
  const sock = await FdSocket.connect(fdSocket!);
  const fdTry = async (what: string, req: Parameters<typeof create<typeof FdRequestSchema>>[1]) => {
    await sock.send(toBinary(FdRequestSchema, create(FdRequestSchema, req)));
    const m = await sock.recv({ maxBytes: 8192, maxFds: 32 });
    if (!m) {
      results[what] = "closed";
      return;
    }
    for (const fd of m.fds) closeFd(fd);
    const r = fromBinary(FdReplySchema, m.data);
    results[what] = `${FdStatus[r.status]}: ${r.message.slice(0, 200)}`;
  };
  const token = hello.resumeToken;
  await fdTry("FdRequest.ticket", { ticket: big(2000) });
  await fdTry("FdGrant.session_token", { grant: { ...page, sessionToken: big(100) } });
  await fdTry("FdGrant.request_id", { grant: { ...page, sessionToken: token, requestId: big(1000) } });
  await fdTry("FdRelease.session_token", {
    release: { sessionToken: `${token}x`, deviceFileId: df.deviceFileId },
  });
  await fdTry("FdBatch.session_token", { batch: { sessionToken: big(40) } });
  await fdTry("FdBatch.grants.request_id", {
    batch: { sessionToken: token, grants: [{ ...page, sessionToken: token, requestId: "x y" }] },
  });
  // Still served after all that: a good grant on the same connection.
  await fdTry("FdGrant (valid)", { grant: { ...page, sessionToken: token, requestId: "ok-1" } });
  sock.close();
  rpc.close();
  print({ results });
}

if (mode === "flood") await flood();
else await probe();
process.exit(0);

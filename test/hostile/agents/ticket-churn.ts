// Hostile agent: ticket churn (docs/security.md, "tickets in brokerd's memory"). `sessions` gRPC
// sessions of this uid, each looping CreateMapping (a ticket), FetchFd on the fd channel (the ticket
// spent), the ticket presented again (a replay, told ALREADY_USED while brokerd remembers it), and
// ReleaseMapping, as fast as brokerd answers, every step allowed by the policy. Each loop leaves one
// spent ticket brokerd may remember. Stops after `count` tickets of this process, or `seconds`;
// then presents its first ticket again. argv: brokerSocket fdSocket count seconds sessions.
// Prints {tickets, fetched, replays: {STATUS: n}, releases, firstReplay: STATUS, errors}.
import { codeOf, present, print, rawSession } from "../../e2e/agents/raw.js";

const [socket, fdSocket, countArg = "3000", seconds = "60", sessionsArg = "4"] = process.argv.slice(2);
const count = Number(countArg);
const end = Date.now() + Number(seconds) * 1000;
let started = 0;
let tickets = 0;
let first = "";
let fetched = 0;
let releases = 0;
const replays: Record<string, number> = {};
const errors: string[] = [];

async function churn(k: number): Promise<void> {
  const s = await rawSession(socket!, `ticket-churn-${k}`);
  try {
    for (let i = 0; Date.now() < end && started < count; i++) {
      started++;
      const r = await s.rpc.createMapping(s.page(i % 16));
      tickets++;
      if (first === "") first = r.ticket;
      const got = await present(fdSocket!, r.ticket);
      if (got.status === "OK" && got.fds === 1) fetched++;
      const again = await present(fdSocket!, r.ticket);
      replays[again.status] = (replays[again.status] ?? 0) + 1;
      await s.rpc.releaseMapping({ deviceFileId: s.df.deviceFileId, cookie: r.mapping!.cookie });
      releases++;
    }
  } catch (e) {
    if (errors.length < 5) errors.push(`${codeOf(e)}: ${(e as Error).message.slice(0, 160)}`);
  } finally {
    s.rpc.close();
  }
}

await Promise.all(Array.from({ length: Number(sessionsArg) }, (_, k) => churn(k)));
const firstReplay = first === "" ? "" : (await present(fdSocket!, first)).status;
print({ tickets, fetched, replays, releases, firstReplay, errors });
process.exit(0);

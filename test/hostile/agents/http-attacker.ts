// A hostile local client of the admin REST API: any local user can connect to 127.0.0.1, so the
// tests run this as uid 65534 (docs/design.md §10: the attacker is another uid). It reads
// {"port":N,"requests":[RawRequest...],"concurrency":N} on stdin, sends every request verbatim
// (support/raw-http.ts) and prints one JSON array of {status, body} (bodies cut to 2 KiB) on stdout.

import type { RawRequest } from "../support/raw-http.js";
import { rawBatch } from "../support/raw-http.js";

const chunks: Buffer[] = [];
for await (const c of process.stdin) chunks.push(c as Buffer);
const job = JSON.parse(Buffer.concat(chunks).toString()) as {
  port: number;
  requests: RawRequest[];
  concurrency?: number;
};
const answers = await rawBatch(job.port, job.requests, job.concurrency ?? 8);
process.stdout.write(
  JSON.stringify(answers.map((a) => ({ status: a.status, body: a.body.slice(0, 2048), headers: a.headers }))),
);

// Test support: HTTP requests the way an attacker writes them, not the way fetch() would. The
// request target goes on the wire byte for byte (no URL normalization: "%61", "..", "//", "\",
// "#", absolute-form and "*" all survive), the Host header is whatever the caller says (or
// absent), and nothing is added but Content-Length. node:http only checks that the target has
// no spaces or control characters.
import { type Agent, request } from "node:http";
import { connect } from "node:net";

export interface RawRequest {
  method: string;
  /** Sent verbatim as the request target. */
  target: string;
  /** Header name -> value; "host" is not filled in for you (pass undefined to send none). */
  headers?: Record<string, string | string[]>;
  body?: string;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * One request to 127.0.0.1:port, on a connection of its own unless `agent` is given (a request
 * the server's parser rejects closes its connection). A reset resolves as status 0.
 */
export function rawRequest(port: number, req: RawRequest, agent?: Agent): Promise<RawResponse> {
  return new Promise((done) => {
    let settled = false;
    const resolve = (r: RawResponse) => {
      if (!settled) done(r);
      settled = true;
    };
    const headers: Record<string, string | string[]> = { ...req.headers };
    if (req.body !== undefined) headers["content-length"] = String(Buffer.byteLength(req.body));
    let r: ReturnType<typeof request>;
    try {
      r = request({
        host: "127.0.0.1",
        port,
        method: req.method,
        path: req.target,
        headers,
        setHost: false,
        agent: agent ?? false,
      });
    } catch (e) {
      resolve({ status: 0, headers: {}, body: `client refused to send it: ${(e as Error).message}` });
      return;
    }
    r.setTimeout(10_000, () => r.destroy(new Error("timeout")));
    r.on("response", (res) => {
      // A HEAD answer has no body; a parser-level 400 may send one anyway, which node then
      // reports as a parse error on the connection: the status line is what we wanted.
      if (req.method === "HEAD") resolve({ status: res.statusCode ?? 0, headers: res.headers, body: "" });
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
      res.on("error", (e) => resolve({ status: 0, headers: {}, body: e.message }));
    });
    r.on("error", (e) => resolve({ status: 0, headers: {}, body: e.message }));
    r.end(req.body);
  });
}

/** Runs `reqs`, at most `concurrency` in flight, each on its own connection; answers in order. */
export async function rawBatch(port: number, reqs: RawRequest[], concurrency = 8): Promise<RawResponse[]> {
  const out: RawResponse[] = new Array(reqs.length);
  let next = 0;
  const worker = async () => {
    while (next < reqs.length) {
      const i = next++;
      out[i] = await rawRequest(port, reqs[i]!);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return out;
}

/** Writes `text` (a whole request, CRLFs included) on a new connection; the status of the answer. */
export function rawSocket(port: number, text: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve) => {
    const sock = connect(port, "127.0.0.1");
    let data = "";
    sock.setTimeout(10_000, () => sock.destroy());
    sock.setEncoding("latin1").on("data", (d: string) => {
      data += d;
    });
    sock.on("error", () => {});
    sock.on("close", () =>
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(data)?.[1] ?? 0), text: data }),
    );
    sock.end(text);
  });
}

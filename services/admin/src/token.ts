// The admin API's bearer token: one random secret in a file only its owner can read (0600),
// created on first start and reused after. Never logged; only its path is printed.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { closeSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";

/** $STATE_DIRECTORY/admin-token (systemd StateDirectory=, first entry) or /var/lib/vfio-broker/admin-token. */
export function defaultTokenFile(env: NodeJS.ProcessEnv = process.env): string {
  const state = env.STATE_DIRECTORY?.split(":")[0];
  return join(state || "/var/lib/vfio-broker", "admin-token");
}

/** Reads the token, creating the file (0600, in a 0700 directory if it has to make one) if absent. */
export function loadOrCreateToken(path: string): { token: string; created: boolean } {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    const fd = openSync(path, "wx", 0o600);
    const token = randomBytes(32).toString("base64url");
    try {
      writeSync(fd, `${token}\n`);
    } finally {
      closeSync(fd);
    }
    return { token, created: true };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
  const st = statSync(path);
  if ((st.mode & 0o077) !== 0)
    throw new Error(
      `token file ${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 ${path}, ` +
        "or delete it to get a new token",
    );
  const token = readFileSync(path, "utf8").trim();
  if (token.length < 16)
    throw new Error(
      `token file ${path} holds ${token.length} characters; use at least 16, or delete it to get a new one`,
    );
  return { token, created: false };
}

/** Constant-time check of an Authorization header value against the token. */
export function tokenMatches(header: string | undefined, token: string): "ok" | "missing" | "wrong" {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  if (!m) return "missing";
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(m[1]!), digest(token)) ? "ok" : "wrong";
}

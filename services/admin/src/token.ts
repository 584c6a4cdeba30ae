// The admin API's bearer token: one random secret in a file only its owner can read (0600),
// created on first start and reused after. Never logged; only its path is printed. The file is
// reached only through its verified directory (ours, nobody else can write it or its way:
// native/src/dir-rule.ts) and never through a symbolic link: a token someone else could write,
// read or point elsewhere is refused, not used.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { closeSync, constants, fstatSync, readFileSync, writeSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { openInSafeDir, openSafeDir, UnsafePlaceError } from "@vfio-broker/native";

/** $STATE_DIRECTORY/admin-token (systemd StateDirectory=, first entry) or /var/lib/vfio-broker/admin-token. */
export function defaultTokenFile(env: NodeJS.ProcessEnv = process.env): string {
  const state = env.STATE_DIRECTORY?.split(":")[0];
  return join(state || "/var/lib/vfio-broker", "admin-token");
}

/**
 * Reads the token, creating the file (0600, in a 0700 directory if it has to make one) if absent.
 * Throws UnsafePlaceError for a directory or file someone else could change or read.
 */
export function loadOrCreateToken(path: string): { token: string; created: boolean } {
  const dir = openSafeDir(dirname(resolve(path)), { role: "--token-file's directory", create: 0o700 });
  const name = basename(path);
  try {
    try {
      const fd = openInSafeDir(dir, name, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
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
    const fd = openInSafeDir(dir, name, constants.O_RDONLY);
    let text: string;
    try {
      const st = fstatSync(fd);
      if ((st.mode & 0o077) !== 0)
        throw new UnsafePlaceError(
          `token file ${path} is open to others (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 ${path}, ` +
            "or delete it to get a new token",
        );
      text = readFileSync(fd, "utf8");
    } finally {
      closeSync(fd);
    }
    return checked(path, text.trim());
  } finally {
    dir.close();
  }
}

function checked(path: string, token: string): { token: string; created: boolean } {
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

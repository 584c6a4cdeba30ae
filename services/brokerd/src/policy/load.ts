// Loading a policy from disk: the only I/O in policy/. Reads the file and hands the text to
// parsePolicy. Never returns a partial policy: an unreadable or invalid file throws PolicyError,
// and the caller keeps the policy it already had.

import { closeSync, fstatSync, openSync, readFileSync } from "node:fs";
import { type Policy, PolicyError, parsePolicy } from "./schema.js";

/** Policy files are small; anything larger is a mistake (or not a policy file at all). */
export const MAX_POLICY_FILE_BYTES = 1 << 20;

export function loadPolicyFile(path: string): Policy {
  let text: string;
  try {
    const fd = openSync(path, "r");
    try {
      const st = fstatSync(fd);
      if (!st.isFile())
        throw new PolicyError(
          [`${path}: is not a regular file; point at a policy .yaml or .json file`],
          path,
        );
      // The policy decides who gets device memory: a file others can rewrite would hand them that
      // power. Refuse it rather than trust it (as sshd does with its keys).
      if (st.mode & 0o022)
        throw new PolicyError(
          [
            `${path}: is writable by ${st.mode & 0o002 ? "every user" : "its group"} (mode ${(st.mode & 0o777).toString(8).padStart(4, "0")}); ` +
              `make it writable by its owner only: chmod go-w ${path}`,
          ],
          path,
        );
      if (st.size > MAX_POLICY_FILE_BYTES) {
        throw new PolicyError(
          [`${path}: is ${st.size} bytes; a policy file may be at most ${MAX_POLICY_FILE_BYTES} bytes`],
          path,
        );
      }
      text = readFileSync(fd, "utf8");
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (e instanceof PolicyError) throw e;
    const err = e as NodeJS.ErrnoException;
    const why =
      err.code === "ENOENT" ? "no such file; check the path" : `${err.code ?? "error"}: ${err.message}`;
    throw new PolicyError([`${path}: cannot read the policy file: ${why}`], path);
  }
  return parsePolicy(text, path);
}

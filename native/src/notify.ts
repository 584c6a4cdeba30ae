// notify.ts: owns sd_notify. Sends one datagram to $NOTIFY_SOCKET (absolute path or '@' abstract
// name), with fds for FDSTORE=1. Returns false, sending nothing, when NOTIFY_SOCKET is unset.
import { raw } from "./binding.js";
import { invalid } from "./errors.js";

export function sdNotify(state: string, fds?: number[]): boolean {
  const address = process.env.NOTIFY_SOCKET;
  if (!address) return false;
  if (!address.startsWith("/") && !address.startsWith("@"))
    throw invalid(
      "sdNotify",
      `NOTIFY_SOCKET=${address} is not an absolute path or @abstract name (vsock is unsupported)`,
    );
  return raw.sdNotify(address, state, fds ?? []);
}

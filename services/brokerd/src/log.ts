// Rate-limited stderr logging for messages a client can trigger (refused connections, internal
// errors): at most LIMIT lines per key per interval, then one line saying how many were dropped.
// An attacker can make brokerd fail a request a million times; it must not fill the disk with it.
const INTERVAL_MS = 60_000;
const LIMIT = 5;
const MAX_KEYS = 256;

const seen = new Map<string, { since: number; lines: number; dropped: number }>();

export function logLimited(key: string, message: string, now = Date.now()): void {
  let e = seen.get(key);
  if (e && now - e.since >= INTERVAL_MS) {
    if (e.dropped > 0)
      console.error(`brokerd: ${e.dropped} more like "${key}" in the last ${INTERVAL_MS / 1000} s`);
    seen.delete(key);
    e = undefined;
  }
  if (!e) {
    if (seen.size >= MAX_KEYS) seen.delete(seen.keys().next().value as string);
    e = { since: now, lines: 0, dropped: 0 };
    seen.set(key, e);
  }
  if (e.lines < LIMIT) {
    e.lines++;
    console.error(message);
  } else e.dropped++;
}

// quoted(): how the admin service puts a caller-supplied string (an id, a path, a Host or Origin
// header) into an error message. The caller controls those bytes, so they are JSON-quoted (no
// control characters, no way to fake the end of the message), invisible/bidi formatting
// characters are escaped too (no spoofed terminal or log text), and they are cut to 64
// characters so a 16 KiB path cannot make the answer or the log 16 KiB. Same shape as brokerd's
// helper (services/brokerd/src/errors.ts); kept separate so the admin does not import brokerd's
// internals.

// C1 controls, soft hyphen, zero-width and bidi controls, line/paragraph separators, BOM.
const INVISIBLE = /[\u0080-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

export function quoted(value: string, max = 64): string {
  const cut = value.length > max ? `${value.slice(0, max)}…` : value;
  return JSON.stringify(cut).replace(INVISIBLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Cuts a whole message (e.g. one fastify or a JSON parser wrote, which may quote input) to `max`. */
export function bounded(message: string, max = 300): string {
  return message.length > max ? `${message.slice(0, max)}…` : message;
}

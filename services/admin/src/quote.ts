// quoted(): how the admin service puts a caller-supplied string (an id, a path, a Host or Origin
// header) into an error message. The caller controls those bytes, so they are JSON-quoted (no
// control characters, no way to fake the end of the message), invisible/bidi formatting
// characters are escaped too (no spoofed terminal or log text), and they are cut to 64
// characters so a 16 KiB path cannot make the answer or the log 16 KiB. Same shape as brokerd's
// helper (services/brokerd/src/errors.ts); kept separate so the admin does not import brokerd's
// internals.

// Control and format characters (C1, soft hyphen, zero-width, bidi controls, the BOM, tag
// characters ...) and line/paragraph separators: the class, as brokerd's journal escapes it.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;

/** `c` as \uXXXX escapes, one per UTF-16 unit (a character past U+FFFF is a surrogate pair). */
function jsonEscape(c: string): string {
  let out = "";
  for (let i = 0; i < c.length; i++) out += `\\u${c.charCodeAt(i).toString(16).padStart(4, "0")}`;
  return out;
}

export function quoted(value: string, max = 64): string {
  const cut = value.length > max ? `${value.slice(0, max)}…` : value;
  return JSON.stringify(cut).replace(INVISIBLE, jsonEscape);
}

/** Cuts a whole message (e.g. one fastify or a JSON parser wrote, which may quote input) to `max`. */
export function bounded(message: string, max = 300): string {
  return message.length > max ? `${message.slice(0, max)}…` : message;
}

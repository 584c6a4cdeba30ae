// What the console shows of text it did not write (client names, cgroup paths, device ids, reasons,
// messages): every character that would display as something other than itself is replaced by a
// visible mark, ⟦U+202E⟧. That is control characters (C0, DEL, C1: a tab or newline would break a
// cell), format characters (bidi overrides and isolates, which reorder what follows so that a row
// can lie; zero-width characters, which hide differences; the BOM, soft hyphen, interlinear
// annotations) and line or paragraph separators. The console inserts text as text (never HTML);
// this makes that text say what it is.
const HIDDEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;

/** `text` with every hidden or reordering character shown as ⟦U+XXXX⟧. */
export function visible(text) {
  const s = String(text);
  HIDDEN.lastIndex = 0;
  if (!HIDDEN.test(s)) return s;
  return s.replace(HIDDEN, (c) => `⟦U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}⟧`);
}

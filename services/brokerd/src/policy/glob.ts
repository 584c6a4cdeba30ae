// Glob matching for policy patterns: device ids ("sim*", "0000:03:00.*") and cgroup v2 paths
// ("/system.slice/docker-*.scope", "/kubepods.slice/**"). Pure; owns nothing but the matcher.
// Never builds a RegExp from a pattern: matching is a linear-time NFA walk, so no pattern or value
// (values come from clients and /proc) can make it backtrack.
//
// Syntax: `*` matches any run of characters (in segment mode: not crossing "/"), `**` (two or more
// stars) matches any run including "/". Every other character matches only itself; there is no
// `?`, no `[...]` and no escaping. Matching is case-sensitive and anchored at both ends.

export interface GlobOptions {
  /** When true, a single `*` stays within one "/"-separated segment; `**` still crosses. */
  segments?: boolean;
}

const STAR = -1; // matches within one segment (or anything when segments is off)
const GLOBSTAR = -2; // matches anything, "/" included

/** A compiled pattern: an array of UTF-16 code units, with STAR/GLOBSTAR for wildcard runs. */
export type CompiledGlob = readonly number[];

export function compileGlob(pattern: string): CompiledGlob {
  const tokens: number[] = [];
  let i = 0;
  while (i < pattern.length) {
    if (pattern.charCodeAt(i) === 42 /* * */) {
      let n = 0;
      while (i < pattern.length && pattern.charCodeAt(i) === 42) {
        n++;
        i++;
      }
      tokens.push(n >= 2 ? GLOBSTAR : STAR);
    } else {
      tokens.push(pattern.charCodeAt(i));
      i++;
    }
  }
  return tokens;
}

/** True when the pattern contains no wildcard, i.e. it matches exactly one value: itself. */
export function isLiteralGlob(pattern: string): boolean {
  return !pattern.includes("*");
}

/** Runs a compiled glob over a value. O(pattern length x value length), no backtracking. */
export function matchCompiled(tokens: CompiledGlob, value: string, segments: boolean): boolean {
  const n = tokens.length;
  // states[i] is true when the first i tokens can match the prefix consumed so far.
  let states = new Uint8Array(n + 1);
  let next = new Uint8Array(n + 1);
  states[0] = 1;
  closure(tokens, states);
  for (let k = 0; k < value.length; k++) {
    const c = value.charCodeAt(k);
    next.fill(0);
    let any = false;
    for (let i = 0; i < n; i++) {
      if (states[i] !== 1) continue;
      const t = tokens[i]!;
      if (t === GLOBSTAR || (t === STAR && !((segments && c === 47) /* / */))) {
        next[i] = 1;
        any = true;
      } else if (t === c) {
        next[i + 1] = 1;
        any = true;
      }
    }
    if (!any) return false;
    closure(tokens, next);
    [states, next] = [next, states];
  }
  return states[n] === 1;
}

// A wildcard may match the empty string: a state before a wildcard also reaches the one after it.
function closure(tokens: CompiledGlob, states: Uint8Array): void {
  for (let i = 0; i < tokens.length; i++) {
    if (states[i] === 1 && tokens[i]! < 0) states[i + 1] = 1;
  }
}

/**
 * Does `value` match `pattern`? Device ids use the default (a `*` matches anything); cgroup paths
 * use `{ segments: true }` so "/system.slice/*" names direct children only and "/kubepods.slice/**"
 * names the whole subtree.
 */
export function globMatch(pattern: string, value: string, opts?: GlobOptions): boolean {
  return matchCompiled(compileGlob(pattern), value, opts?.segments === true);
}

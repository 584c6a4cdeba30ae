// Tests for glob.ts: examples for device ids and cgroup paths, and properties of the matcher.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { globMatch } from "./glob.js";

test("device globs: * matches any run, literal characters match themselves", () => {
  assert.equal(globMatch("sim*", "sim0"), true);
  assert.equal(globMatch("sim*", "sim"), true);
  assert.equal(globMatch("sim*", "xsim0"), false);
  assert.equal(globMatch("0000:3b:00.*", "0000:3b:00.1"), true);
  assert.equal(globMatch("0000:3b:00.*", "0000:3b:01.1"), false);
  assert.equal(globMatch("*", ""), true);
  assert.equal(globMatch("", ""), true);
  assert.equal(globMatch("", "a"), false);
  assert.equal(globMatch("a*b*c", "aXXbYYc"), true);
  assert.equal(globMatch("a*b*c", "aXXbYY"), false);
  // `?` and `[` are not special
  assert.equal(globMatch("sim?", "sim0"), false);
  assert.equal(globMatch("sim[0]", "sim[0]"), true);
});

test("cgroup globs: * stays within one segment, ** crosses segments", () => {
  const o = { segments: true };
  assert.equal(globMatch("/system.slice/docker-*.scope", "/system.slice/docker-abc.scope", o), true);
  assert.equal(globMatch("/system.slice/docker-*.scope", "/system.slice/docker-a/b.scope", o), false);
  assert.equal(globMatch("/system.slice/*", "/system.slice/x.service", o), true);
  assert.equal(globMatch("/system.slice/*", "/system.slice/x.service/child", o), false);
  assert.equal(globMatch("/kubepods.slice/**", "/kubepods.slice/kubepods-pod1.slice/cri-x.scope", o), true);
  assert.equal(globMatch("/kubepods.slice/**", "/kubepods.slice", o), false);
  assert.equal(globMatch("/kubepods.slice/**", "/kubepods.sliceX/a", o), false);
  assert.equal(globMatch("**/docker-*.scope", "/system.slice/docker-1.scope", o), true);
  assert.equal(globMatch("**/docker-*.scope", "/a/b/docker-1/x.scope", o), false);
  // Without segments a single * crosses "/" too.
  assert.equal(globMatch("/system.slice/*", "/system.slice/a/b"), true);
});

test("a pathological pattern is matched in linear time", () => {
  const value = `${"a".repeat(20000)}b`;
  const started = process.hrtime.bigint();
  assert.equal(globMatch(`${"*a".repeat(30)}*c`, value), false);
  assert.ok(process.hrtime.bigint() - started < 2_000_000_000n);
});

const segmentChars = fc.constantFrom("a", "b", "/", ".", "-", "0");
const valueArb = fc.string({ unit: segmentChars, maxLength: 12 });
const literalArb = fc.string({ unit: segmentChars, maxLength: 12 });
const patternArb = fc.string({ unit: fc.constantFrom("a", "b", "/", ".", "*", "**"), maxLength: 10 });

test("property: a literal pattern matches only itself", () => {
  fc.assert(
    fc.property(literalArb, valueArb, fc.boolean(), (pattern, value, segments) => {
      assert.equal(globMatch(pattern, value, { segments }), pattern === value);
      assert.equal(globMatch(pattern, pattern, { segments }), true);
    }),
  );
});

test("property: in segment mode * never matches across /", () => {
  fc.assert(
    fc.property(literalArb, literalArb, valueArb, (prefix, suffix, middle) => {
      const value = `${prefix}${middle}${suffix}`;
      const matched = globMatch(`${prefix}*${suffix}`, value, { segments: true });
      if (middle.includes("/")) assert.equal(matched, false);
      else assert.equal(matched, true);
    }),
  );
});

test("property: ** matches any middle, / included", () => {
  fc.assert(
    fc.property(literalArb, literalArb, valueArb, fc.boolean(), (prefix, suffix, middle, segments) => {
      assert.equal(globMatch(`${prefix}**${suffix}`, `${prefix}${middle}${suffix}`, { segments }), true);
    }),
  );
});

test("property: segment mode never matches more than plain mode", () => {
  fc.assert(
    fc.property(patternArb, valueArb, (pattern, value) => {
      if (globMatch(pattern, value, { segments: true })) assert.equal(globMatch(pattern, value), true);
    }),
  );
});

test("property: agrees with a reference regex translation", () => {
  const toRegex = (pattern: string, segments: boolean): RegExp => {
    const body = pattern
      .split(/(\*+)/)
      .map((part) => {
        if (part.startsWith("**")) return ".*";
        if (part === "*") return segments ? "[^/]*" : ".*";
        return part.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
      })
      .join("");
    return new RegExp(`^${body}$`, "s");
  };
  fc.assert(
    fc.property(patternArb, valueArb, fc.boolean(), (pattern, value, segments) => {
      assert.equal(globMatch(pattern, value, { segments }), toRegex(pattern, segments).test(value));
    }),
    { numRuns: 2000 },
  );
});

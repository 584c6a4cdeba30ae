// The string limits: every string field a client sends is in the table, the .proto says the same
// limit next to the field, and the check accepts exactly what the limit allows.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import type { DescMessage } from "@bufbuild/protobuf";
import { create, ScalarType } from "@bufbuild/protobuf";
import {
  BrokerService,
  FdRequestSchema,
  OpenDeviceRequestSchema,
  WorkloadRequestSchema,
} from "@vfio-broker/proto";
import fc from "fast-check";
import { BrokerError } from "../errors.js";
import { checkString, checkStrings, STRING_LIMITS, type StringLimit, stringProblem } from "./strings.js";

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "proto", "vfiobroker"))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the repository root");
    dir = up;
  }
}

/** Every string field reachable from a client's request messages, as "pkg.Message.field". */
function clientStringFields(): string[] {
  const out = new Set<string>();
  const seen = new Set<string>();
  const visit = (m: DescMessage) => {
    if (seen.has(m.typeName)) return;
    seen.add(m.typeName);
    for (const f of m.fields) {
      if ((f.fieldKind === "scalar" || f.fieldKind === "list") && f.scalar === ScalarType.STRING)
        out.add(`${m.typeName}.${f.name}`);
      if ((f.fieldKind === "message" || f.fieldKind === "list" || f.fieldKind === "map") && f.message)
        visit(f.message);
    }
  };
  for (const method of BrokerService.methods) visit(method.input);
  visit(FdRequestSchema);
  visit(WorkloadRequestSchema);
  return [...out].sort();
}

test("every string field a client sends has a limit in the table, and nothing else does", () => {
  assert.deepEqual(clientStringFields(), Object.keys(STRING_LIMITS).sort());
});

test("the .proto says each field's limit next to it", () => {
  const dir = join(repoRoot(), "proto", "vfiobroker", "v1");
  const files = ["broker.proto", "fdchannel.proto", "workload.proto"].map((f) =>
    readFileSync(join(dir, f), "utf8"),
  );
  for (const [key, limit] of Object.entries(STRING_LIMITS)) {
    const [, message, field] = /^vfiobroker\.v1\.(\w+)\.(\w+)$/.exec(key)!;
    const text = files.find((t) => t.includes(`message ${message} {`))!;
    const body = text.slice(text.indexOf(`message ${message} {`));
    const at = body.search(new RegExp(`\\bstring ${field} = \\d+;`));
    assert.ok(at > 0, `${key}: not found in the .proto`);
    // The comment block right above the field.
    const lines = body.slice(0, at).split("\n");
    lines.pop();
    const comment: string[] = [];
    while (lines.length && lines.at(-1)!.trim().startsWith("//")) comment.unshift(lines.pop()!.trim());
    const said = comment.map((l) => l.replace(/^\/\/\s*/, "")).join(" ");
    const unit = limit.kind === "text" ? "bytes" : "characters";
    assert.match(
      said,
      new RegExp(`[Aa]t most ${limit.max} ${unit}`),
      `${key}: the .proto comment says: ${said}`,
    );
  }
});

test("checkStrings names the field, its path and the limit", () => {
  const big = "a".repeat(65);
  assert.throws(
    () => checkStrings(create(OpenDeviceRequestSchema, { deviceId: "sim0", requestId: big })),
    (e: unknown) =>
      e instanceof BrokerError &&
      e.code === "INVALID_ARGUMENT" &&
      /OpenDeviceRequest\.request_id is 65 bytes long; at most 64 bytes/.test(e.message),
  );
  assert.throws(
    () =>
      checkStrings(
        create(FdRequestSchema, {
          batch: { sessionToken: "0".repeat(32), grants: [{}, { requestId: "bad id" }] },
        }),
      ),
    /FdRequest\.batch\.grants\[1\]\.request_id holds U\+0020 at offset 3; it may hold letters/,
  );
  // Within the limits: nothing thrown.
  checkStrings(create(OpenDeviceRequestSchema, { deviceId: "0000:3b:00.1", requestId: crypto.randomUUID() }));
  checkStrings(create(FdRequestSchema, { ticket: "0123456789abcdef0123456789abcdef" }));
});

const KINDS: StringLimit["kind"][] = ["hex", "id", "text"];
const CHARS: Record<StringLimit["kind"], string> = {
  hex: "0123456789abcdef",
  id: "abcXYZ019._:-",
  text: "a Zé€😀-/",
};

test("property: a string of allowed characters passes exactly when it fits", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...KINDS),
      fc.integer({ min: 0, max: 80 }),
      fc.array(fc.nat(), { maxLength: 100 }),
      (kind, max, picks) => {
        const chars = [...CHARS[kind]];
        const value = picks.map((p) => chars[p % chars.length]).join("");
        const fits = Buffer.byteLength(value) <= max;
        assert.equal(stringProblem(value, { max, kind }) === "", fits);
      },
    ),
  );
});

test("property: one character of the wrong kind anywhere is refused", () => {
  const bad: Record<StringLimit["kind"], string[]> = {
    hex: ["A", "g", " ", "\n", "\u202e"],
    id: [" ", "/", "\n", "\u2028", "é", "\u200b"],
    text: [
      "\n",
      "\u0000",
      "\u0085",
      "\u2028",
      "\u2029",
      "\u202e",
      "\u2066",
      "\u200b",
      "\ufeff",
      "\u009b",
      "\ud800",
    ],
  };
  fc.assert(
    fc.property(
      fc.constantFrom(...KINDS),
      fc.nat(),
      fc.nat({ max: 20 }),
      fc.nat({ max: 20 }),
      (kind, pick, before, after) => {
        const ch = bad[kind][pick % bad[kind].length]!;
        const value = `${"a".repeat(before)}${ch}${"b".repeat(after)}`;
        assert.notEqual(stringProblem(value, { max: 64, kind }), "");
        assert.throws(
          () => checkString("X.f", value, { max: 64, kind }),
          /X\.f holds .* at offset \d+; it may hold/,
        );
      },
    ),
  );
});

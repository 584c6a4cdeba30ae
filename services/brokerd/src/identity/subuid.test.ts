// Tenants from /etc/subuid: a uid in a user's subordinate range is that user's tenant; anything
// malformed, overlapping or holding root is skipped with a warning; the reader ignores files a
// non-root user could have written.
import assert from "node:assert/strict";
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import fc from "fast-check";
import { describeTenant, parsePasswd, parseSubuid, uidTenant } from "./subuid.js";
import { loadTenantMap, readOperatorFile } from "./tenants-file.js";

const PASSWD =
  "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\nbob:x:1001:1001::/home/bob:/bin/sh\n";

test("parseSubuid: ranges belong to their owner's tenant, by name or by uid", () => {
  const { map, warnings } = parseSubuid(
    "alice:100000:65536\n1001:165536:65536\n# comment\n\ncarol:300000:10\n",
    parsePasswd(PASSWD),
  );
  assert.deepEqual(warnings, []);
  assert.equal(map.size, 3);
  assert.deepEqual(map.tenantOf(100000), { key: "uid:1000", owner: "alice", viaRange: true });
  assert.deepEqual(map.tenantOf(165535), { key: "uid:1000", owner: "alice", viaRange: true });
  assert.deepEqual(map.tenantOf(165536), { key: "uid:1001", owner: "bob", viaRange: true });
  assert.deepEqual(map.tenantOf(300009), { key: "user:carol", owner: "carol", viaRange: true });
  assert.deepEqual(map.tenantOf(300010), uidTenant(300010));
  // The owner's own uid is the same tenant as its range.
  assert.equal(map.tenantOf(1000).key, map.tenantOf(100000).key);
  assert.equal(describeTenant(100007, map.tenantOf(100007)), "tenant of uid 100007 (subuid range of alice)");
  assert.equal(describeTenant(4242, map.tenantOf(4242)), "tenant of uid 4242");
});

test("parseSubuid: malformed lines, root's uid and overlaps are skipped with a warning", () => {
  const { map, warnings } = parseSubuid(
    [
      "alice:100000:100",
      "bob:100050:100", // overlaps alice
      "mallory:0:65536", // holds root
      "x:1:0",
      "y:4294967295:2",
      "z:abc:1",
      "too:many:fields:here",
      "w:200000:-1",
    ].join("\n"),
    parsePasswd(PASSWD),
  );
  assert.equal(map.size, 1);
  assert.equal(map.tenantOf(100060).key, "uid:1000");
  assert.equal(map.tenantOf(0).key, "uid:0");
  assert.equal(warnings.length, 7);
  assert.match(warnings[0]!, /line 3: .*uid 0/);
  assert.match(warnings.at(-1)!, /line 2: overlaps the range of alice/);
});

test("parseSubuid: any text parses, bounded, and tenantOf agrees with a scan of the kept ranges", () => {
  const line = fc.oneof(
    fc
      .tuple(
        fc.constantFrom("alice", "bob", "1000", "nobody"),
        fc.integer({ min: 0, max: 2000 }),
        fc.integer({ min: 0, max: 300 }),
      )
      .map(([o, s, c]) => `${o}:${s}:${c}`),
    fc.string({ maxLength: 30 }),
  );
  fc.assert(
    fc.property(
      fc.array(line, { maxLength: 60 }),
      fc.array(fc.integer({ min: 0, max: 2400 })),
      (lines, uids) => {
        const { map, warnings } = parseSubuid(lines.join("\n"), parsePasswd(PASSWD));
        assert.ok(warnings.length <= 9);
        // Brute force: the uid is in some range of the text that was kept (valid, no root, no overlap).
        const valid = lines
          .map((l, i) => ({ m: /^([^:\s]{1,256}):(\d{1,10}):(\d{1,10})$/.exec(l.trim()), i }))
          .filter(
            (x) => x.m && !lines[x.i]!.trim().startsWith("#") && Number(x.m[3]) >= 1 && Number(x.m[2]) > 0,
          )
          .map((x) => ({ start: Number(x.m![2]), end: Number(x.m![2]) + Number(x.m![3]), i: x.i }))
          .sort((a, b) => a.start - b.start || a.i - b.i);
        const kept: typeof valid = [];
        for (const r of valid) if (!kept.length || r.start >= kept.at(-1)!.end) kept.push(r);
        for (const uid of uids) {
          const inRange = kept.some((r) => uid >= r.start && uid < r.end);
          assert.equal(map.tenantOf(uid).viaRange, inRange, `uid ${uid}`);
        }
      },
    ),
  );
});

test("readOperatorFile: only root's files that only root may write", {
  skip: process.getuid?.() !== 0,
}, () => {
  const dir = mkdtempSync(join(tmpdir(), "subuid-"));
  try {
    const f = join(dir, "subuid");
    const pw = join(dir, "passwd");
    writeFileSync(f, "alice:100000:65536\n");
    writeFileSync(pw, PASSWD);
    chmodSync(f, 0o644);
    chmodSync(pw, 0o644);
    const ok = loadTenantMap(f, pw);
    assert.deepEqual(ok.warnings, []);
    assert.equal(ok.map.tenantOf(100001).key, "uid:1000");
    chmodSync(f, 0o666);
    const open = loadTenantMap(f, pw);
    assert.equal(open.map.size, 0);
    assert.match(open.warnings[0]!, /writable by its group or others \(mode 666\); ignored/);
    chmodSync(f, 0o644);
    chownSync(f, 65534, 65534);
    assert.match(readOperatorFile(f).warning, /owned by uid 65534, not root; ignored/);
    assert.deepEqual(loadTenantMap(join(dir, "absent"), pw).warnings, []);
    assert.match(readOperatorFile(dir).warning, /not a regular file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

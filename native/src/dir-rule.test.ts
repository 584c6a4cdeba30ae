// dir-rule.ts with an injected file system (a map of lstat results): which directories may hold
// brokerd's files, what each refusal says, symbolic links followed only from verified places,
// missing components, and (fast-check) that no directory on the way escapes the check.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  ancestorProblem,
  type DirStat,
  fileProblem,
  ownProblem,
  plainName,
  S_IFDIR,
  S_IFLNK,
  verifyDir,
  within,
} from "./dir-rule.js";

const ME = 1000;
const OTHER = 65534;
type Entry = DirStat & { target?: string };
const dir = (uid: number, perm: number): Entry => ({ uid, gid: uid, mode: S_IFDIR | perm });
const link = (target: string): Entry => ({ uid: 0, gid: 0, mode: S_IFLNK | 0o777, target });

function fsOf(entries: Record<string, Entry>) {
  return {
    lstat: (p: string) => entries[p],
    readlink: (p: string) => {
      const t = entries[p]?.target;
      if (t === undefined) throw new Error(`EINVAL: ${p} is not a link`);
      return t;
    },
  };
}

const BASE: Record<string, Entry> = {
  "/": dir(0, 0o755),
  "/run": dir(0, 0o755),
  "/tmp": dir(0, 0o1777),
  "/var": dir(0, 0o755),
  "/var/run": link("/run"),
  "/run/user": dir(0, 0o755),
  [`/run/user/${ME}`]: dir(ME, 0o700),
};

function verify(path: string, extra: Record<string, Entry> = {}, uid = ME) {
  const f = fsOf({ ...BASE, ...extra });
  return verifyDir(path, uid, f.lstat, f.readlink);
}

test("a directory of ours under root's directories passes; what is missing is listed to be made", () => {
  assert.deepEqual(verify(`/run/user/${ME}`), { ok: true, real: `/run/user/${ME}`, missing: [] });
  assert.deepEqual(verify(`/run/user/${ME}/vfio-broker/run`), {
    ok: true,
    real: `/run/user/${ME}`,
    missing: ["vfio-broker", "run"],
  });
  // Root's own, as brokerd under systemd.
  assert.deepEqual(verify("/run/vfio-brokerd", { "/run/vfio-brokerd": dir(0, 0o710) }, 0), {
    ok: true,
    real: "/run/vfio-brokerd",
    missing: [],
  });
});

test("/tmp (root's, sticky) may be on the way; a name in it another uid made first is refused", () => {
  assert.deepEqual(verify(`/tmp/vfio-broker-${ME}`), {
    ok: true,
    real: "/tmp",
    missing: [`vfio-broker-${ME}`],
  });
  const r = verify(`/tmp/vfio-broker-${ME}/run`, { [`/tmp/vfio-broker-${ME}`]: dir(OTHER, 0o777) });
  assert.equal(r.ok, false);
  assert.match(
    (r as { problem: string }).problem,
    /\/tmp\/vfio-broker-1000 belongs to uid 65534: a directory on the way must belong to root or to uid 1000/,
  );
  const own = verify("/tmp/x", { "/tmp/x": dir(OTHER, 0o700) });
  assert.match(
    (own as { problem: string }).problem,
    /\/tmp\/x belongs to uid 65534, not to uid 1000 .*rm -r \/tmp\/x/,
  );
  // /tmp itself is never a directory of ours: others can write it.
  assert.match(
    (verify("/tmp", {}, 0) as { problem: string }).problem,
    /\/tmp is writable by its group or others \(mode 1777\)/,
  );
});

test("group or other write refuses a directory on the way unless it is sticky, and always refuses our own", () => {
  const gw = verify("/srv/a/b", {
    "/srv": dir(0, 0o775),
    "/srv/a": dir(ME, 0o755),
    "/srv/a/b": dir(ME, 0o755),
  });
  assert.match(
    (gw as { problem: string }).problem,
    /\/srv is writable by its group or others \(mode 0775\) and not sticky/,
  );
  const sticky = verify("/srv/a", { "/srv": dir(0, 0o1777), "/srv/a": dir(ME, 0o755) });
  assert.equal(sticky.ok, true);
  // Sticky but another user's: its owner may remove anything in it.
  const theirs = verify("/srv/a", { "/srv": dir(OTHER, 0o1777), "/srv/a": dir(ME, 0o755) });
  assert.match((theirs as { problem: string }).problem, /\/srv belongs to uid 65534/);
  const own = verify("/srv/a", { "/srv": dir(0, 0o755), "/srv/a": dir(ME, 0o770) });
  assert.match(
    (own as { problem: string }).problem,
    /\/srv\/a is writable by its group or others \(mode 0770\); run chmod go-w/,
  );
  // Readable by others is fine (the workload dir is 0755).
  assert.equal(verify("/srv/a", { "/srv": dir(0, 0o755), "/srv/a": dir(ME, 0o755) }).ok, true);
});

test("symbolic links: followed from verified directories, the place they lead to is verified in turn", () => {
  assert.deepEqual(verify("/var/run/vfio-broker", { "/run/vfio-broker": dir(0, 0o755) }, 0), {
    ok: true,
    real: "/run/vfio-broker",
    missing: [],
  });
  // The last component a link: to an attacker's directory is refused, to ours is fine.
  const bad = verify("/srv/st", {
    "/srv": dir(0, 0o755),
    "/srv/st": link("/tmp/evil"),
    "/tmp/evil": dir(OTHER, 0o777),
  });
  assert.match((bad as { problem: string }).problem, /\/tmp\/evil belongs to uid 65534/);
  const rel = verify("/srv/st", {
    "/srv": dir(0, 0o755),
    "/srv/st": link("../srv/mine"),
    "/srv/mine": dir(ME, 0o700),
  });
  assert.deepEqual(rel, { ok: true, real: "/srv/mine", missing: [] });
  const loop = verify("/srv/l", { "/srv": dir(0, 0o755), "/srv/l": link("/srv/l") });
  assert.match((loop as { problem: string }).problem, /more than 40 symbolic links/);
});

test("not a directory, not absolute, '..' past a missing name: refused", () => {
  assert.match(
    (
      verify("/srv/f", { "/srv": dir(0, 0o755), "/srv/f": { uid: ME, gid: ME, mode: 0o100600 } }) as {
        problem: string;
      }
    ).problem,
    /\/srv\/f is not a directory/,
  );
  assert.match((verify("relative/dir") as { problem: string }).problem, /not an absolute path/);
  assert.match((verify("/run/nope/../x") as { problem: string }).problem, /"\.\." after \/run\/nope/);
  assert.deepEqual(verify(`/run/user/${ME}/../${ME}`), { ok: true, real: `/run/user/${ME}`, missing: [] });
});

test("files: ours, regular, nobody else writes them; a link is never ours", () => {
  const f = (uid: number, mode: number) => ({ uid, gid: uid, mode });
  assert.equal(fileProblem("/p/j", f(ME, 0o100600), ME), "");
  assert.equal(fileProblem("/p/j", f(ME, 0o100644), ME), "");
  assert.match(fileProblem("/p/j", f(ME, 0o120777), ME), /is a symbolic link/);
  assert.match(fileProblem("/p/j", f(OTHER, 0o100600), ME), /belongs to uid 65534/);
  assert.match(fileProblem("/p/j", f(ME, 0o100666), ME), /writable by its group or others \(mode 0666\)/);
  assert.match(fileProblem("/p/j", f(ME, 0o140777), ME), /not a regular file/);
});

test("plain names and 'within' (what a mount of the workload dir exposes)", () => {
  for (const bad of ["", ".", "..", "a/b", "../x", "a\0b"]) assert.equal(plainName(bad), false, bad);
  for (const good of ["broker.sock", "sim0.BAR2", "..hidden", "state.0.log"])
    assert.equal(plainName(good), true, good);
  assert.equal(within("/run/vfio-broker/priv", "/run/vfio-broker"), true);
  assert.equal(within("/run/vfio-broker", "/run/vfio-broker"), true);
  assert.equal(within("/run/vfio-brokerd", "/run/vfio-broker"), false);
  assert.equal(within("/anything", "/"), true);
});

// A chain of directories with random owners and modes: the walk passes exactly when every
// directory on the way passes ancestorProblem and the last passes ownProblem (none is skipped),
// and reaching the same chain through a symbolic link (made in a verified directory) changes nothing.
test("property: no directory on the way escapes the check, with or without a link to it", () => {
  const owner = fc.constantFrom(0, ME, OTHER);
  const perm = fc.integer({ min: 0, max: 0o1777 });
  fc.assert(
    fc.property(
      fc.array(fc.tuple(owner, perm), { minLength: 1, maxLength: 6 }),
      fc.boolean(),
      (chain, viaLink) => {
        const entries: Record<string, Entry> = { "/": dir(0, 0o755), "/l": dir(0, 0o755) };
        let p = "";
        const paths: string[] = [];
        for (const [i, [uid, mode]] of chain.entries()) {
          p += `/d${i}`;
          paths.push(p);
          entries[p] = dir(uid, mode);
        }
        if (viaLink) entries["/l/ln"] = link(paths[0]!);
        const asked = viaLink ? `/l/ln${p.slice(paths[0]!.length)}` : p;
        const f = fsOf(entries);
        const r = verifyDir(asked, ME, f.lstat, f.readlink);
        const expected = paths.every((q, i) =>
          i === paths.length - 1
            ? ownProblem(q, entries[q]!, ME) === ""
            : ancestorProblem(q, entries[q]!, ME) === "",
        );
        assert.equal(r.ok, expected, JSON.stringify({ chain, viaLink, r }));
        if (r.ok) assert.equal(r.real, p);
      },
    ),
    { numRuns: 500 },
  );
});

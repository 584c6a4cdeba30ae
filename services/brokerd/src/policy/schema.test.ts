// Tests for schema.ts: line-precise validation errors, YAML and JSON, defaults and limits.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_LIMITS, type Policy, PolicyError, parsePolicy, parseSize } from "./schema.js";

/** Parses text that must fail and returns its errors. */
function errorsOf(text: string, source = "policy.yaml"): string[] {
  try {
    parsePolicy(text, source);
  } catch (e) {
    assert.ok(e instanceof PolicyError, `expected PolicyError, got ${String(e)}`);
    assert.ok(e.message.includes(`${e.errors.length} error`));
    for (const err of e.errors) assert.ok(e.message.includes(err), "the message lists every error");
    return e.errors;
  }
  assert.fail("expected the policy to be rejected");
}

const GOOD = `version: 1
rules:
  - name: sim-any-local
    match:
      any: true
    devices: ["sim*"]
    regions: [BAR0, BAR2, CONFIG]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
`;

test("a valid YAML policy parses with defaults filled in", () => {
  const p = parsePolicy(GOOD, "<inline>");
  assert.equal(p.version, 1);
  assert.equal(p.source, "<inline>");
  assert.match(p.digest, /^[0-9a-f]{64}$/);
  assert.equal(p.rules.length, 1);
  const r = p.rules[0]!;
  assert.equal(r.name, "sim-any-local");
  assert.equal(r.line, 3);
  assert.deepEqual(r.match, { any: true });
  assert.deepEqual(r.devices, ["sim*"]);
  assert.deepEqual(r.regions, ["BAR0", "BAR2", "CONFIG"]);
  assert.deepEqual(r.attributes, ["UC", "WC"]);
  assert.deepEqual(r.prot, ["r", "rw"]);
  assert.equal(r.readWrite, true);
  assert.equal(r.allowDeviceFd, false);
  assert.deepEqual(r.limits, {
    sessions: 64,
    fdConnections: 64,
    pendingMappings: 64,
    deviceFiles: 64,
    mappings: 1024,
    bytes: 1073741824n,
    unreadFds: 256,
  });
  assert.deepEqual(r.limits, DEFAULT_LIMITS);
});

test("the parsed policy is frozen", () => {
  const p = parsePolicy(GOOD, "<inline>");
  assert.ok(Object.isFrozen(p) && Object.isFrozen(p.rules) && Object.isFrozen(p.rules[0]));
  assert.ok(Object.isFrozen(p.rules[0]!.devices) && Object.isFrozen(p.rules[0]!.limits));
  assert.throws(() => (p.rules[0]!.devices as string[]).push("*"));
});

test("the digest is the sha256 of the text", () => {
  const a = parsePolicy(GOOD, "a");
  assert.equal(a.digest, parsePolicy(GOOD, "b").digest);
  assert.notEqual(a.digest, parsePolicy(`${GOOD}\n`, "a").digest);
});

test("JSON parses to the same rules as the equivalent YAML", () => {
  const json = JSON.stringify({
    version: 1,
    rules: [
      {
        name: "sim-any-local",
        match: { any: true },
        devices: ["sim*"],
        regions: ["BAR0", "BAR2", "CONFIG"],
        attributes: ["UC", "WC"],
        prot: ["r", "rw"],
        readWrite: true,
      },
    ],
  });
  const fromJson = parsePolicy(json, "p.json");
  const fromYaml = parsePolicy(GOOD, "p.yaml");
  assert.deepEqual({ ...fromJson.rules[0], line: 0 }, { ...fromYaml.rules[0], line: 0 });
});

test("several mistakes in one file: every error, each at its exact line:col", () => {
  const text = [
    /*  1 */ "version: 2",
    /*  2 */ "rules:",
    /*  3 */ "  - name: first",
    /*  4 */ "    match: { uids: [1000, 1.5] }",
    /*  5 */ '    devices: ["sim*"]',
    /*  6 */ "    regions: [BAR0]",
    /*  7 */ "    attributes: [UC, XC]",
    /*  8 */ "    prot: [r]",
    /*  9 */ "    limits:",
    /* 10 */ "      deviceFiles: -1",
    /* 11 */ "      bytes: 1GB",
    /* 12 */ "  - name: first",
    /* 13 */ "    match: { gids: [100] }",
    /* 14 */ "    regions: [BAR0]",
    /* 15 */ "    attributes: [UC]",
    /* 16 */ "    prot: [r]",
    /* 17 */ "    readwrite: true",
    "",
  ].join("\n");
  assert.deepEqual(errorsOf(text), [
    "policy.yaml:1:10: version: 2 is not a version this broker reads; it reads version 1",
    "policy.yaml:4:27: rules[0].match.uids[1]: 1.5 is not a uid; use an integer 0..4294967294",
    'policy.yaml:7:22: rules[0].attributes[1]: "XC" is not an attribute; use UC or WC (WB only on simulated memory)',
    "policy.yaml:10:20: rules[0].limits.deviceFiles: -1 is negative; a limit is a count of 0 or more (0 allows none)",
    'policy.yaml:11:14: rules[0].limits.bytes: "1GB" is not a size; use a whole number of bytes or a string with suffix B, KiB, MiB, GiB or TiB (e.g. 1GiB); did you mean "1GiB" (sizes are powers of 1024)?',
    'policy.yaml:12:5: rules[1].devices: required but missing; list the device ids or globs, e.g. ["sim*"] or ["0000:03:00.0"]',
    'policy.yaml:12:11: rules[1].name: "first" is already the name of rules[0] (line 3); rule names must be unique',
    'policy.yaml:17:5: rules[1]: unknown key "readwrite"; did you mean "readWrite"? allowed keys: name, match, devices, regions, attributes, prot, readWrite, allowDeviceFd, revoke, limits',
  ]);
});

test("the same mistakes in JSON are reported at their JSON positions", () => {
  const text = [
    /* 1 */ "{",
    /* 2 */ '  "version": 1,',
    /* 3 */ '  "rules": [',
    /* 4 */ '    { "name": "a", "match": { "uids": ["1000"] }, "devices": ["sim0"],',
    /* 5 */ '      "regions": ["BAR0"], "attributes": ["XC"], "prot": ["r"], "limits": { "mappings": -3 } }',
    /* 6 */ "  ],",
    /* 7 */ '  "extra": true',
    /* 8 */ "}",
    "",
  ].join("\n");
  assert.deepEqual(errorsOf(text, "policy.json"), [
    'policy.json:4:40: rules[0].match.uids[0]: "1000" is a string; write the uid as a number: 1000',
    'policy.json:5:43: rules[0].attributes[0]: "XC" is not an attribute; use UC or WC (WB only on simulated memory)',
    "policy.json:5:89: rules[0].limits.mappings: -3 is negative; a limit is a count of 0 or more (0 allows none)",
    'policy.json:7:3: top level: unknown key "extra"; allowed keys: version, defaults, rules',
  ]);
});

test("missing version, missing rules, empty text, non-map top level", () => {
  assert.deepEqual(errorsOf("rules: []\n"), [
    'policy.yaml:1:1: version: required but missing; add "version: 1" at the top',
  ]);
  assert.deepEqual(errorsOf("version: 1\n"), [
    "policy.yaml:1:1: rules: required but missing; add a rules list (an empty list denies everything)",
  ]);
  assert.deepEqual(errorsOf('version: "1"\nrules: []\n'), [
    'policy.yaml:1:10: version: "1" is a string; write version: 1 without quotes',
  ]);
  assert.deepEqual(errorsOf(""), [
    'policy.yaml:1:1: top level: the policy is empty; start with "version: 1" and a rules list',
  ]);
  assert.deepEqual(errorsOf("- 1\n"), [
    "policy.yaml:1:1: top level: must be a map like { version: 1, rules: [...] }, not a list",
  ]);
  // an empty rules list is valid: it denies everything
  assert.equal(parsePolicy("version: 1\nrules: []\n", "p").rules.length, 0);
});

test("YAML syntax errors and duplicate keys are positioned", () => {
  const [syntax, ...rest] = errorsOf("version: 1\nrules: [\n");
  assert.equal(rest.length, 0);
  assert.match(syntax!, /^policy\.yaml:\d+:\d+: top level: YAML: /);
  assert.deepEqual(errorsOf("version: 1\nrules: []\nversion: 1\n"), [
    "policy.yaml:3:1: version: appears twice in the same map; keep one",
  ]);
});

function rule(body: string): string {
  return `version: 1\nrules:\n  - name: r\n${body
    .split("\n")
    .map((l) => `    ${l}`)
    .join("\n")}\n`;
}
const REST = 'devices: ["sim*"]\nregions: ["*"]\nattributes: [UC]\nprot: [r]';

test("a match that would match nobody is an error", () => {
  assert.deepEqual(errorsOf(rule(REST)), [
    "policy.yaml:3:5: rules[0].match: required but missing; a rule without match would match nobody: write match: { any: true } to match every identity, or list uids, gids, cgroups, containers, pods or claims",
  ]);
  assert.deepEqual(errorsOf(rule(`match: {}\n${REST}`)), [
    "policy.yaml:4:12: rules[0].match: matches nobody; write match: { any: true } to match every identity, or list uids, gids, cgroups, containers, pods or claims",
  ]);
  assert.deepEqual(errorsOf(rule(`match: { any: false }\n${REST}`)), [
    "policy.yaml:4:12: rules[0].match: matches nobody; write match: { any: true } to match every identity, or list uids, gids, cgroups, containers, pods or claims",
  ]);
  assert.deepEqual(errorsOf(rule(`match: { uids: [] }\n${REST}`)), [
    "policy.yaml:4:20: rules[0].match.uids: is empty, so it allows nothing; list the uids, e.g. [1000]",
  ]);
  assert.deepEqual(errorsOf(rule(`match: { any: true, uids: [1] }\n${REST}`)), [
    "policy.yaml:4:19: rules[0].match.any: any: true cannot be combined with uids, gids, cgroups, containers, pods or claims (all given matchers must match, so it would add nothing); remove any, or the other matchers to match everyone",
  ]);
});

test("globs and names that could never match are errors", () => {
  const match = "match: { any: true }\n";
  const tail = 'regions: ["*"]\nattributes: [UC]\nprot: [r]';
  assert.deepEqual(errorsOf(rule(`${match}devices: ["03:00.0", "0000:3B:00.0", "sim 0"]\n${tail}`)), [
    'policy.yaml:5:15: rules[0].devices[0]: "03:00.0" lacks the PCI domain and would match nothing; write "0000:03:00.0"',
    'policy.yaml:5:26: rules[0].devices[1]: "0000:3B:00.0" would match nothing: device ids use lowercase hex as in sysfs; write "0000:3b:00.0"',
    'policy.yaml:5:42: rules[0].devices[2]: "sim 0" is not a device id or glob; device ids are BDFs like 0000:03:00.0 or simulated names like sim0 (letters, digits, ".", ":", "-", "_", and "*")',
  ]);
  assert.deepEqual(errorsOf(rule(`match: { cgroups: ["system.slice/x"] }\n${REST}`)), [
    'policy.yaml:4:24: rules[0].match.cgroups[0]: "system.slice/x" would match nothing: cgroup v2 paths start with "/"; write "/system.slice/x" or "**/system.slice/x"',
  ]);
  assert.deepEqual(
    errorsOf(
      `version: 1\nrules:\n  - name: "has space"\n    match: { any: true }\n${REST.replace(/^/gm, "    ")}\n`,
    ),
    [
      'policy.yaml:3:11: rules[0].name: "has space" is not a usable rule name (it becomes a metric label); use letters, digits, "-", "_" and ".", starting with a letter or digit, at most 64 characters',
    ],
  );
});

test("regions, prot, booleans and list shapes", () => {
  const match = "match: { any: true }\n";
  assert.deepEqual(
    errorsOf(
      rule(`${match}devices: sim0\nregions: [bar0, BAR6]\nattributes: [wc]\nprot: [w]\nallowDeviceFd: "no"`),
    ),
    [
      'policy.yaml:5:14: rules[0].devices: must be a list of device ids or globs, not "sim0"; write a list: ["sim0"]',
      'policy.yaml:6:15: rules[0].regions[0]: "bar0" is not a region; use BAR0..BAR5, ROM, CONFIG, VGA, or "*" for all; did you mean "BAR0"?',
      'policy.yaml:6:21: rules[0].regions[1]: "BAR6" is not a region; use BAR0..BAR5, ROM, CONFIG, VGA, or "*" for all',
      'policy.yaml:7:18: rules[0].attributes[0]: "wc" is not an attribute; use UC or WC (WB only on simulated memory); did you mean "WC"?',
      'policy.yaml:8:12: rules[0].prot[0]: "w" is not a prot; use r or rw; did you mean "rw"?',
      'policy.yaml:9:20: rules[0].allowDeviceFd: "no" is not true or false; write true or false',
    ],
  );
  assert.deepEqual(
    errorsOf(rule(`${match}devices: [sim0, sim0]\nregions: ["*"]\nattributes: [UC]\nprot: [r]`)),
    ['policy.yaml:5:21: rules[0].devices[1]: "sim0" is listed twice; remove one'],
  );
});

test("limits: the per-identity quota keys are checked like the others", () => {
  const text = [
    "version: 1",
    "rules:",
    "  - name: r",
    "    match: { any: true }",
    '    devices: ["sim*"]',
    "    regions: [BAR0]",
    "    attributes: [UC]",
    "    prot: [r]",
    "    limits: { sessions: -1, fdConnections: many, pendingMappings: 1.5 }",
    "",
  ].join("\n");
  const errors = errorsOf(text);
  assert.equal(errors.length, 3, errors.join("\n"));
  assert.match(errors[0]!, /rules\[0\]\.limits\.sessions: -1 is negative; a limit is a count of 0 or more/);
  assert.match(errors[1]!, /rules\[0\]\.limits\.fdConnections: .*many.* is not a count/);
  assert.match(errors[2]!, /rules\[0\]\.limits\.pendingMappings: 1\.5 is not a count/);
});

test("limits: defaults, per-rule overrides, sizes", () => {
  const text = `version: 1
defaults:
  limits: { mappings: 4, bytes: 2MiB }
rules:
  - name: a
    match: { uids: [1] }
    devices: [sim0]
    regions: [BAR0]
    attributes: [UC]
    prot: [r]
  - name: b
    match: { uids: [2] }
    devices: [sim0]
    regions: [BAR0]
    attributes: [UC]
    prot: [r]
    limits: { deviceFiles: 0, bytes: 4096 }
`;
  const p: Policy = parsePolicy(text, "p");
  assert.deepEqual(p.rules[0]!.limits, {
    sessions: 64,
    fdConnections: 64,
    pendingMappings: 64,
    deviceFiles: 64,
    mappings: 4,
    bytes: 2n * 1024n * 1024n,
    unreadFds: 256,
  });
  assert.deepEqual(p.rules[1]!.limits, {
    sessions: 64,
    fdConnections: 64,
    pendingMappings: 64,
    deviceFiles: 0,
    mappings: 4,
    bytes: 4096n,
    unreadFds: 256,
  });
  assert.deepEqual(errorsOf("version: 1\ndefaults:\n  limit: {}\nrules: []\n"), [
    'policy.yaml:3:3: defaults: unknown key "limit"; did you mean "limits"? allowed keys: limits',
  ]);
  assert.deepEqual(errorsOf("version: 1\ndefaults:\n  limits: { bytes: 1.5GiB, maps: 3 }\nrules: []\n"), [
    'policy.yaml:3:20: defaults.limits.bytes: "1.5GiB" is not a size; use a whole number of bytes or a string with suffix B, KiB, MiB, GiB or TiB (e.g. 1GiB)',
    'policy.yaml:3:28: defaults.limits: unknown key "maps"; allowed keys: sessions, fdConnections, pendingMappings, deviceFiles, mappings, bytes, unreadFds',
  ]);
});

test("parseSize", () => {
  assert.equal(parseSize(0), 0n);
  assert.equal(parseSize(4096), 4096n);
  assert.equal(parseSize("4096"), 4096n);
  assert.equal(parseSize("7B"), 7n);
  assert.equal(parseSize("1KiB"), 1024n);
  assert.equal(parseSize("3 MiB"), 3n << 20n);
  assert.equal(parseSize("1GiB"), 1n << 30n);
  assert.equal(parseSize("2TiB"), 2n << 40n);
  for (const bad of ["1GB", "1gib", "-1GiB", "1.5MiB", "GiB", "", "1PiB", -1, 1.5, 2 ** 60, null, true]) {
    assert.equal(typeof parseSize(bad), "string", `${String(bad)} should be rejected`);
  }
  assert.match(parseSize("-1GiB") as string, /negative/);
  assert.match(parseSize("10m") as string, /did you mean "10MiB"/);
});

test("aliases are followed", () => {
  const text = `version: 1
rules:
  - name: a
    match: { uids: [1] }
    devices: &nics ["0000:3b:00.0", "0000:3b:00.1"]
    regions: [BAR2]
    attributes: [WC]
    prot: [rw]
  - name: b
    match: { uids: [2] }
    devices: *nics
    regions: [BAR0]
    attributes: [UC]
    prot: [r]
`;
  assert.deepEqual(parsePolicy(text, "p").rules[1]!.devices, ["0000:3b:00.0", "0000:3b:00.1"]);
});

const CID = "4f3c2b1a".repeat(8);
const PUID = "0c4f2a9e-1111-2222-3333-444455556666";

test("containers and pods matchers parse, alone or with the others", () => {
  const p = parsePolicy(
    rule(
      `match:\n  containers: ["${CID}", "a1b2*"]\n  pods: ["${PUID}", "${"e".repeat(32)}"]\n  uids: [0]\n${REST}`,
    ),
    "policy.yaml",
  );
  assert.deepEqual(p.rules[0]!.match, {
    any: false,
    uids: [0],
    containers: [CID, "a1b2*"],
    pods: [PUID, "e".repeat(32)],
  });
  assert.ok(Object.isFrozen(p.rules[0]!.match.containers) && Object.isFrozen(p.rules[0]!.match.pods));
  assert.deepEqual(parsePolicy(rule(`match: { pods: ["${PUID}"] }\n${REST}`), "p").rules[0]!.match, {
    any: false,
    pods: [PUID],
  });
});

test("container ids and pod UIDs that could never match are errors, at their line:col", () => {
  const text = rule(
    [
      "match:",
      `  containers: ["${CID.slice(0, 12)}", "${CID.toUpperCase()}", "web-1", "*", "${CID}", "${CID}"]`,
      `  pods: ["${PUID.replaceAll("-", "_")}", "${PUID.toUpperCase()}", "pod-*", "nginx", 7]`,
      REST,
    ].join("\n"),
  );
  assert.deepEqual(errorsOf(text), [
    `policy.yaml:5:20: rules[0].match.containers[0]: "${CID.slice(0, 12)}" has 12 hex digits and would match nothing: container ids have 64; write the full id, or "${CID.slice(0, 12)}*" to match by prefix`,
    `policy.yaml:5:36: rules[0].match.containers[1]: "${CID.toUpperCase()}" would match nothing: container ids are lowercase hex; write "${CID}"`,
    `policy.yaml:5:104: rules[0].match.containers[2]: "web-1" is not a container id; write the full 64-hex id (docker inspect --format '{{.Id}}', crictl ps --no-trunc) or a glob like "4f3c2b1a*"`,
    `policy.yaml:5:113: rules[0].match.containers[3]: "*" matches every container but no process outside one; to say so, write cgroups: ["**"] or list the ids`,
    `policy.yaml:5:186: rules[0].match.containers[5]: "${CID}" is listed twice; remove one`,
    `policy.yaml:6:14: rules[0].match.pods[0]: "${PUID.replaceAll("-", "_")}" would match nothing: pod UIDs are lowercase with dashes (kubectl get pod -o jsonpath='{.metadata.uid}'); write "${PUID}"`,
    `policy.yaml:6:54: rules[0].match.pods[1]: "${PUID.toUpperCase()}" would match nothing: pod UIDs are lowercase with dashes (kubectl get pod -o jsonpath='{.metadata.uid}'); write "${PUID}"`,
    `policy.yaml:6:94: rules[0].match.pods[2]: "pod-*": pods takes exact pod UIDs, not globs; list each UID, or match by cgroups: ["/kubepods.slice/**"]`,
    `policy.yaml:6:103: rules[0].match.pods[3]: "nginx" is not a pod UID; write the pod's metadata.uid, e.g. "0c4f2a9e-1111-2222-3333-444455556666" (kubectl get pod NAME -o jsonpath='{.metadata.uid}')`,
    "policy.yaml:6:112: rules[0].match.pods[4]: 7 is not one of the pod UIDs; write a string",
  ]);
  assert.deepEqual(errorsOf(rule(`match: { containers: [] }\n${REST}`)), [
    `policy.yaml:4:26: rules[0].match.containers: is empty, so it allows nothing; list the container ids, e.g. ["${CID}"]`,
  ]);
  assert.deepEqual(errorsOf(rule(`match: { any: true, pods: ["${PUID}"] }\n${REST}`)), [
    "policy.yaml:4:19: rules[0].match.any: any: true cannot be combined with uids, gids, cgroups, containers, pods or claims (all given matchers must match, so it would add nothing); remove any, or the other matchers to match everyone",
  ]);
  assert.deepEqual(errorsOf(rule(`match: { container: ["${CID}"] }\n${REST}`)), [
    "policy.yaml:4:12: rules[0].match: matches nobody; write match: { any: true } to match every identity, or list uids, gids, cgroups, containers, pods or claims",
    'policy.yaml:4:14: rules[0].match: unknown key "container"; did you mean "containers"? allowed keys: any, uids, gids, cgroups, containers, pods, claims',
  ]);
});

test("revoke: enforcement per rule, kill or none, with a bounded grace; absent means none", () => {
  assert.deepEqual(parsePolicy(GOOD, "<inline>").rules[0]!.revoke, { enforce: "none", graceMs: 5000 });
  const kill = parsePolicy(`${GOOD}    revoke: { enforce: kill, graceMs: 250 }\n`, "<inline>").rules[0]!;
  assert.deepEqual(kill.revoke, { enforce: "kill", graceMs: 250 });
  assert.ok(Object.isFrozen(kill.revoke));
  const errors = errorsOf(`${GOOD}    revoke: { enforce: terminate, graceMs: -1, after: 3 }\n`);
  assert.equal(errors.length, 3, errors.join("\n"));
  assert.match(
    errors.join("\n"),
    /rules\[0\]\.revoke\.enforce: "terminate" is not an enforcement; write kill/,
  );
  assert.match(
    errors.join("\n"),
    /rules\[0\]\.revoke\.graceMs: -1 is not a grace period; use an integer 0\.\.3600000/,
  );
  assert.match(errors.join("\n"), /rules\[0\]\.revoke.*after/);
});

// inflight-exemption: CapEff parsing and the rule the kernel applies (too_many_unix_fds():
// CAP_SYS_RESOURCE or CAP_SYS_ADMIN exempts the sender), and the start-up warning.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  CAP_SYS_ADMIN,
  CAP_SYS_RESOURCE,
  inflightExemption,
  inflightWarning,
  parseCapEff,
} from "./inflight-exemption.js";

const status = (eff: string) =>
  `Name:\tnode\nCapInh:\t0000000000000000\nCapPrm:\t${eff}\nCapEff:\t${eff}\nCapBnd:\t${eff}\n`;

test("the shipped sets: compose/Kubernetes (CHOWN, SYS_RESOURCE) and the unit (+ SYS_ADMIN, SYS_RAWIO) are exempt; CHOWN alone is not", () => {
  assert.deepEqual(inflightExemption(parseCapEff(status("0000000001000001"))!), {
    sysResource: true,
    sysAdmin: false,
    exempt: true,
  });
  assert.equal(inflightExemption(parseCapEff(status("0000000001220001"))!).exempt, true);
  assert.equal(inflightExemption(parseCapEff(status("0000000000000001"))!).exempt, false);
  assert.equal(parseCapEff("Name:\tx\n"), undefined);
});

test("the warning: none when exempt; otherwise it names the uid, the limit and the fix", () => {
  assert.equal(inflightWarning({ sysResource: true, sysAdmin: false, exempt: true }, 0, 4096), "");
  const w = inflightWarning({ sysResource: false, sysAdmin: false, exempt: false }, 0, 4096);
  assert.match(w, /neither CAP_SYS_RESOURCE nor CAP_SYS_ADMIN/);
  assert.match(w, /uid 0 .* 4096/);
  assert.match(inflightWarning(undefined, 1000, 1024), /cannot tell its capabilities/);
});

test("property: exempt exactly when bit 21 or bit 24 is set", () => {
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: (1n << 41n) - 1n }), (mask) => {
      const hex = mask.toString(16).padStart(16, "0");
      const e = inflightExemption(parseCapEff(status(hex))!);
      const want =
        ((mask >> BigInt(CAP_SYS_ADMIN)) & 1n) === 1n || ((mask >> BigInt(CAP_SYS_RESOURCE)) & 1n) === 1n;
      assert.equal(e.exempt, want);
    }),
  );
});

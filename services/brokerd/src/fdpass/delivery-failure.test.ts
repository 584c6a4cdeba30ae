// classifyDeliveryFailure: the errno label is always one of the fixed list (metrics cardinality),
// whether the frame went out is the native layer's word, and ETOOMANYREFS says what the operator
// must do with brokerd's own uid and limit.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { classifyDeliveryFailure, DELIVERY_FAILURE_ERRNOS } from "./delivery-failure.js";

const ctx = { uid: 0, nofile: 4096 };
const err = (code: string, message = `sendmsg(fd 12): ${code}`) =>
  Object.assign(new Error(message), { code });

test("ETOOMANYREFS: counted as such, names the capability, brokerd's uid and RLIMIT_NOFILE", () => {
  const f = classifyDeliveryFailure(err("ETOOMANYREFS"), true, ctx);
  assert.equal(f.errno, "ETOOMANYREFS");
  assert.equal(f.unsent, true);
  assert.match(f.message, /ETOOMANYREFS/);
  assert.match(f.message, /CAP_SYS_RESOURCE/);
  assert.match(f.message, /uid 0/);
  assert.match(f.message, /\(4096\)/);
  assert.doesNotMatch(f.message, /restart/);
});

test("a client that went away or stopped reading keeps its errno; anything else is other", () => {
  assert.equal(classifyDeliveryFailure(err("EPIPE"), false, ctx).errno, "EPIPE");
  assert.equal(
    classifyDeliveryFailure(err("ETIMEDOUT", "the reply took over 5000 ms"), false, ctx).errno,
    "ETIMEDOUT",
  );
  assert.equal(classifyDeliveryFailure(new Error("no code"), false, ctx).errno, "other");
  assert.equal(classifyDeliveryFailure("a string", false, ctx).errno, "other");
  assert.match(classifyDeliveryFailure(err("EPIPE"), false, ctx).message, /EPIPE/);
});

test("property: the label is bounded and unsent is passed through, whatever the error", () => {
  fc.assert(
    fc.property(fc.string(), fc.string({ maxLength: 500 }), fc.boolean(), (code, message, unsent) => {
      const f = classifyDeliveryFailure(err(code, message), unsent, ctx);
      assert.ok((DELIVERY_FAILURE_ERRNOS as readonly string[]).includes(f.errno));
      assert.equal(f.unsent, unsent);
      assert.ok(f.message.length < 1000);
    }),
  );
});

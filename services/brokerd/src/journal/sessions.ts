// Journal lines for sessions and their device files: opened, resumed after a restart, ended, and
// device files opened and closed. Opens, ends and device files are a client's churn (full lines up
// to a budget per identity, then counted). Builds lines only; never changes broker state.
import type { Broker } from "../broker.js";
import { cgroupIdentityOf } from "../identity/container.js";
import { whose } from "./fields.js";
import type { Handlers, JournalLines } from "./lines.js";

export function sessionLines(out: JournalLines, broker: Broker): Partial<Handlers> {
  return {
    "session.open": (s) =>
      out.churn("session.open", s.identity.uid, s.identity.pid, "", () => ({
        session: s.id,
        ...s.identity,
        ...cgroupIdentityOf(s.identity),
        pidfd: undefined,
        groups: undefined,
      })),
    "session.resume": (s, fresh) =>
      out.write("session.resume", {
        session: s.id,
        connection: fresh.id,
        uid: s.identity.uid,
        pid: s.identity.pid,
        deviceFiles: s.deviceFiles.size,
        mappings: s.mappingCount,
      }),
    "session.end": (s, reason, ms) =>
      out.churn("session.end", s.identity.uid, s.identity.pid, reason, () => ({
        session: s.id,
        reason,
        cleanupMs: ms,
      })),
    "devicefile.open": (df) => {
      const w = whose(broker, df.sessionId);
      out.churn("devicefile.open", w.uid, w.pid, df.device.id, () => ({
        session: df.sessionId,
        deviceFile: df.id,
        device: df.device.id,
        layout: df.layout,
      }));
    },
    "devicefile.close": (df, reason) => {
      const w = whose(broker, df.sessionId);
      out.churn("devicefile.close", w.uid, w.pid, `${df.device.id} ${reason}`, () => ({
        session: df.sessionId,
        deviceFile: df.id,
        reason,
      }));
    },
  };
}

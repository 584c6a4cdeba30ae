// The one place the agent tells brokerd which pods hold which devices for a prepared claim, and
// takes that back on unprepare. brokerd's policy then grants exactly those devices to exactly those
// pods (matched by the pod UID brokerd reads from the caller's cgroup). Both calls must be
// idempotent on brokerd's side: the plugin repeats them after its own restart.
// list() reads back what brokerd has bound, so the agent can re-bind what brokerd lost (a node
// reboot sets brokerd's state store aside while the agent's checkpoint keeps the claims).
// brokerd's side is AdminService.BindClaim / UnbindClaim / ListClaims on its admin socket (root only).
import { AdminService, createClient } from "@vfio-broker/proto";

export interface ClaimBinding {
  claimUid: string;
  namespace: string;
  claimName: string;
  /** metadata.uid of each pod the claim is reserved for. */
  podUids: string[];
  /** brokerd device ids ("sim0", "0000:3b:00.0"). */
  deviceIds: string[];
}

export interface ClaimBinder {
  /** Binds (or re-binds, replacing pods and devices) a claim. */
  bind(b: ClaimBinding): Promise<void>;
  /** Removes a claim's binding and revokes what its pods hold; succeeds for an unbound claim. */
  unbind(claimUid: string): Promise<void>;
  /** Every claim binding brokerd holds. */
  list(): Promise<ClaimBinding[]>;
}

const TIMEOUT_MS = 10_000;

/** The binder that calls brokerd's admin socket, one connection per call. */
export class BrokerdBinder implements ClaimBinder {
  constructor(private readonly adminSocket: string) {}

  async bind(b: ClaimBinding): Promise<void> {
    const admin = createClient(AdminService, `unix:${this.adminSocket}`);
    try {
      await admin.bindClaim({ claim: b }, { timeoutMs: TIMEOUT_MS });
    } finally {
      admin.close();
    }
  }

  async unbind(claimUid: string): Promise<void> {
    const admin = createClient(AdminService, `unix:${this.adminSocket}`);
    try {
      await admin.unbindClaim({ claimUid }, { timeoutMs: TIMEOUT_MS });
    } finally {
      admin.close();
    }
  }

  async list(): Promise<ClaimBinding[]> {
    const admin = createClient(AdminService, `unix:${this.adminSocket}`);
    try {
      const res = await admin.listClaims({}, { timeoutMs: TIMEOUT_MS });
      return res.claims.map((c) => ({
        claimUid: c.claimUid,
        namespace: c.namespace,
        claimName: c.claimName,
        podUids: [...c.podUids],
        deviceIds: [...c.deviceIds],
      }));
    } finally {
      admin.close();
    }
  }
}

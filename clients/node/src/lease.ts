// lease.ts: owns the client end of the Lease stream: it waits for LeaseGranted, then sends a
// Keepalive at the interval the broker granted, and hands revocations and device health events to
// its owner. It reports the stream's loss exactly once (never after end() was asked for). It does not
// decide what a revocation means for mappings: that is the BrokerClient's job.
import type {
  BrokerService,
  LeaseResponse,
  DeviceHealth as PbDeviceHealth,
  PromiseClient,
  Revocation,
} from "@vfio-broker/proto";
import { BrokerClientError, toClientError } from "./errors.js";

export interface LeaseHandlers {
  revocation(r: Revocation): void;
  deviceHealth(deviceId: string, health: PbDeviceHealth): void;
  /**
   * The stream ended or failed without end() being called. endedReason: LeaseEnded's reason when
   * the broker said why ("restart": it keeps the session for a resume); undefined on transport loss.
   */
  lost(reason: string, error: Error | undefined, endedReason?: string): void;
}

export interface LeaseGrant {
  sessionId: string;
  keepaliveIntervalMs: number;
}

type LeaseCall = ReturnType<PromiseClient<typeof BrokerService>["lease"]>;

export class Lease {
  readonly #handlers: LeaseHandlers;
  readonly #stream: LeaseCall;
  #timer: NodeJS.Timeout | undefined;
  #sequence = 0n;
  #ended = false;
  #lost = false;
  #granted: LeaseGrant | undefined;
  #lastAck = 0n;

  private constructor(rpc: PromiseClient<typeof BrokerService>, handlers: LeaseHandlers) {
    this.#handlers = handlers;
    this.#stream = rpc.lease();
  }

  /** Opens the stream and resolves once the broker granted the lease (or rejects within timeoutMs). */
  static open(
    rpc: PromiseClient<typeof BrokerService>,
    handlers: LeaseHandlers,
    timeoutMs = 10_000,
  ): Promise<{ lease: Lease; grant: LeaseGrant }> {
    const lease = new Lease(rpc, handlers);
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        lease.end();
        reject(
          new BrokerClientError(
            "DEADLINE_EXCEEDED",
            `the broker did not grant a lease within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      lease.#start(
        (grant) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve({ lease, grant });
        },
        (err) => {
          if (settled) return false;
          settled = true;
          clearTimeout(timer);
          reject(err);
          return true;
        },
      );
    });
  }

  get granted(): LeaseGrant | undefined {
    return this.#granted;
  }

  /** Sequence number of the last keepalive the broker acknowledged. */
  get lastAck(): bigint {
    return this.#lastAck;
  }

  get active(): boolean {
    return !this.#ended && !this.#lost;
  }

  /** Half-closes the stream: the broker ends the session. Idempotent; no "lost" report follows. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    clearInterval(this.#timer);
    try {
      this.#stream.call.end();
    } catch {
      // already gone
    }
  }

  #start(onGranted: (g: LeaseGrant) => void, onEarlyError: (e: Error) => boolean): void {
    const call = this.#stream.call;
    const fail = (reason: string, err: Error | undefined, endedReason?: string) => {
      clearInterval(this.#timer);
      if (this.#ended || this.#lost) return;
      this.#lost = true;
      if (
        !this.#granted &&
        onEarlyError(err ?? new BrokerClientError("UNAVAILABLE", `the lease ended: ${reason}`))
      )
        return;
      this.#handlers.lost(reason, err, endedReason);
    };
    call.on("data", (res: LeaseResponse) => {
      const k = res.kind;
      switch (k.case) {
        case "granted": {
          const interval = k.value.keepaliveIntervalMs > 0 ? k.value.keepaliveIntervalMs : 5000;
          this.#granted = { sessionId: k.value.sessionId, keepaliveIntervalMs: interval };
          clearInterval(this.#timer);
          this.#timer = setInterval(() => this.#keepalive(), interval);
          this.#timer.unref();
          onGranted(this.#granted);
          break;
        }
        case "keepaliveAck":
          this.#lastAck = k.value.sequence;
          break;
        case "revocation":
          this.#handlers.revocation(k.value);
          break;
        case "deviceHealth":
          this.#handlers.deviceHealth(k.value.deviceId, k.value.health);
          break;
        case "ended": {
          // The broker's last word: why the session ended (the call then ends with status OK).
          const why = `the broker ended the session (${k.value.reason})${k.value.message ? `: ${k.value.message}` : ""}`;
          fail(why, new BrokerClientError("UNAVAILABLE", why), k.value.reason);
          break;
        }
        default:
          break; // a newer broker's event kind: ignore
      }
    });
    call.on("error", (e: unknown) => {
      const err = toClientError(e, "Lease");
      fail(err.message, err);
    });
    call.on("end", () => fail("the broker ended the lease stream", undefined));
  }

  #keepalive(): void {
    if (!this.active) return;
    this.#sequence += 1n;
    try {
      this.#stream.send({ kind: { case: "keepalive", value: { sequence: this.#sequence } } });
    } catch {
      // the stream's own error/end handler reports the loss
    }
  }
}

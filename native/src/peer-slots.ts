// peer-slots.ts: owns counting a listener's connections per peer (a uid, or "unknown" when the
// peer could not be identified) against a per-peer cap, a smaller cap for the shared unknown
// bucket, and a cap on all of them. Pure bookkeeping: it never touches a socket; an entry whose
// count falls to 0 is dropped, so memory follows what is open.

export type PeerKey = number | "unknown";

export interface SlotLimits {
  /** Connections one identified uid may hold. */
  perUid: number;
  /** Connections all unidentified peers may hold together. */
  unknown: number;
  /** Connections held in all. */
  total: number;
}

export class PeerSlots {
  readonly #held = new Map<PeerKey, number>();
  #total = 0;

  constructor(readonly limits: SlotLimits) {}

  get total(): number {
    return this.#total;
  }

  held(key: PeerKey): number {
    return this.#held.get(key) ?? 0;
  }

  /** Why key may not have one more ("" if it may). */
  refusal(key: PeerKey): "" | "total" | "per-peer" {
    if (this.#total >= this.limits.total) return "total";
    const cap = key === "unknown" ? this.limits.unknown : this.limits.perUid;
    return this.held(key) >= cap ? "per-peer" : "";
  }

  /** Takes a slot for key if the caps allow; false (nothing taken) otherwise. */
  take(key: PeerKey): boolean {
    if (this.refusal(key) !== "") return false;
    this.#held.set(key, this.held(key) + 1);
    this.#total++;
    return true;
  }

  /** Gives back a slot key took. */
  give(key: PeerKey): void {
    const n = this.held(key);
    if (n <= 0) return;
    if (n === 1) this.#held.delete(key);
    else this.#held.set(key, n - 1);
    this.#total--;
  }

  /** Peers holding slots (at most total). */
  get peers(): number {
    return this.#held.size;
  }
}

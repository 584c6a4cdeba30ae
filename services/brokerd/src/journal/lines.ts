// What an event handler of the journal may do: write a line, write one that a client can repeat
// (aggregated per identity and result), or write one of a client's successes (full lines up to a
// budget, then counted). The Journal implements it (journal.ts); the handlers (sessions.ts,
// grants.ts, refusals.ts, revocation.ts, host.ts) only build fields and call it. Nothing here does
// I/O or changes broker state.
import type { BrokerEvents } from "../broker.js";
import type { KeyFields } from "./aggregate.js";

export interface JournalLines {
  /** Writes one event line, or drops and counts it. Never throws. */
  write(event: string, fields: Record<string, unknown>): void;
  /** An event a client can repeat: the first per identity and result per window in full, then counts. */
  repeated(event: string, key: KeyFields, pid: number | undefined, full: Record<string, unknown>): void;
  /**
   * Something a client did successfully: written in full up to the identity's budget per event and
   * window, then counted with a tally of `detail`.
   */
  churn(
    event: string,
    uid: number | string,
    pid: number | undefined,
    detail: string,
    full: () => Record<string, unknown>,
  ): void;
}

/** Handlers for the Broker's events, by event name. */
export type Handlers = { [K in keyof BrokerEvents]: (...args: BrokerEvents[K]) => void };

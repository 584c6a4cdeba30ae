// What every metrics module shares: the series name prefix, the latency buckets, and subscribing
// a table of Broker event handlers with its detach. It defines no series itself and never changes
// broker state.
import type { Broker, BrokerEvents } from "../broker.js";

export const P = "vfio_broker_";

/** Latency buckets, seconds: 50 µs .. 2.5 s (CreateMapping and fd delivery are sub-millisecond). */
export const FAST_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5,
];

export type Handlers = { [K in keyof BrokerEvents]: (...args: BrokerEvents[K]) => void };

/** Subscribes each handler to its event; returns the detach that unsubscribes them all. */
export function subscribe(broker: Broker, on: Partial<Handlers>): () => void {
  for (const [event, fn] of Object.entries(on)) broker.on(event as keyof Handlers, fn as never);
  return () => {
    for (const [event, fn] of Object.entries(on)) broker.off(event as keyof Handlers, fn as never);
  };
}

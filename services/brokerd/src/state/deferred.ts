// Deferred: a promise together with what settles it, for a promise many callers share and that
// something else settles later (StateStore.group: every call of one write waits for that write).
// Pure: no I/O, no timers.

export interface Deferred {
  promise: Promise<void>;
  resolve(): void;
  reject(e: unknown): void;
}

export function deferred(): Deferred {
  const d = {} as Deferred;
  d.promise = new Promise<void>((resolve, reject) => {
    d.resolve = resolve;
    d.reject = reject;
  });
  return d;
}

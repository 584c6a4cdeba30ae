// Txn: the one undo path of the core's creations. A creation charges quotas, books pages, opens a
// backing, takes a cookie and writes its record, each step registering its undo; if any later step
// throws (a quota, a page conflict, a full cookie space, a failed state write), the undos run in
// reverse order and the error goes on to the caller. Owns nothing but the undo list; no I/O.
export class Txn {
  private readonly undos: (() => void)[] = [];

  /** Registers the undo of a step that just succeeded. */
  did(undo: () => void): void {
    this.undos.push(undo);
  }

  /** Runs fn; if it throws, undoes every step it registered (last first) and rethrows. */
  static run<T>(fn: (t: Txn) => T): T {
    const t = new Txn();
    try {
      return fn(t);
    } catch (e) {
      for (const undo of t.undos.reverse()) undo();
      throw e;
    }
  }
}

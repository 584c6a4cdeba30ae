// SessionTable: the live sessions and their indexes (by id, by the sha256 of the resume token, by
// the token itself once this brokerd has seen it), and how many wait to be resumed after a
// restart. It only indexes: it charges nothing, ends nothing and publishes nothing.

import { tokenHash } from "../core/types.js";
import type { Session } from "../identity/session.js";

const TOKEN = /^[0-9a-f]{32}$/;

export class SessionTable {
  readonly byId = new Map<string, Session>();
  /** By the sha256 of the resume token (resume, and grants on the fd channel after a restart). */
  readonly byTokenHash = new Map<string, Session>();
  /**
   * By the token itself, for the tokens this brokerd has seen (issued, or presented in a resume):
   * a grant on the fd channel then costs a map lookup, not a sha256.
   */
  private readonly byToken = new Map<string, Session>();
  /** Sessions restored after a restart and not resumed yet (not counted against --max-sessions). */
  detachedCount = 0;

  add(s: Session): void {
    this.byId.set(s.id, s);
    this.byTokenHash.set(s.tokenHash, s);
    if (s.resumeToken !== "") this.byToken.set(s.resumeToken, s);
  }

  /** A session restored from the state store: detached until its process resumes it. */
  addDetached(s: Session): void {
    this.add(s);
    this.detachedCount++;
  }

  remove(s: Session): void {
    this.undetach(s);
    this.byId.delete(s.id);
    if (this.byTokenHash.get(s.tokenHash) === s) this.byTokenHash.delete(s.tokenHash);
    if (this.byToken.get(s.resumeToken) === s) this.byToken.delete(s.resumeToken);
  }

  /** s presented its token in a resume: later lookups by it are cheap. */
  learnToken(s: Session, token: string): void {
    s.resumeToken = token;
    this.byToken.set(token, s);
  }

  /** s has a connection again (resumed), or ended: it no longer waits to be resumed. */
  undetach(s: Session): void {
    if (!s.detached) return;
    s.detachedSince = 0;
    this.detachedCount--;
  }

  get(id: string): Session | undefined {
    return this.byId.get(id);
  }

  /** The session a resume token names (the token, or its hash for a restored session). */
  byResumeToken(token: string): Session | undefined {
    return (
      this.byToken.get(token) ?? (TOKEN.test(token) ? this.byTokenHash.get(tokenHash(token)) : undefined)
    );
  }

  /** The session whose token hash matches token's (resume looks only at the durable index). */
  byHashOf(token: string): Session | undefined {
    return TOKEN.test(token) ? this.byTokenHash.get(tokenHash(token)) : undefined;
  }

  values(): IterableIterator<Session> {
    return this.byId.values();
  }

  /** The session and device file of a device-file id, over all sessions. */
  findDeviceFile(id: bigint) {
    for (const s of this.byId.values()) {
      const df = s.deviceFiles.get(id);
      if (df) return { session: s, df };
    }
    return undefined;
  }
}

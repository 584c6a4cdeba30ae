// Resume: after a restart (or a hand-over) a session restored from the state store waits detached
// for its process; Hello with its resume token on a fresh connection gives it back, if the kernel
// says the caller is that very process (same uid, pid and start time). Also finds the session an
// fd-channel request is made for, by token, with the same kernel checks. Owns those identity
// checks; never grants or ends anything but the fresh session a resume replaces.
import { pidfdAlive } from "@vfio-broker/native";
import type { Core } from "../core/context.js";
import { denied, restarting } from "../errors.js";
import type { Session } from "../identity/session.js";
import type { SessionSlots } from "./slots.js";

const TOKEN = /^[0-9a-f]{32}$/;

export class Resume {
  constructor(
    private readonly core: Core,
    private readonly slots: SessionSlots,
    private readonly endSession: (s: Session, reason: string, message: string) => void,
  ) {}

  /**
   * Hello with a resume token on a fresh connection: gives the connection back the restored
   * session the token names. The fresh session ends quietly and its quota slot moves over.
   * Returns undefined when nothing can be resumed (the caller keeps its fresh session).
   */
  resume(fresh: Session, token: string, attach: (s: Session) => void): Session | undefined {
    const { core } = this;
    core.guard.live(fresh);
    if (!TOKEN.test(token)) return undefined;
    const found = core.sessions.byHashOf(token);
    // This connection resumed that session already: a Hello tried again because its first reply
    // came late (a loaded machine, the client's 2 s timeout) or was lost. It stays resumed.
    if (found && found === fresh && !found.ended && found.resumeToken === token) return found;
    if (!found || found === fresh || !found.detached || found.ended) return undefined;
    const a = found.identity;
    const b = fresh.identity;
    if (a.uid !== b.uid || a.pid !== b.pid || a.startTime === "" || a.startTime !== b.startTime) {
      core.events.emit(
        "denied",
        fresh,
        "resume_identity",
        `resume token of session ${found.id} from another process`,
      );
      return undefined;
    }
    core.sessions.undetach(found);
    found.lastActiveAt = Date.now();
    // The slot was taken for the fresh session's tenant; the resumed one keeps the tenant it had
    // (the same uid's, unless /etc/subuid changed in between): the slot moves with it.
    this.slots.move(fresh, found);
    found.clientName = fresh.clientName;
    core.sessions.learnToken(found, token);
    // The connection moves to the resumed session before the fresh one ends (ending it would
    // otherwise close the connection).
    attach(found);
    this.endSession(fresh, "resumed", `resumed session ${found.id}`);
    core.events.emit("session.resume", found, fresh);
    return found;
  }

  /**
   * The session a grant or release on the fd channel is made for: the one the resume token names,
   * if the kernel says the connection's peer is its very process (uid, pid, and the session's pidfd
   * still alive, so the pid was not recycled). Throws PERMISSION_DENIED otherwise, and UNAVAILABLE
   * for a session waiting to be resumed (Hello first).
   */
  sessionForFd(token: string, peer: { uid: number; pid: number }): Session {
    const s = this.core.sessions.byResumeToken(token);
    if (
      !s ||
      s.ended ||
      s.identity.uid !== peer.uid ||
      s.identity.pid !== peer.pid ||
      !pidfdAlive(s.identity.pidfd)
    )
      throw denied(
        `no session of this process (uid ${peer.uid} pid ${peer.pid}) has that token; use the resume_token your Hello returned, from the same process`,
        "fd_session",
      );
    if (s.detached) throw restarting();
    return s;
  }

  /** A lease opened on s: the events it missed while detached come first. */
  leaseOpened(s: Session): void {
    for (const e of s.takeMissed()) s.lease?.send(e);
  }
}

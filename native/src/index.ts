// index.ts: the public API of @vfio-broker/native, the small native layer under brokerd and the
// client library: fd passing over Unix sockets (fdsocket.ts), peer identity and pidfds
// (identity.ts), memfds and mappings (memory.ts), ioctl and close (fd.ts), sd_notify (notify.ts),
// all as NativeError-throwing functions; and who is at the other end of a loopback TCP connection
// (tcp-owner.ts, with tcp-peer.ts's /proc/net/tcp fallback) with per-peer connection caps on a
// listener (peer-slots.ts, tcp-peer-guard.ts); and the directory rule (dir-rule.ts, pure) with
// verified directories reached through their fd (safe-dir.ts, UnsafePlaceError). The C side lives in
// src/*.c (see addon.c for the map).

export {
  ancestorProblem,
  type DirStat,
  type DirVerdict,
  fileProblem,
  ownProblem,
  plainName,
  verifyDir,
  within,
} from "./dir-rule.js";
export { NativeError } from "./errors.js";
export { closeFd, dupFd, flockExclusive, ioctl, setCloexec } from "./fd.js";
export {
  type FdMessage,
  FdServer,
  FdSocket,
  type FrameReceiver,
  frameNotSent,
  listenUnix,
  MAX_FDS_PER_MESSAGE,
  type RecvLimits,
  SENT,
} from "./fdsocket.js";
export {
  type PeerCred,
  type PeerIdentity,
  peerCred,
  peerIdentity,
  peerPidfd,
  pidfdAlive,
  pidfdOpen,
  pidfdSendSignal,
  type Watch,
  watchOwnPidfd,
  watchPidfd,
} from "./identity.js";
export { type Mapping, memfdCreate, mmap, PAGE_SIZE, type Prot } from "./memory.js";
export { sdNotify } from "./notify.js";
export { type PeerKey, PeerSlots, type SlotLimits } from "./peer-slots.js";
export {
  entryProblem,
  openInSafeDir,
  openSafeDir,
  type SafeDir,
  type SafeDirOptions,
  UnsafePlaceError,
} from "./safe-dir.js";
export { tcpPeerUid } from "./tcp-owner.js";
export { addressBytes, parseProcNetTcp, peerUid, type TcpConnection, type TcpTable } from "./tcp-peer.js";
export {
  guardTcpPeers,
  idleHttpConnection,
  MAX_REFUSED_LINGERING,
  type TcpPeerGuard,
  type TcpPeerGuardOptions,
} from "./tcp-peer-guard.js";

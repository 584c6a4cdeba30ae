// tcp-owner.ts: owns asking the kernel (sockdiag.c, NETLINK_SOCK_DIAG's exact lookup) for the uid
// of a loopback TCP connection's peer: the owner of the socket whose own address is our remote
// one and whose remote address is ours. O(1) whatever the number of sockets on the host. Only an
// ESTABLISHED socket names a uid; anything else is undefined (never "root").
import { raw } from "./binding.js";
import { addressBytes, type TcpConnection } from "./tcp-peer.js";

const TCP_ESTABLISHED = 1;

/**
 * The uid that created the peer's socket of conn (seen from our end), or undefined if there is no
 * such ESTABLISHED socket in this network namespace. Throws a NativeError if the kernel cannot be
 * asked (no inet_diag): the caller falls back to /proc/net/tcp (tcp-peer.ts).
 */
export function tcpPeerUid(conn: TcpConnection): number | undefined {
  const local = addressBytes(conn.localAddress);
  const remote = addressBytes(conn.remoteAddress);
  if (!local || !remote || !conn.localPort || !conn.remotePort) return undefined;
  const owner = raw.tcpSocketOwner(remote, conn.remotePort, local, conn.localPort);
  return owner && owner.state === TCP_ESTABLISHED ? owner.uid : undefined;
}

// sockdiag.c: owns asking the kernel who created one TCP socket, named by its 4-tuple, through
// NETLINK_SOCK_DIAG's exact lookup (inet_diag, as `ss` does, but one socket, not a dump): what a
// loopback listener needs to learn the uid of a connection's peer in O(1), however many sockets
// the host has. Unprivileged. It never guesses: a socket that is not found, or not ESTABLISHED
// (an orphan shows uid 0), is reported as such, and the caller treats it as unknown.
#include "common.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static bool is_v4_mapped(const uint8_t* a) {
  static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return memcmp(a, prefix, 12) == 0;
}

// tcpSocketOwner(src: 16 bytes, srcPort, dst: 16 bytes, dstPort) -> {uid, state} | null (no such
// socket). src is the socket's own address (IPv4 as ::ffff:a.b.c.d), dst its remote one.
static napi_value js_tcp_socket_owner(napi_env env, napi_callback_info info) {
  ARGS(4);
  void *src, *dst;
  size_t slen, dlen;
  int64_t sport, dport;
  if (!arg_bytes(env, argv[0], "tcpSocketOwner", "src", &src, &slen)) return NULL;
  if (!arg_int(env, argv[1], "tcpSocketOwner", "srcPort", 1, 65535, &sport)) return NULL;
  if (!arg_bytes(env, argv[2], "tcpSocketOwner", "dst", &dst, &dlen)) return NULL;
  if (!arg_int(env, argv[3], "tcpSocketOwner", "dstPort", 1, 65535, &dport)) return NULL;
  if (slen != 16 || dlen != 16) return throw_inval(env, "tcpSocketOwner", "addresses are 16 bytes");

  struct {
    struct nlmsghdr nh;
    struct inet_diag_req_v2 req;
  } msg;
  memset(&msg, 0, sizeof msg);
  msg.nh.nlmsg_len = sizeof msg;
  msg.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nh.nlmsg_flags = NLM_F_REQUEST; // not NLM_F_DUMP: the exact lookup
  static uint32_t seq;
  msg.nh.nlmsg_seq = ++seq;
  bool v4 = is_v4_mapped(src) && is_v4_mapped(dst);
  msg.req.sdiag_family = v4 ? AF_INET : AF_INET6;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = ~0U;
  msg.req.id.idiag_sport = htons((uint16_t)sport);
  msg.req.id.idiag_dport = htons((uint16_t)dport);
  if (v4) {
    memcpy(&msg.req.id.idiag_src[0], (uint8_t*)src + 12, 4);
    memcpy(&msg.req.id.idiag_dst[0], (uint8_t*)dst + 12, 4);
  } else {
    memcpy(msg.req.id.idiag_src, src, 16);
    memcpy(msg.req.id.idiag_dst, dst, 16);
  }
  msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;

  // One netlink socket per env, opened on first use. The kernel handles an exact lookup inside
  // sendto() and queues its answer before returning, so the recv never has to wait.
  addon_state* st = state_of(env);
  if (st->diag_fd == 0) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return throw_errno(env, errno, "socket", "AF_NETLINK, NETLINK_SOCK_DIAG");
    st->diag_fd = fd + 1;
  }
  int fd = st->diag_fd - 1;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  if (sendto(fd, &msg, sizeof msg, 0, (struct sockaddr*)&kernel, sizeof kernel) < 0)
    return throw_errno(env, errno, "sendto", "NETLINK_SOCK_DIAG");
  long buf[2048];
  ssize_t n;
  do n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    // Out of step with the kernel (no answer, or a stale one): start afresh next time.
    int e = errno;
    close(fd);
    st->diag_fd = 0;
    return throw_errno(env, e, "recv", "NETLINK_SOCK_DIAG");
  }
  for (struct nlmsghdr* h = (struct nlmsghdr*)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
    if (h->nlmsg_seq != seq) continue; // not the answer to this question
    if (h->nlmsg_type == NLMSG_ERROR) {
      const struct nlmsgerr* err = NLMSG_DATA(h);
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof *err)) break;
      if (err->error == -ENOENT) break; // no such socket
      return throw_errno(env, -err->error, "NETLINK_SOCK_DIAG", "inet_diag exact lookup");
    }
    if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
      const struct inet_diag_msg* m = NLMSG_DATA(h);
      napi_value o;
      napi_create_object(env, &o);
      set_named(env, o, "uid", make_int(env, m->idiag_uid));
      set_named(env, o, "state", make_int(env, m->idiag_state));
      return o;
    }
  }
  napi_value nul;
  napi_get_null(env, &nul);
  return nul;
}

void sockdiag_env_cleanup(addon_state* st) {
  if (st->diag_fd != 0) close(st->diag_fd - 1);
  st->diag_fd = 0;
}

void register_sockdiag(napi_env env, napi_value exports) {
  export_fn(env, exports, "tcpSocketOwner", js_tcp_socket_owner);
}

// peer.c: owns asking the kernel who is on the other end of a Unix socket: SO_PEERCRED (pid, uid,
// gid as of connect()) and SO_PEERPIDFD (a pidfd for that very process, immune to pid reuse). It
// never takes an identity from the peer's own words, and it never substitutes the weaker
// pidfd_open(pid) fallback itself: index.ts does that and labels the result.
#include "common.h"

#include <errno.h>
#include <sys/socket.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5; glibc 2.36 headers predate it */
#endif

static napi_value js_peer_cred(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd;
  if (!arg_fd(env, argv[0], "peerCred", "fd", &fd)) return NULL;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
    return throw_errno(env, errno, "getsockopt", "fd %d, SO_PEERCRED", fd);
  napi_value o;
  napi_create_object(env, &o);
  set_named(env, o, "pid", make_int(env, cred.pid));
  set_named(env, o, "uid", make_int(env, cred.uid));
  set_named(env, o, "gid", make_int(env, cred.gid));
  return o;
}

// peerPidfd(fd) -> pidfd, or null when the kernel has no SO_PEERPIDFD (ENOPROTOOPT / EINVAL).
static napi_value js_peer_pidfd(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd;
  if (!arg_fd(env, argv[0], "peerPidfd", "fd", &fd)) return NULL;
  int pidfd = -1;
  socklen_t len = sizeof pidfd;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0) {
    if (errno == ENOPROTOOPT || errno == EINVAL) {
      napi_value n;
      napi_get_null(env, &n);
      return n;
    }
    return throw_errno(env, errno, "getsockopt", "fd %d, SO_PEERPIDFD", fd);
  }
  return make_int(env, pidfd);
}

void register_peer(napi_env env, napi_value exports) {
  export_fn(env, exports, "peerCred", js_peer_cred);
  export_fn(env, exports, "peerPidfd", js_peer_pidfd);
}

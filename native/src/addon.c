// addon.c: owns registration only: the per-env state (instance data + cleanup hook) and the export
// table, one register_* call per concept file. No syscalls live here.
//   errors.c  NativeError construction, argument validation
//   fdpass.c  sendmsg/recvmsg with SCM_RIGHTS (JS arguments and errors)
//   fdmsg.c   the Node-free part: SCM_RIGHTS building, recvmsg + cmsg walk (also in native/fuzz)
//   sock.c    socketpair/connect/listen/accept, close/dup/cloexec
//   peer.c    SO_PEERCRED, SO_PEERPIDFD
//   pidfd.c   pidfd_open, liveness
//   mem.c     memfd_create, mmap/munmap as external ArrayBuffers
//   ioctl.c   ioctl with in/out buffers
//   notify.c  sd_notify (FDSTORE)
//   poll.c    uv_poll readiness (the event loop, never the threadpool)
//   epoll.c   the env's epoll set: every FdSocket and exit watch behind one Poller
//   lock.c    flock (one brokerd per private dir)
//   sockdiag.c NETLINK_SOCK_DIAG exact lookup: who created one TCP socket (loopback peers)
#include "common.h"

#include <stdlib.h>

addon_state* state_of(napi_env env) {
  addon_state* st = NULL;
  napi_get_instance_data(env, (void**)&st);
  return st;
}

static void on_env_cleanup(void* arg) {
  addon_state* st = arg;
  st->tearing_down = true;
  poll_env_cleanup(st);
  sockdiag_env_cleanup(st);
  epoll_env_cleanup(st);
}

static void on_state_finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  // error_ctor is intentionally not deleted: the env is going away.
  free(data);
}

static napi_value Init(napi_env env, napi_value exports) {
  addon_state* st = calloc(1, sizeof *st);
  if (!st) return NULL;
  napi_set_instance_data(env, st, on_state_finalize, NULL);
  napi_add_env_cleanup_hook(env, on_env_cleanup, st);
  register_errors(env, exports);
  register_fdpass(env, exports);
  register_sock(env, exports);
  register_peer(env, exports);
  register_pidfd(env, exports);
  register_mem(env, exports);
  register_ioctl(env, exports);
  register_notify(env, exports);
  register_poll(env, exports);
  register_epoll(env, exports);
  register_lock(env, exports);
  register_sockdiag(env, exports);
  napi_value v;
  napi_create_int32(env, MAX_FDS_PER_MESSAGE, &v);
  napi_set_named_property(env, exports, "MAX_FDS_PER_MESSAGE", v);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)

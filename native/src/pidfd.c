// pidfd.c: owns pidfd_open and the "has it exited?" check (poll with a zero timeout: a pidfd turns
// readable when its process exits). Exit notification without blocking is poll.c's uv_poll, which
// index.ts attaches to a dup of the pidfd. Never waits.
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

static napi_value js_pidfd_open(napi_env env, napi_callback_info info) {
  ARGS(1);
  int64_t pid;
  if (!arg_int(env, argv[0], "pidfdOpen", "pid", 1, INT32_MAX, &pid)) return NULL;
  // pidfds are always close-on-exec.
  long fd = syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (fd < 0) return throw_errno(env, errno, "pidfd_open", "pid %lld", (long long)pid);
  return make_int(env, fd);
}

static napi_value js_pidfd_alive(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd;
  if (!arg_fd(env, argv[0], "pidfdAlive", "pidfd", &fd)) return NULL;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r;
  do r = poll(&p, 1, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, errno, "poll", "pidfd %d", fd);
  if (p.revents & POLLNVAL) return throw_errno(env, EBADF, "poll", "pidfd %d", fd);
  return make_bool(env, !(p.revents & (POLLIN | POLLHUP | POLLERR)));
}

void register_pidfd(napi_env env, napi_value exports) {
  export_fn(env, exports, "pidfdOpen", js_pidfd_open);
  export_fn(env, exports, "pidfdAlive", js_pidfd_alive);
}

// pidfd.c: owns pidfd_open, the "has it exited?" check (poll with a zero timeout: a pidfd turns
// readable when its process exits) and pidfd_send_signal (a signal to that very process, never to
// a process that reused its pid). Exit notification without blocking is the thread's readiness
// set (epoll.c), where identity.ts waits on the pidfd itself (watchOwnPidfd) or on a dup of it
// (watchPidfd). Never waits.
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
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

// pidfdSendSignal(pidfd, sig) -> true, or false when the process has already exited (ESRCH).
static napi_value js_pidfd_send_signal(napi_env env, napi_callback_info info) {
  ARGS(2);
  int fd;
  int64_t sig;
  if (!arg_fd(env, argv[0], "pidfdSendSignal", "pidfd", &fd)) return NULL;
  if (!arg_int(env, argv[1], "pidfdSendSignal", "sig", 1, 64, &sig)) return NULL;
  if (syscall(SYS_pidfd_send_signal, fd, (int)sig, NULL, 0) < 0) {
    if (errno == ESRCH) return make_bool(env, false);
    return throw_errno(env, errno, "pidfd_send_signal", "pidfd %d signal %lld", fd, (long long)sig);
  }
  return make_bool(env, true);
}

void register_pidfd(napi_env env, napi_value exports) {
  export_fn(env, exports, "pidfdSendSignal", js_pidfd_send_signal);
  export_fn(env, exports, "pidfdOpen", js_pidfd_open);
  export_fn(env, exports, "pidfdAlive", js_pidfd_alive);
}

// lock.c: owns flock(2) on an fd, for brokerd's one-instance-per-private-dir lock. flock is the
// right primitive because the kernel drops it when the holder dies (even by SIGKILL), so a crashed
// brokerd never leaves a stale lock behind, unlike a pid file.
#include "common.h"

#include <errno.h>
#include <sys/file.h>

// flockExclusive(fd): true when this process now holds the exclusive lock, false when another
// open file description holds it (EWOULDBLOCK). Other errors throw.
static napi_value js_flock_exclusive(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd;
  if (!arg_fd(env, argv[0], "flockExclusive", "fd", &fd)) return NULL;
  int r;
  do r = flock(fd, LOCK_EX | LOCK_NB);
  while (r < 0 && errno == EINTR);
  if (r == 0) return make_bool(env, true);
  if (errno == EWOULDBLOCK) return make_bool(env, false);
  return throw_errno(env, errno, "flock", "fd %d", fd);
}

void register_lock(napi_env env, napi_value exports) {
  export_fn(env, exports, "flockExclusive", js_flock_exclusive);
}

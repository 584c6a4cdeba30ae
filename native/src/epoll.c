// epoll.c: owns an epoll set as one readiness source for many fds (identity.ts's exit watches: one
// set of pidfds behind one Poller, instead of a uv_poll_t per watched process). create, add, delete
// and a wait that never blocks (timeout 0); the set's fd is close-on-exec. Level-triggered: an fd
// stays ready until the caller deletes it. Each event reports only the fd it was added with. Never
// closes an fd it did not create.
#include "common.h"

#include <errno.h>
#include <sys/epoll.h>

// epollCreate() -> the set's fd (EPOLL_CLOEXEC); the caller closes it with closeFd.
static napi_value js_epoll_create(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "epoll_create1", "EPOLL_CLOEXEC");
  return make_int(env, fd);
}

// epollAdd(set, fd): watch fd for readability (EPOLLIN; errors and hang-ups are always reported).
static napi_value js_epoll_add(napi_env env, napi_callback_info info) {
  ARGS(2);
  int set, fd;
  if (!arg_fd(env, argv[0], "epollAdd", "set", &set)) return NULL;
  if (!arg_fd(env, argv[1], "epollAdd", "fd", &fd)) return NULL;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
  if (epoll_ctl(set, EPOLL_CTL_ADD, fd, &ev) < 0)
    return throw_errno(env, errno, "epoll_ctl", "ADD fd %d to set %d", fd, set);
  return make_undefined(env);
}

// epollDelete(set, fd): stops watching fd; an event of it not yet read is dropped. Must come before
// fd is closed (epoll keys on the open file, which a dup would keep alive).
static napi_value js_epoll_delete(napi_env env, napi_callback_info info) {
  ARGS(2);
  int set, fd;
  if (!arg_fd(env, argv[0], "epollDelete", "set", &set)) return NULL;
  if (!arg_fd(env, argv[1], "epollDelete", "fd", &fd)) return NULL;
  if (epoll_ctl(set, EPOLL_CTL_DEL, fd, NULL) < 0)
    return throw_errno(env, errno, "epoll_ctl", "DEL fd %d from set %d", fd, set);
  return make_undefined(env);
}

// epollReady(set, out: Int32Array) -> n: the fds of up to out.length ready events, in out[0..n).
static napi_value js_epoll_ready(napi_env env, napi_callback_info info) {
  ARGS(2);
  int set;
  if (!arg_fd(env, argv[0], "epollReady", "set", &set)) return NULL;
  bool is = false;
  napi_is_typedarray(env, argv[1], &is);
  napi_typedarray_type type;
  size_t count = 0, off;
  void* data = NULL;
  napi_value ab;
  if (is) napi_get_typedarray_info(env, argv[1], &type, &count, &data, &ab, &off);
  if (!is || type != napi_int32_array || count == 0)
    return throw_inval(env, "epollReady", "out must be a non-empty Int32Array");
  struct epoll_event evs[64];
  int max = count < 64 ? (int)count : 64;
  int n;
  do n = epoll_wait(set, evs, max, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, errno, "epoll_wait", "set %d", set);
  int32_t* out = data;
  for (int i = 0; i < n; i++) out[i] = evs[i].data.fd;
  return make_int(env, n);
}

void register_epoll(napi_env env, napi_value exports) {
  export_fn(env, exports, "epollCreate", js_epoll_create);
  export_fn(env, exports, "epollAdd", js_epoll_add);
  export_fn(env, exports, "epollDelete", js_epoll_delete);
  export_fn(env, exports, "epollReady", js_epoll_ready);
}

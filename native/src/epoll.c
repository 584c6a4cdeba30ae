// epoll.c: owns the env's one epoll set, the readiness source of every FdSocket and exit watch of
// that thread (readiness.ts puts the set behind one Poller instead of a uv_poll_t per fd). It
// creates the set on first use (close-on-exec) and closes it when told or with the env; adds, changes and
// deletes fds in it; and reads its ready fds without ever blocking (timeout 0). Level-triggered:
// an fd stays ready until the caller reads, writes or deletes it. Never closes a watched fd.
#include "common.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

enum { READABLE = 1, WRITABLE = 2, FAILED = 4 };

static int the_set(napi_env env) {
  addon_state* st = state_of(env);
  if (st->epoll_fd == 0) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) {
      throw_errno(env, errno, "epoll_create1", "EPOLL_CLOEXEC");
      return -1;
    }
    st->epoll_fd = fd + 1;
  }
  return st->epoll_fd - 1;
}

void epoll_env_cleanup(addon_state* st) {
  if (st->epoll_fd != 0) close(st->epoll_fd - 1);
  st->epoll_fd = 0;
}

// epollClose(): closes the set (nothing may be watched in it any more); the next use makes another.
static napi_value js_epoll_close(napi_env env, napi_callback_info info) {
  (void)info;
  epoll_env_cleanup(state_of(env));
  return make_undefined(env);
}

// epollSet() -> the set's fd (for the one Poller that watches it; it stays the env's).
static napi_value js_epoll_set(napi_env env, napi_callback_info info) {
  (void)info;
  int set = the_set(env);
  return set < 0 ? NULL : make_int(env, set);
}

// epollControl(op, fd, events): op 1 adds fd, 2 deletes it, 3 changes what it is watched for;
// events: READABLE 1 | WRITABLE 2 (errors and hang-ups are always reported). A delete must come
// before fd is closed (epoll keys on the open file, which a dup would keep alive).
static napi_value js_epoll_control(napi_env env, napi_callback_info info) {
  ARGS(3);
  int64_t op, events;
  int fd;
  if (!arg_int(env, argv[0], "epollControl", "op", EPOLL_CTL_ADD, EPOLL_CTL_MOD, &op)) return NULL;
  if (!arg_fd(env, argv[1], "epollControl", "fd", &fd)) return NULL;
  if (!arg_int(env, argv[2], "epollControl", "events", 0, READABLE | WRITABLE, &events)) return NULL;
  int set = the_set(env);
  if (set < 0) return NULL;
  struct epoll_event ev = {.events = (events & READABLE ? EPOLLIN : 0) | (events & WRITABLE ? EPOLLOUT : 0),
                           .data.fd = fd};
  if (epoll_ctl(set, (int)op, fd, &ev) < 0)
    return throw_errno(env, errno, "epoll_ctl", "op %d, fd %d", (int)op, fd);
  return make_undefined(env);
}

// epollReady(out: Int32Array) -> n: up to out.length / 2 ready fds, as pairs (fd, events) in
// out[0 .. 2n): READABLE on input or hang-up, WRITABLE on room or hang-up, FAILED 4 on an error.
static napi_value js_epoll_ready(napi_env env, napi_callback_info info) {
  ARGS(1);
  bool is = false;
  napi_is_typedarray(env, argv[0], &is);
  napi_typedarray_type type;
  size_t count = 0, off;
  void* data = NULL;
  napi_value ab;
  if (is) napi_get_typedarray_info(env, argv[0], &type, &count, &data, &ab, &off);
  if (!is || type != napi_int32_array || count < 2)
    return throw_inval(env, "epollReady", "out must be an Int32Array of at least 2");
  int set = the_set(env);
  if (set < 0) return NULL;
  struct epoll_event evs[64];
  int max = count / 2 < 64 ? (int)(count / 2) : 64;
  int n;
  do n = epoll_wait(set, evs, max, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, errno, "epoll_wait", "set %d", set);
  int32_t* out = data;
  for (int i = 0; i < n; i++) {
    uint32_t e = evs[i].events;
    out[2 * i] = evs[i].data.fd;
    out[2 * i + 1] = (e & (EPOLLIN | EPOLLHUP) ? READABLE : 0) | (e & (EPOLLOUT | EPOLLHUP) ? WRITABLE : 0) |
                     (e & EPOLLERR ? FAILED : 0);
  }
  return make_int(env, n);
}

void register_epoll(napi_env env, napi_value exports) {
  export_fn(env, exports, "epollSet", js_epoll_set);
  export_fn(env, exports, "epollClose", js_epoll_close);
  export_fn(env, exports, "epollControl", js_epoll_control);
  export_fn(env, exports, "epollReady", js_epoll_ready);
}

// sock.c: owns creating, connecting, listening on and accepting Unix STREAM sockets, always
// non-blocking and close-on-exec, plus the small fd utilities (close, dup, set close-on-exec,
// fd_is_open). Paths that
// start with '@' are Linux abstract names. Nothing here ever blocks: a connect that would block
// returns -1 so index.ts retries later, and accept returns -1 on EAGAIN.
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

bool fd_is_open(int fd) {
  return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

// Fills addr from "path" or "@abstract". Throws and returns false if it does not fit.
bool build_sockaddr(napi_env env, napi_value v, const char* fn, struct sockaddr_un* addr, socklen_t* alen,
                    char* display, size_t dcap) {
  char path[4096];
  size_t len;
  if (!arg_string(env, v, fn, "path", path, sizeof path, &len)) return false;
  if (len == 0) {
    throw_inval(env, fn, "path must not be empty");
    return false;
  }
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path[0] == '@') {
    memcpy(addr->sun_path + 1, path + 1, len - 1);
    *alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  } else {
    if (len >= sizeof addr->sun_path) {
      throw_code(env, "ENAMETOOLONG", ENAMETOOLONG, fn,
                 "%s: socket path %s is %zu bytes; Unix socket paths must be shorter than %zu bytes", fn, path, len,
                 sizeof addr->sun_path);
      return false;
    }
    memcpy(addr->sun_path, path, len);
    *alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
  }
  snprintf(display, dcap, "%s", path);
  return true;
}

// socketpair() -> [fd, fd], AF_UNIX SOCK_STREAM, non-blocking, close-on-exec.
static napi_value js_socketpair(napi_env env, napi_callback_info info) {
  (void)info;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    return throw_errno(env, errno, "socketpair", "AF_UNIX, SOCK_STREAM");
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, make_int(env, sv[0]));
  napi_set_element(env, arr, 1, make_int(env, sv[1]));
  return arr;
}

// connect(path) -> connected fd, or -1 if the listener's backlog is full (EAGAIN): retry later.
static napi_value js_connect(napi_env env, napi_callback_info info) {
  ARGS(1);
  struct sockaddr_un addr;
  socklen_t alen;
  char display[120];
  if (!build_sockaddr(env, argv[0], "connect", &addr, &alen, display, sizeof display)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket", "AF_UNIX, SOCK_STREAM");
  int r;
  do r = connect(fd, (struct sockaddr*)&addr, alen);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    int e = errno;
    close(fd);
    if (e == EAGAIN) return make_int(env, -1);
    return throw_errno(env, e, "connect", "%s", display);
  }
  return make_int(env, fd);
}

// listen(path, backlog, mode) -> listening fd. chmod(mode) happens between bind and listen, so no
// client can connect through looser permissions. Abstract names have no mode.
static napi_value js_listen(napi_env env, napi_callback_info info) {
  ARGS(3);
  struct sockaddr_un addr;
  socklen_t alen;
  char display[120];
  if (!build_sockaddr(env, argv[0], "listen", &addr, &alen, display, sizeof display)) return NULL;
  int64_t backlog, mode;
  if (!arg_int(env, argv[1], "listen", "backlog", 1, 65535, &backlog)) return NULL;
  if (!arg_int(env, argv[2], "listen", "mode", 0, 07777, &mode)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket", "AF_UNIX, SOCK_STREAM");
  if (bind(fd, (struct sockaddr*)&addr, alen) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "bind", "%s", display);
  }
  if (display[0] != '@' && chmod(display, (mode_t)mode) < 0) {
    int e = errno;
    close(fd);
    unlink(display);
    return throw_errno(env, e, "chmod", "%s, 0%llo", display, (unsigned long long)mode);
  }
  if (listen(fd, (int)backlog) < 0) {
    int e = errno;
    close(fd);
    if (display[0] != '@') unlink(display);
    return throw_errno(env, e, "listen", "%s", display);
  }
  return make_int(env, fd);
}

// accept(fd) -> new non-blocking close-on-exec fd, or -1 if no connection is pending.
static napi_value js_accept(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd;
  if (!arg_fd(env, argv[0], "accept", "fd", &fd)) return NULL;
  for (;;) {
    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c >= 0) return make_int(env, c);
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return make_int(env, -1);
    return throw_errno(env, errno, "accept4", "fd %d", fd);
  }
}

// adoptSocket(fd): checks that fd is a connected AF_UNIX SOCK_STREAM socket and makes it
// non-blocking and close-on-exec.
static napi_value js_adopt(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd;
  if (!arg_fd(env, argv[0], "adopt", "fd", &fd)) return NULL;
  int v;
  socklen_t l = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &l) < 0) return throw_errno(env, errno, "getsockopt", "fd %d, SO_DOMAIN", fd);
  if (v != AF_UNIX) return throw_code(env, "EAFNOSUPPORT", EAFNOSUPPORT, "adopt", "adopt: fd %d is not an AF_UNIX socket", fd);
  l = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l) < 0) return throw_errno(env, errno, "getsockopt", "fd %d, SO_TYPE", fd);
  if (v != SOCK_STREAM)
    return throw_code(env, "EPROTOTYPE", EPROTOTYPE, "adopt", "adopt: fd %d is not a SOCK_STREAM socket", fd);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return throw_errno(env, errno, "fcntl", "fd %d, O_NONBLOCK", fd);
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return throw_errno(env, errno, "fcntl", "fd %d, FD_CLOEXEC", fd);
  return make_undefined(env);
}

static napi_value js_closefd(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd;
  if (!arg_fd(env, argv[0], "close", "fd", &fd)) return NULL;
  // On Linux the fd is released even when close() reports EINTR: never retry.
  if (close(fd) < 0 && errno != EINTR) return throw_errno(env, errno, "close", "fd %d", fd);
  return make_undefined(env);
}

static napi_value js_dupfd(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd;
  if (!arg_fd(env, argv[0], "dup", "fd", &fd)) return NULL;
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (d < 0) return throw_errno(env, errno, "fcntl", "fd %d, F_DUPFD_CLOEXEC", fd);
  return make_int(env, d);
}

// setCloexec(fd, on): FD_CLOEXEC on or off. Fds inherited across exec (systemd's LISTEN_FDS) arrive
// without it and would otherwise leak into every child brokerd spawns.
static napi_value js_set_cloexec(napi_env env, napi_callback_info info) {
  ARGS(2);
  int fd;
  bool on;
  if (!arg_fd(env, argv[0], "setCloexec", "fd", &fd)) return NULL;
  if (!arg_bool(env, argv[1], "setCloexec", "on", &on)) return NULL;
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0) return throw_errno(env, errno, "fcntl", "fd %d, F_GETFD", fd);
  int want = on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC);
  if (want != fl && fcntl(fd, F_SETFD, want) < 0) return throw_errno(env, errno, "fcntl", "fd %d, F_SETFD", fd);
  return make_undefined(env);
}

void register_sock(napi_env env, napi_value exports) {
  export_fn(env, exports, "socketpair", js_socketpair);
  export_fn(env, exports, "connect", js_connect);
  export_fn(env, exports, "listen", js_listen);
  export_fn(env, exports, "accept", js_accept);
  export_fn(env, exports, "adoptSocket", js_adopt);
  export_fn(env, exports, "closeFd", js_closefd);
  export_fn(env, exports, "dupFd", js_dupfd);
  export_fn(env, exports, "setCloexec", js_set_cloexec);
}

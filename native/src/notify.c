// notify.c: owns sd_notify: one datagram to $NOTIFY_SOCKET (a path or an '@' abstract name) carrying
// the state string and, for FDSTORE=1, fds via SCM_RIGHTS. index.ts reads NOTIFY_SOCKET and returns
// false when it is unset; this file only sends. Non-blocking: a full systemd queue throws EAGAIN.
#include "common.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

bool build_sockaddr(napi_env env, napi_value v, const char* fn, struct sockaddr_un* addr, socklen_t* alen,
                    char* display, size_t dcap);

static napi_value js_sd_notify(napi_env env, napi_callback_info info) {
  ARGS(3);
  struct sockaddr_un addr;
  socklen_t alen;
  char display[120];
  if (!build_sockaddr(env, argv[0], "sdNotify", &addr, &alen, display, sizeof display)) return NULL;
  char state[4096];
  size_t slen;
  if (!arg_string(env, argv[1], "sdNotify", "state", state, sizeof state, &slen)) return NULL;
  if (slen == 0) return throw_inval(env, "sdNotify", "state must not be empty (e.g. \"READY=1\")");
  int fds[MAX_FDS_PER_MESSAGE];
  uint32_t nfds = 0;
  if (!arg_fd_array(env, argv[2], "sdNotify", fds, MAX_FDS_PER_MESSAGE, &nfds)) return NULL;
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return throw_errno(env, errno, "socket", "AF_UNIX, SOCK_DGRAM");
  struct iovec iov = {.iov_base = state, .iov_len = slen};
  rights_buffer control;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_name = &addr;
  msg.msg_namelen = alen;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  attach_rights(&msg, &control, fds, nfds);
  ssize_t r;
  do r = sendmsg(s, &msg, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  int e = errno;
  close(s);
  if (r < 0) return throw_errno(env, e, "sendmsg", "NOTIFY_SOCKET %s", display);
  return make_bool(env, true);
}

void register_notify(napi_env env, napi_value exports) {
  export_fn(env, exports, "sdNotify", js_sd_notify);
}

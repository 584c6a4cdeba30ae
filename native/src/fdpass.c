// fdpass.c: owns the JS face of sendmsg/recvmsg with SCM_RIGHTS on non-blocking Unix sockets. It
// never blocks (EAGAIN is returned as -1, never waited on) and never leaks a received fd: every fd
// that arrived in a message whose control data was truncated (MSG_CTRUNC) is closed before the
// error is thrown. Receives always use MSG_CMSG_CLOEXEC; sends always use MSG_NOSIGNAL (EPIPE,
// never SIGPIPE). The receive itself and the cmsg walk live in fdmsg.c (no Node there), so the
// fuzzer in native/fuzz runs exactly this code. Framing (length prefix, which frame the fds belong
// to) is frames.ts's job, not this file's.
#include "common.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_IOV 8

// sendmsg(fd, bufs: Uint8Array | Uint8Array[], fds?: number[]) -> bytes sent, or -1 if EAGAIN.
// The fds ride on this one sendmsg (the kernel attaches them to its first byte). Not closed here.
static napi_value js_sendmsg(napi_env env, napi_callback_info info) {
  ARGS(3);
  int fd;
  if (!arg_fd(env, argv[0], "sendmsg", "fd", &fd)) return NULL;
  struct iovec iov[MAX_IOV];
  size_t niov = 0, total = 0;
  bool is_array = false;
  napi_is_array(env, argv[1], &is_array);
  if (is_array) {
    uint32_t n;
    napi_get_array_length(env, argv[1], &n);
    if (n > MAX_IOV) return throw_inval(env, "sendmsg", "at most %d buffers per call, got %u", MAX_IOV, n);
    for (uint32_t i = 0; i < n; i++) {
      napi_value e;
      napi_get_element(env, argv[1], i, &e);
      void* p;
      size_t len;
      if (!arg_bytes(env, e, "sendmsg", "data", &p, &len)) return NULL;
      if (len == 0) continue;
      iov[niov].iov_base = p;
      iov[niov].iov_len = len;
      niov++;
      total += len;
    }
  } else {
    void* p;
    size_t len;
    if (!arg_bytes(env, argv[1], "sendmsg", "data", &p, &len)) return NULL;
    if (len) {
      iov[0].iov_base = p;
      iov[0].iov_len = len;
      niov = 1;
      total = len;
    }
  }
  int fds[MAX_FDS_PER_MESSAGE];
  uint32_t nfds = 0;
  if (!arg_fd_array(env, argv[2], "sendmsg", fds, MAX_FDS_PER_MESSAGE, &nfds)) return NULL;
  if (total == 0) return throw_inval(env, "sendmsg", "data must not be empty (fds need at least one byte)");

  rights_buffer control;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = niov;
  attach_rights(&msg, &control, fds, nfds);
  ssize_t r;
  do r = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return make_int(env, -1);
    if (errno == EBADF && nfds > 0) {
      // EBADF names either the socket or one of the fds; say which.
      int e = errno;
      if (fd_is_open(fd)) return throw_errno(env, e, "sendmsg", "fd %d, one of %u passed fds is not open", fd, nfds);
      return throw_errno(env, e, "sendmsg", "fd %d", fd);
    }
    return throw_errno(env, errno, "sendmsg", "fd %d", fd);
  }
  return make_int(env, r);
}

// recvmsg(fd, buf, offset, length, maxFds, fdsOut: Int32Array(>= maxFds + 1)) -> bytes read
// (0 = orderly EOF) or -1 if EAGAIN. fdsOut[0] = number of fds received, fdsOut[1..] the fds.
// Control buffer is sized for maxFds, so a peer sending more makes the kernel truncate: every fd
// that did arrive is closed and EMSGSIZE (too many fds) or ECTRUNC (other truncation) is thrown.
static napi_value js_recvmsg(napi_env env, napi_callback_info info) {
  ARGS(6);
  int fd;
  if (!arg_fd(env, argv[0], "recvmsg", "fd", &fd)) return NULL;
  void* base;
  size_t blen;
  if (!arg_bytes(env, argv[1], "recvmsg", "buffer", &base, &blen)) return NULL;
  int64_t off, len, maxfds;
  if (!arg_int(env, argv[2], "recvmsg", "offset", 0, (int64_t)blen, &off)) return NULL;
  if (!arg_int(env, argv[3], "recvmsg", "length", 1, (int64_t)blen - off, &len)) return NULL;
  if (!arg_int(env, argv[4], "recvmsg", "maxFds", 0, MAX_FDS_PER_MESSAGE, &maxfds)) return NULL;
  void* outp;
  bool is_ta = false;
  napi_is_typedarray(env, argv[5], &is_ta);
  napi_typedarray_type tt = napi_uint8_array;
  size_t outcount = 0;
  if (is_ta) {
    napi_value ab;
    size_t boff;
    napi_get_typedarray_info(env, argv[5], &tt, &outcount, &outp, &ab, &boff);
  }
  if (!is_ta || tt != napi_int32_array || outcount < (size_t)maxfds + 1)
    return throw_inval(env, "recvmsg", "fdsOut must be an Int32Array of at least maxFds + 1 = %d elements",
                       (int)maxfds + 1);
  int32_t* out = outp;

  int got[MAX_FDS_PER_MESSAGE];
  fdrecv_result r = fdrecv(fd, (char*)base + off, (size_t)len, (size_t)maxfds, got);
  out[0] = 0;
  switch (r.status) {
    case FDRECV_AGAIN:
      return make_int(env, -1);
    case FDRECV_ERRNO:
      return throw_errno(env, r.err, "recvmsg", "fd %d", fd);
    case FDRECV_TOO_MANY:
      return throw_code(env, "EMSGSIZE", EMSGSIZE, "recvmsg",
                        "recvmsg(fd %d): the peer sent more fds than the limit of %d in one message; the %zu "
                        "that arrived were closed and the rest discarded by the kernel",
                        fd, (int)maxfds, r.nfds);
    case FDRECV_TRUNCATED:
      return throw_code(env, "ECTRUNC", EMSGSIZE, "recvmsg",
                        "recvmsg(fd %d): control data truncated (MSG_CTRUNC; out of fds?); closed the %zu fds "
                        "that arrived",
                        fd, r.nfds);
    case FDRECV_OK:
      break;
  }
  out[0] = (int32_t)r.nfds;
  for (size_t i = 0; i < r.nfds; i++) out[i + 1] = got[i];
  return make_int(env, r.n);
}

void register_fdpass(napi_env env, napi_value exports) {
  export_fn(env, exports, "sendmsg", js_sendmsg);
  export_fn(env, exports, "recvmsg", js_recvmsg);
}

/* workload.c: a session's connection and its exchanges (workload.proto): connect, one request and
 * its reply (with a deadline), and the events brokerd pushes, taken off the socket whenever the
 * library reads it (during a call, or vfb_read_event's poll) and queued for the caller (events.c).
 * It owns the socket, the frame reader's position in the stream, and the session's last error
 * message. Every error that loses the stream's position (a frame error, a timeout, an undecodable
 * frame) closes the connection: the next frame read would belong to another request. It never
 * keeps a received fd past the call that hands it over, and never decides what a reply means
 * beyond its status. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "session.h"
#include "unix.h"

void vfb_copy(char *dst, size_t cap, const char *src) {
  if (cap == 0) return;
  if (src == NULL) src = "";
  size_t n = strlen(src);
  if (n >= cap) {
    n = cap - 1;
    /* Cut before a continuation byte, and before the lead byte of a sequence cut short. */
    while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80) n--;
  }
  memcpy(dst, src, n);
  dst[n] = '\0';
}

int vfb_say(vfb_session *s, int err, const char *fmt, ...) {
  int saved = errno;
  char buf[VFB_MESSAGE_MAX * 2];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  vfb_copy(s->message, sizeof s->message, buf);
  errno = saved;
  return err;
}

int vfb_down_error(vfb_session *s) {
  switch (s->state) {
    case VFB_DOWN_RESTART:
      return vfb_say(s, VFB_E_RESTARTED,
                     "brokerd said it is restarting (lease_ended \"restart\") and keeps this session's grants for the "
                     "next brokerd; call vfb_resume until it is not VFB_E_CONNECT or VFB_E_TIMEOUT, for a bound of "
                     "your choice (brokerd's resume grace, 30 s by default)");
    case VFB_DOWN_ENDED:
      return vfb_say(s, VFB_E_SESSION_ENDED,
                     "brokerd ended this session (reason \"%s\") and released what it held; vfb_disconnect and "
                     "connect again",
                     s->end_reason);
    default:
      if (s->lib_closed)
        return vfb_say(s, VFB_E_CLOSED,
                       "the library closed the connection to brokerd at %s (%s); brokerd ends a session whose "
                       "connection closes: call vfb_resume, which says VFB_E_RESUME_REFUSED if the session is gone",
                       s->fd_path, s->down_why);
      return vfb_say(s, VFB_E_CLOSED,
                     "the connection to brokerd at %s closed without a word from brokerd (killed or crashed); call "
                     "vfb_resume: it takes the session back if a restarted brokerd restored it, says VFB_E_CONNECT "
                     "while nothing listens, VFB_E_RESUME_REFUSED if the session is gone",
                     s->fd_path);
  }
}

/* ENOENT on connect: the socket file, or its directory, is missing; says which, and where the
 * path came from. */
static int not_there(vfb_session *s) {
  char dir[VFB_SOCKET_PATH_MAX + 1];
  vfb_copy(dir, sizeof dir, s->fd_path);
  char *slash = strrchr(dir, '/');
  if (slash != NULL && slash != dir) *slash = '\0';
  struct stat st;
  if (slash != NULL && stat(dir, &st) < 0 && errno == ENOENT)
    return vfb_say(s, VFB_E_CONNECT,
                   "the directory %s does not exist (the fd channel %s is %s): is brokerd running, "
                   "is the socket path right, and is its directory mounted here?",
                   dir, s->fd_path, s->path_from);
  return vfb_say(s, VFB_E_CONNECT,
                 "nothing listens at %s (%s); is brokerd running, and is the socket path right?", s->fd_path,
                 s->path_from);
}

int vfb_wl_connect(vfb_session *s) {
  const char *failed;
  int fd = vfb_unix_connect(s->fd_path, s->timeout_ms, &failed);
  if (fd >= 0) return fd;
  int e = errno;
  if (strcmp(failed, "connect") != 0) return vfb_say(s, VFB_E_IO, "%s: %s", failed, strerror(e));
  if (e == ENOENT || e == ECONNREFUSED) return not_there(s);
  if (e == EACCES || e == EPERM)
    return vfb_say(s, VFB_E_CONNECT,
                   "permission denied connecting to %s; the socket's directory or mode does not let this user in",
                   s->fd_path);
  if (e == EAGAIN || e == ETIMEDOUT || e == EINPROGRESS)
    return vfb_say(s, VFB_E_TIMEOUT, "brokerd did not accept a connection at %s within %d ms", s->fd_path,
                   s->timeout_ms);
  return vfb_say(s, VFB_E_CONNECT, "cannot connect to %s: %s", s->fd_path, strerror(e));
}

void vfb_wl_down(vfb_session *s, vfb_state state, const char *reason, const char *message) {
  if (s->sock >= 0) close(s->sock); /* also leaves the epoll set */
  s->sock = -1;
  vfb_frame_reader_next(&s->reader);
  if (s->state == VFB_LIVE) {
    s->state = state;
    if (state == VFB_DOWN_LOST) vfb_copy(s->end_reason, sizeof s->end_reason, "connection-lost");
  }
  if (!s->end_queued) vfb_events_end(s, reason, message);
}

/* The error ends the connection (the stream's position is lost): recorded, and the end queued. */
__attribute__((format(printf, 3, 4))) static int broken(vfb_session *s, int err, const char *fmt, ...) {
  int saved = errno;
  char what[VFB_MESSAGE_MAX + 1];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  vfb_say(s, err, "%s (%s); the connection to brokerd was closed and the session is down", what,
          vfb_error_name(err));
  if (err != VFB_E_CLOSED && err != VFB_E_FRAME_TRUNCATED && s->sock >= 0) {
    s->lib_closed = 1;
    vfb_copy(s->down_why, sizeof s->down_why, what);
  }
  vfb_wl_down(s, VFB_DOWN_LOST, "connection-lost", s->message);
  errno = saved;
  return err;
}

/* The connection ended between frames: brokerd said why first (lease_ended), or it did not. */
static int eof(vfb_session *s) {
  if (s->state == VFB_LIVE)
    return broken(s, VFB_E_CLOSED, "brokerd closed the connection without a word (killed, or it failed)");
  vfb_wl_down(s, s->state, "", "");
  return vfb_down_error(s);
}

static void close_fds(int *fds, size_t n) {
  for (size_t i = 0; i < n; i++) close(fds[i]);
}

/* One frame decoded: an event is queued (1), anything else is the reply (0, *out). lease_ended
 * moves the session to its down state (brokerd closes the connection next). */
static int decode(vfb_session *s, Vfiobroker__V1__WorkloadReply **out, size_t nfds) {
  uint32_t len = s->reader.len;
  Vfiobroker__V1__WorkloadReply *r = vfiobroker__v1__workload_reply__unpack(NULL, len, s->rbuf);
  if (r == NULL) return broken(s, VFB_E_PROTOCOL, "brokerd sent a frame (%u bytes) that is not a WorkloadReply", len);
  if (r->kind_case != VFIOBROKER__V1__WORKLOAD_REPLY__KIND_EVENT || r->event == NULL) {
    *out = r;
    return 0;
  }
  if (nfds > 0) {
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    return broken(s, VFB_E_UNEXPECTED_FDS, "an event frame carried %zu fd(s)", nfds);
  }
  const Vfiobroker__V1__WorkloadEvent *e = r->event;
  if (e->kind_case == VFIOBROKER__V1__WORKLOAD_EVENT__KIND_LEASE_ENDED && e->lease_ended != NULL) {
    const char *why = e->lease_ended->reason;
    if (s->state == VFB_LIVE) {
      s->state = strcmp(why, "restart") == 0 ? VFB_DOWN_RESTART : VFB_DOWN_ENDED;
      vfb_copy(s->end_reason, sizeof s->end_reason, why);
    }
  }
  vfb_events_take(s, e);
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return 1;
}

/* Reads frames until a reply (0, *reply, fds taken) or an error; events are queued on the way.
 * deadline < 0: do not wait (VFB_FRAME_AGAIN when the socket has nothing). */
static int read_reply(vfb_session *s, long long deadline, Vfiobroker__V1__WorkloadReply **reply, int *fds,
                      size_t *nfds) {
  for (;;) {
    int rc = vfb_frame_read(&s->reader, s->sock);
    if (rc == VFB_FRAME_AGAIN) {
      if (deadline < 0) return VFB_FRAME_AGAIN;
      int w = vfb_unix_wait(s->sock, POLLIN, deadline);
      if (w == VFB_E_TIMEOUT) return broken(s, w, "no reply from %s within %d ms", s->fd_path, s->timeout_ms);
      if (w < 0) return broken(s, w, "waiting for brokerd: %s", strerror(errno));
      continue;
    }
    if (rc == VFB_FRAME_EOF) return eof(s);
    if (rc == VFB_E_IO && (errno == ECONNRESET || errno == EPIPE)) return eof(s);
    if (rc == VFB_E_IO) return broken(s, rc, "reading from brokerd: %s", strerror(errno));
    if (rc < 0) return broken(s, rc, "brokerd's frame could not be read: %s", vfb_strerror(rc));
    int got[VFB_FRAME_MAX_FDS];
    size_t ngot = vfb_frame_take_fds(&s->reader, got);
    Vfiobroker__V1__WorkloadReply *r = NULL;
    int d = decode(s, &r, ngot);
    vfb_frame_reader_next(&s->reader);
    if (d < 0) {
      close_fds(got, ngot);
      return d;
    }
    if (d == 1) continue;
    memcpy(fds, got, ngot * sizeof(int));
    *nfds = ngot;
    *reply = r;
    return VFB_OK;
  }
}

static int send_frame(vfb_session *s, const uint8_t *bytes, size_t n, long long deadline) {
  vfb_frame_writer w;
  int rc = vfb_frame_writer_init(&w, bytes, n, VFB_WL_REQUEST_MAX_BYTES);
  if (rc < 0) return vfb_say(s, VFB_E_INVALID_ARGUMENT, "the request is %zu bytes, over the protocol's %d", n,
                             VFB_WL_REQUEST_MAX_BYTES);
  while ((rc = vfb_frame_write(&w, s->sock)) == VFB_FRAME_AGAIN) {
    int w2 = vfb_unix_wait(s->sock, POLLOUT, deadline);
    if (w2 < 0) return broken(s, w2, "sending the request to %s", s->fd_path);
  }
  if (rc == VFB_E_CLOSED) {
    /* brokerd is gone; what it said before going (lease_ended) is in the socket, then its end. */
    Vfiobroker__V1__WorkloadReply *r = NULL;
    int fds[VFB_FRAME_MAX_FDS];
    size_t nfds = 0;
    int got = read_reply(s, vfb_now_ms() + s->timeout_ms, &r, fds, &nfds);
    if (got != VFB_OK) return got;
    close_fds(fds, nfds);
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    return broken(s, VFB_E_PROTOCOL, "brokerd sent a reply no request asked for");
  }
  if (rc < 0) return broken(s, rc, "sending the request: %s", strerror(errno));
  return VFB_OK;
}

/* A reply with a status other than OK: the code, brokerd's message recorded. */
static int refusal(vfb_session *s, Vfiobroker__V1__WorkloadReply *r, int req_kind) {
  int err = vfb_refusal_error((int)r->status, r->grpc_code, req_kind);
  if (err == VFB_E_PROTOCOL)
    return broken(s, err, "brokerd answered with status %d, which this library does not know", (int)r->status);
  if (r->grpc_code != NULL && r->grpc_code[0] != '\0')
    vfb_say(s, err, "%s: %s", r->grpc_code, r->message);
  else
    vfb_say(s, err, "%s", r->message != NULL && r->message[0] ? r->message : vfb_strerror(err));
  /* brokerd closes the connection after these (workload.proto). */
  if (err == VFB_E_BUSY || err == VFB_E_UNSUPPORTED_VERSION ||
      (req_kind == VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_HELLO))
    vfb_wl_down(s, VFB_DOWN_LOST, "connection-lost", s->message);
  return err;
}

int vfb_wl_call(vfb_session *s, const Vfiobroker__V1__WorkloadRequest *req, size_t max_fds,
                Vfiobroker__V1__WorkloadReply **reply, int *fds, size_t *nfds) {
  *reply = NULL;
  *nfds = 0;
  if (s->sock < 0) return vfb_down_error(s);
  uint8_t out[VFB_WL_REQUEST_MAX_BYTES];
  size_t n = vfiobroker__v1__workload_request__get_packed_size(req);
  if (n > sizeof out)
    return vfb_say(s, VFB_E_INVALID_ARGUMENT, "the request is %zu bytes, over the protocol's %d", n,
                   VFB_WL_REQUEST_MAX_BYTES);
  vfiobroker__v1__workload_request__pack(req, out);
  long long deadline = vfb_now_ms() + s->timeout_ms;
  int rc = send_frame(s, out, n, deadline);
  if (rc < 0) return rc;
  /* A reply may carry only as many fds as this request can be owed; events carry none. */
  s->reader.max_fds = max_fds;
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int got[VFB_FRAME_MAX_FDS];
  size_t ngot = 0;
  rc = read_reply(s, deadline, &r, got, &ngot);
  s->reader.max_fds = 0;
  if (rc < 0) return rc;
  if (r->status != VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK) {
    close_fds(got, ngot);
    int err = refusal(s, r, (int)req->kind_case);
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    return err;
  }
  if ((int)r->kind_case != (int)req->kind_case) {
    close_fds(got, ngot);
    int k = (int)r->kind_case;
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    return broken(s, VFB_E_PROTOCOL, "brokerd answered request kind %d with kind %d", (int)req->kind_case, k);
  }
  memcpy(fds, got, ngot * sizeof(int));
  *nfds = ngot;
  *reply = r;
  return VFB_OK;
}

int vfb_wl_poll(vfb_session *s) {
  if (s->sock < 0) return VFB_OK;
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fds[VFB_FRAME_MAX_FDS];
  size_t nfds = 0;
  s->reader.max_fds = 0;
  int rc = read_reply(s, -1, &r, fds, &nfds);
  if (rc == VFB_FRAME_AGAIN) return VFB_OK;
  if (rc < 0) {
    /* The end of the connection is an event (queued), not a failure of the read. */
    return rc == VFB_E_RESTARTED || rc == VFB_E_SESSION_ENDED || rc == VFB_E_CLOSED ? VFB_OK : rc;
  }
  close_fds(fds, nfds);
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return broken(s, VFB_E_PROTOCOL, "brokerd sent a reply no request asked for");
}

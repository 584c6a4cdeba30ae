/* fdchannel.c: one connection to brokerd's fd channel and its exchanges (see fdchannel.h). Every
 * path out of an exchange either hands its fds to the caller or closes them; any error that loses
 * the stream's position (a frame error, a timeout, an undecodable reply) closes the socket, since
 * the next reply read would belong to this request. */
#include "fdchannel.h"
#include "unix.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vfio-broker.h"

int vfb_fd_status_error(int status) {
  switch (status) {
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK: return VFB_OK;
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_UNKNOWN_TICKET: return VFB_E_UNKNOWN_TICKET;
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_EXPIRED: return VFB_E_EXPIRED;
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_ALREADY_USED: return VFB_E_ALREADY_USED;
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_WRONG_PEER: return VFB_E_WRONG_PEER;
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_REVOKED: return VFB_E_REVOKED;
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_INTERNAL: return VFB_E_INTERNAL;
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_BAD_REQUEST: return VFB_E_BAD_REQUEST;
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_BUSY: return VFB_E_BUSY;
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_REFUSED: return VFB_E_REFUSED;
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_UNDELIVERABLE: return VFB_E_UNDELIVERABLE;
    case VFIOBROKER__V1__FD_STATUS__FD_STATUS_UNSUPPORTED_VERSION: return VFB_E_UNSUPPORTED_VERSION;
    default: return VFB_E_PROTOCOL;
  }
}

/* Records what went wrong (bounded, cut at a character boundary) and returns err. */
__attribute__((format(printf, 3, 4))) static int say(vfb_fdchannel *c, int err, const char *fmt, ...) {
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(c->message, sizeof c->message, fmt, ap);
  va_end(ap);
  if (n >= (int)sizeof c->message) {
    /* Cut: do not leave half a UTF-8 sequence at the end. */
    size_t end = sizeof c->message - 1;
    while (end > 0 && ((unsigned char)c->message[end - 1] & 0xc0) == 0x80) end--;
    if (end > 0 && ((unsigned char)c->message[end - 1] & 0xc0) == 0xc0) end--;
    c->message[end] = '\0';
  }
  errno = saved;
  return err;
}

static void drop(vfb_fdchannel *c) {
  if (c->sock >= 0) close(c->sock);
  c->sock = -1;
  vfb_frame_reader_next(&c->reader);
}

/* The error ends this connection: the stream position is lost. */
__attribute__((format(printf, 3, 4))) static int broken(vfb_fdchannel *c, int err, const char *fmt, ...) {
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  char what[VFB_FDCHANNEL_MESSAGE_MAX + 1];
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  drop(c);
  errno = saved;
  return say(c, err, "%s (%s); the fd channel connection was closed", what, vfb_error_name(err));
}

int vfb_fdchannel_new(const char *path, int timeout_ms, vfb_fdchannel **out) {
  if (out == NULL) return VFB_E_INVALID_ARGUMENT;
  *out = NULL;
  if (path == NULL || path[0] == '\0' || strlen(path) > VFB_FDCHANNEL_PATH_MAX || timeout_ms <= 0)
    return VFB_E_INVALID_ARGUMENT;
  vfb_fdchannel *c = calloc(1, sizeof *c);
  if (c == NULL) return VFB_E_NO_MEMORY;
  c->sock = -1;
  c->timeout_ms = timeout_ms;
  strcpy(c->path, path);
  vfb_frame_reader_init(&c->reader, c->reply, sizeof c->reply, VFB_FDCHANNEL_BATCH_MAX_ITEMS);
  *out = c;
  return VFB_OK;
}

void vfb_fdchannel_close(vfb_fdchannel *c) {
  if (c == NULL) return;
  drop(c);
  free(c);
}

const char *vfb_fdchannel_message(const vfb_fdchannel *c) {
  return c == NULL ? "" : c->message;
}

int vfb_fdchannel_connect(vfb_fdchannel *c) {
  if (c == NULL) return VFB_E_INVALID_ARGUMENT;
  if (c->sock >= 0) return VFB_OK;
  const char *failed;
  int s = vfb_unix_connect(c->path, c->timeout_ms, &failed);
  if (s < 0) {
    int e = errno;
    if (strcmp(failed, "connect") != 0) return say(c, VFB_E_IO, "%s: %s", failed, strerror(e));
    if (e == ENOENT || e == ECONNREFUSED)
      return say(c, VFB_E_CONNECT, "nothing listens at %s; is brokerd running, and is its socket directory mounted here?",
                 c->path);
    if (e == EACCES || e == EPERM)
      return say(c, VFB_E_CONNECT,
                 "permission denied connecting to %s; the socket's directory or mode does not let this user in",
                 c->path);
    if (e == EAGAIN || e == ETIMEDOUT || e == EINPROGRESS)
      return say(c, VFB_E_TIMEOUT, "brokerd did not accept a connection at %s within %d ms", c->path,
                 c->timeout_ms);
    return say(c, VFB_E_CONNECT, "cannot connect to %s: %s", c->path, strerror(e));
  }
  c->sock = s;
  vfb_frame_reader_next(&c->reader);
  return VFB_OK;
}

static void close_fds(int *fds, size_t n) {
  for (size_t i = 0; i < n; i++) close(fds[i]);
}

/* The fds an OK reply must carry. */
static size_t fds_owed(const Vfiobroker__V1__FdReply *r, vfb_expect expect) {
  if (expect == VFB_EXPECT_ONE_FD) return 1;
  if (expect == VFB_EXPECT_NO_FD) return 0;
  size_t n = 0;
  for (size_t i = 0; i < r->n_items; i++)
    if (r->items[i]->status == VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK && r->items[i]->length > 0) n++;
  return n;
}

static int send_request(vfb_fdchannel *c, const uint8_t *bytes, size_t n, long long deadline) {
  vfb_frame_writer w;
  int rc = vfb_frame_writer_init(&w, bytes, n, VFB_FDCHANNEL_REQUEST_MAX_BYTES);
  if (rc < 0) return say(c, VFB_E_INVALID_ARGUMENT, "the request is %zu bytes, over the fd channel's %d", n,
                         VFB_FDCHANNEL_REQUEST_MAX_BYTES);
  while ((rc = vfb_frame_write(&w, c->sock)) == VFB_FRAME_AGAIN) {
    int wrc = vfb_unix_wait(c->sock, POLLOUT, deadline);
    if (wrc < 0) return broken(c, wrc, "sending the request to %s", c->path);
  }
  if (rc == VFB_E_CLOSED) return broken(c, rc, "brokerd closed the connection before the request was sent");
  if (rc < 0) return broken(c, rc, "sending the request: %s", strerror(errno));
  return VFB_OK;
}

static int receive_reply(vfb_fdchannel *c, long long deadline) {
  int rc;
  while ((rc = vfb_frame_read(&c->reader, c->sock)) == VFB_FRAME_AGAIN) {
    int wrc = vfb_unix_wait(c->sock, POLLIN, deadline);
    if (wrc == VFB_E_TIMEOUT)
      return broken(c, wrc, "no reply from %s within %d ms", c->path, c->timeout_ms);
    if (wrc < 0) return broken(c, wrc, "waiting for the reply: %s", strerror(errno));
  }
  if (rc == VFB_FRAME_DONE) return VFB_OK;
  if (rc == VFB_FRAME_EOF) return broken(c, VFB_E_CLOSED, "brokerd closed the connection without replying");
  if (rc == VFB_E_IO) return broken(c, rc, "reading the reply: %s", strerror(errno));
  return broken(c, rc, "the reply could not be read: %s", vfb_strerror(rc));
}

int vfb_fdchannel_exchange(vfb_fdchannel *c, const Vfiobroker__V1__FdRequest *req, vfb_expect expect,
                           Vfiobroker__V1__FdReply **reply, int *fds, size_t *nfds) {
  if (reply != NULL) *reply = NULL;
  if (nfds != NULL) *nfds = 0;
  if (c == NULL || req == NULL || reply == NULL || fds == NULL || nfds == NULL) return VFB_E_INVALID_ARGUMENT;
  if (c->sock < 0)
    return say(c, VFB_E_CLOSED, "the fd channel connection to %s is not open (an earlier error, or brokerd "
                                "closed it); connect again", c->path);
  uint8_t out[VFB_FDCHANNEL_REQUEST_MAX_BYTES];
  size_t n = vfiobroker__v1__fd_request__get_packed_size(req);
  if (n > sizeof out)
    return say(c, VFB_E_INVALID_ARGUMENT, "the request is %zu bytes, over the fd channel's %d", n,
               VFB_FDCHANNEL_REQUEST_MAX_BYTES);
  vfiobroker__v1__fd_request__pack(req, out);
  long long deadline = vfb_now_ms() + c->timeout_ms;
  /* A reply may carry only as many fds as this request can be owed: one (also for a refusal that
   * wrongly brings one), none for a release, a batch's worth for a batch. */
  c->reader.max_fds = expect == VFB_EXPECT_BATCH ? VFB_FDCHANNEL_BATCH_MAX_ITEMS
                      : expect == VFB_EXPECT_ONE_FD ? 1 : 0;
  int rc = send_request(c, out, n, deadline);
  if (rc < 0) return rc;
  rc = receive_reply(c, deadline);
  if (rc < 0) return rc;
  int got[VFB_FRAME_MAX_FDS];
  size_t ngot = vfb_frame_take_fds(&c->reader, got);
  uint32_t len = c->reader.len;
  Vfiobroker__V1__FdReply *r = vfiobroker__v1__fd_reply__unpack(NULL, len, c->reply);
  vfb_frame_reader_next(&c->reader);
  if (r == NULL) {
    close_fds(got, ngot);
    return broken(c, VFB_E_PROTOCOL, "brokerd's reply (%u bytes) is not an FdReply", len);
  }
  int err = vfb_fd_status_error((int)r->status);
  if (err != VFB_OK) {
    close_fds(got, ngot);
    if (err == VFB_E_PROTOCOL) {
      int st = (int)r->status;
      vfiobroker__v1__fd_reply__free_unpacked(r, NULL);
      return broken(c, err, "brokerd answered with status %d, which this library does not know", st);
    }
    if (r->status == VFIOBROKER__V1__FD_STATUS__FD_STATUS_REFUSED)
      say(c, err, "%s: %s", r->grpc_code[0] ? r->grpc_code : "UNKNOWN", r->message);
    else
      say(c, err, "%s", r->message[0] ? r->message : vfb_strerror(err));
    vfiobroker__v1__fd_reply__free_unpacked(r, NULL);
    if (err == VFB_E_BUSY) drop(c); /* brokerd closes a refused connection */
    return err;
  }
  size_t owed = fds_owed(r, expect);
  if (ngot != owed) {
    close_fds(got, ngot);
    vfiobroker__v1__fd_reply__free_unpacked(r, NULL);
    return broken(c, VFB_E_PROTOCOL, "an OK reply must carry %zu fd(s), it carried %zu", owed, ngot);
  }
  memcpy(fds, got, ngot * sizeof(int));
  *nfds = ngot;
  *reply = r;
  c->message[0] = '\0';
  return VFB_OK;
}

static int valid_ticket(const char *t) {
  size_t n = 0;
  for (; t[n] != '\0'; n++) {
    if (n >= VFB_FDCHANNEL_TICKET_MAX) return 0;
    char ch = t[n];
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return 0;
  }
  return n > 0;
}

int vfb_fdchannel_fetch_fd(vfb_fdchannel *c, const char *ticket, Vfiobroker__V1__FdReply **reply, int *fd) {
  if (fd != NULL) *fd = -1;
  if (reply != NULL) *reply = NULL;
  if (c == NULL || ticket == NULL || reply == NULL || fd == NULL) return VFB_E_INVALID_ARGUMENT;
  if (!valid_ticket(ticket))
    return say(c, VFB_E_INVALID_ARGUMENT, "a ticket is 1 to %d lower-case hex digits", VFB_FDCHANNEL_TICKET_MAX);
  Vfiobroker__V1__FdRequest req = VFIOBROKER__V1__FD_REQUEST__INIT;
  req.ticket = (char *)ticket;
  int fds[VFB_FDCHANNEL_BATCH_MAX_ITEMS];
  size_t n = 0;
  int rc = vfb_fdchannel_exchange(c, &req, VFB_EXPECT_ONE_FD, reply, fds, &n);
  if (rc == VFB_OK) *fd = fds[0];
  return rc;
}

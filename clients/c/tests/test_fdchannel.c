/* test_fdchannel.c: the fd channel client (src/fdchannel.c) against a scripted server thread on a
 * real Unix socket: a ticket redeemed with its fd, refusals (with and without a stray fd), replies
 * with the wrong number of fds, garbage, an oversize frame, a server that closes or never answers,
 * nothing listening, bad tickets refused before anything is sent. No fd may be left behind (the
 * runner counts), and after an error that loses the stream the connection is closed. */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdchannel.h"
#include "runner.h"
#include "vfio-broker.h"

typedef struct {
  int listen_fd;
  /* The reply: packed FdReply bytes framed by the server, or raw bytes sent as they are. */
  uint8_t reply[256];
  size_t reply_len;
  int raw;
  int nfds;        /* dups of /dev/null attached to the reply */
  int no_reply;    /* read the request, then wait for the client to leave */
  int close_early; /* read the request, then close */
  char ticket[80]; /* the ticket the server received */
  int requests;
} script;

static void *serve(void *arg) {
  script *s = arg;
  int conn = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  if (conn < 0) return NULL;
  uint8_t buf[VFB_FDCHANNEL_REQUEST_MAX_BYTES];
  vfb_frame_reader r;
  vfb_frame_reader_init(&r, buf, sizeof buf, 0);
  if (vfb_frame_read(&r, conn) == VFB_FRAME_DONE) {
    s->requests++;
    Vfiobroker__V1__FdRequest *req = vfiobroker__v1__fd_request__unpack(NULL, r.len, buf);
    if (req != NULL) {
      snprintf(s->ticket, sizeof s->ticket, "%s", req->ticket);
      vfiobroker__v1__fd_request__free_unpacked(req, NULL);
    }
    if (!s->no_reply && !s->close_early) {
      uint8_t out[4 + sizeof s->reply];
      size_t n = s->reply_len;
      if (s->raw) {
        memcpy(out, s->reply, n);
      } else {
        vfb_frame_put_len(out, (uint32_t)n);
        memcpy(out + 4, s->reply, n);
        n += 4;
      }
      int fds[4];
      for (int i = 0; i < s->nfds; i++) fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
      struct iovec iov = {.iov_base = out, .iov_len = n};
      union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 4)];
      } control;
      memset(&control, 0, sizeof control);
      struct msghdr msg;
      memset(&msg, 0, sizeof msg);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      if (s->nfds > 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)s->nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)s->nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)s->nfds);
      }
      (void)sendmsg(conn, &msg, MSG_NOSIGNAL);
      for (int i = 0; i < s->nfds; i++) close(fds[i]);
    }
  }
  if (!s->close_early) {
    char c;
    while (read(conn, &c, 1) > 0) {
    } /* until the client leaves */
  }
  close(conn);
  return NULL;
}

typedef struct {
  char dir[64];
  char path[128];
  pthread_t thread;
  script s;
} server;

static int start(server *sv) {
  strcpy(sv->dir, "/tmp/vfb-fdchannel-XXXXXX");
  if (mkdtemp(sv->dir) == NULL) return -1;
  snprintf(sv->path, sizeof sv->path, "%s/fd.sock", sv->dir);
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  strcpy(a.sun_path, sv->path);
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 4) != 0) return -1;
  sv->s.listen_fd = l;
  return pthread_create(&sv->thread, NULL, serve, &sv->s);
}

static void stop(server *sv) {
  pthread_join(sv->thread, NULL);
  close(sv->s.listen_fd);
  unlink(sv->path);
  rmdir(sv->dir);
}

static void set_reply(script *s, const Vfiobroker__V1__FdReply *r) {
  s->reply_len = vfiobroker__v1__fd_reply__get_packed_size(r);
  vfiobroker__v1__fd_reply__pack(r, s->reply);
}

static const char *TICKET = "0123456789abcdef0123456789abcdef";

/* Runs one fetch against a server scripted by `setup`; returns the result and the connection. */
static int fetch(server *sv, int timeout_ms, Vfiobroker__V1__FdReply **reply, int *fd, vfb_fdchannel **out) {
  vfb_fdchannel *c = NULL;
  if (start(sv) != 0 || vfb_fdchannel_new(sv->path, timeout_ms, &c) != VFB_OK || vfb_fdchannel_connect(c) != VFB_OK)
    return -1000;
  int rc = vfb_fdchannel_fetch_fd(c, TICKET, reply, fd);
  *out = c;
  return rc;
}

static void t_fetch_ok(void) {
  server sv;
  memset(&sv, 0, sizeof sv);
  Vfiobroker__V1__FdReply r = VFIOBROKER__V1__FD_REPLY__INIT;
  r.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK;
  r.cookie = 42;
  r.length = 4096;
  r.effective_attribute = VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC;
  set_reply(&sv.s, &r);
  sv.s.nfds = 1;
  Vfiobroker__V1__FdReply *got = NULL;
  int fd = -1;
  vfb_fdchannel *c = NULL;
  CHECK_EQ(fetch(&sv, 10000, &got, &fd, &c), VFB_OK);
  CHECK(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC));
  REQUIRE(got != NULL);
  CHECK(got->cookie == 42 && got->length == 4096);
  CHECK_EQ(got->effective_attribute, VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC);
  CHECK(strcmp(vfb_fdchannel_message(c), "") == 0);
  vfiobroker__v1__fd_reply__free_unpacked(got, NULL);
  if (fd >= 0) close(fd);
  vfb_fdchannel_close(c);
  stop(&sv);
  CHECK_EQ(sv.s.requests, 1);
  CHECK(strcmp(sv.s.ticket, TICKET) == 0);
}

/* A refusal: its code and brokerd's message; a stray fd on it is closed; the connection lives on. */
static void t_refusal(void) {
  server sv;
  memset(&sv, 0, sizeof sv);
  Vfiobroker__V1__FdReply r = VFIOBROKER__V1__FD_REPLY__INIT;
  r.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_EXPIRED;
  r.message = "the ticket expired 5 s after CreateMapping; map again";
  set_reply(&sv.s, &r);
  sv.s.nfds = 1;
  Vfiobroker__V1__FdReply *got = NULL;
  int fd = 7;
  vfb_fdchannel *c = NULL;
  CHECK_EQ(fetch(&sv, 10000, &got, &fd, &c), VFB_E_EXPIRED);
  CHECK(got == NULL && fd == -1);
  CHECK(strcmp(vfb_fdchannel_message(c), r.message) == 0);
  CHECK(c->sock >= 0);
  vfb_fdchannel_close(c);
  stop(&sv);
}

static void t_refused_grpc_code(void) {
  server sv;
  memset(&sv, 0, sizeof sv);
  Vfiobroker__V1__FdReply r = VFIOBROKER__V1__FD_REPLY__INIT;
  r.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_REFUSED;
  r.grpc_code = "FAILED_PRECONDITION";
  r.message = "region 0 is not prefetchable: WC is not possible";
  set_reply(&sv.s, &r);
  Vfiobroker__V1__FdReply *got = NULL;
  int fd;
  vfb_fdchannel *c = NULL;
  CHECK_EQ(fetch(&sv, 10000, &got, &fd, &c), VFB_E_REFUSED);
  CHECK(strcmp(vfb_fdchannel_message(c), "FAILED_PRECONDITION: region 0 is not prefetchable: WC is not possible") == 0);
  vfb_fdchannel_close(c);
  stop(&sv);
}

/* BUSY: brokerd closes such a connection, so does the client. */
static void t_busy_closes(void) {
  server sv;
  memset(&sv, 0, sizeof sv);
  Vfiobroker__V1__FdReply r = VFIOBROKER__V1__FD_REPLY__INIT;
  r.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_BUSY;
  r.message = "uid 1000 holds 16 fd-channel connections, its limit";
  set_reply(&sv.s, &r);
  Vfiobroker__V1__FdReply *got = NULL;
  int fd;
  vfb_fdchannel *c = NULL;
  CHECK_EQ(fetch(&sv, 10000, &got, &fd, &c), VFB_E_BUSY);
  CHECK_EQ(c->sock, -1);
  CHECK_EQ(vfb_fdchannel_fetch_fd(c, TICKET, &got, &fd), VFB_E_CLOSED);
  vfb_fdchannel_close(c);
  stop(&sv);
}

/* An OK reply without its fd, or with two: a protocol error, nothing leaked, the connection closed. */
static void t_wrong_fd_count(void) {
  for (int nfds = 0; nfds <= 2; nfds += 2) {
    server sv;
    memset(&sv, 0, sizeof sv);
    Vfiobroker__V1__FdReply r = VFIOBROKER__V1__FD_REPLY__INIT;
    r.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK;
    set_reply(&sv.s, &r);
    sv.s.nfds = nfds;
    Vfiobroker__V1__FdReply *got = NULL;
    int fd;
    vfb_fdchannel *c = NULL;
    int rc = fetch(&sv, 10000, &got, &fd, &c);
    CHECK_EQ(rc, nfds == 0 ? VFB_E_PROTOCOL : VFB_E_UNEXPECTED_FDS);
    CHECK(got == NULL && fd == -1);
    CHECK_EQ(c->sock, -1);
    CHECK(strstr(vfb_fdchannel_message(c), "closed") != NULL);
    vfb_fdchannel_close(c);
    stop(&sv);
  }
}

static void t_garbage_reply(void) {
  server sv;
  memset(&sv, 0, sizeof sv);
  const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};
  memcpy(sv.s.reply, junk, sizeof junk);
  sv.s.reply_len = sizeof junk;
  sv.s.nfds = 1;
  Vfiobroker__V1__FdReply *got = NULL;
  int fd;
  vfb_fdchannel *c = NULL;
  CHECK_EQ(fetch(&sv, 10000, &got, &fd, &c), VFB_E_PROTOCOL);
  CHECK_EQ(c->sock, -1);
  vfb_fdchannel_close(c);
  stop(&sv);
}

static void t_oversize_reply(void) {
  server sv;
  memset(&sv, 0, sizeof sv);
  vfb_frame_put_len(sv.s.reply, VFB_FDCHANNEL_REPLY_MAX_BYTES + 1);
  sv.s.reply_len = 4;
  sv.s.raw = 1;
  Vfiobroker__V1__FdReply *got = NULL;
  int fd;
  vfb_fdchannel *c = NULL;
  CHECK_EQ(fetch(&sv, 10000, &got, &fd, &c), VFB_E_FRAME_TOO_LARGE);
  CHECK_EQ(c->sock, -1);
  vfb_fdchannel_close(c);
  stop(&sv);
}

static void t_closed_without_reply(void) {
  server sv;
  memset(&sv, 0, sizeof sv);
  sv.s.close_early = 1;
  Vfiobroker__V1__FdReply *got = NULL;
  int fd;
  vfb_fdchannel *c = NULL;
  CHECK_EQ(fetch(&sv, 10000, &got, &fd, &c), VFB_E_CLOSED);
  vfb_fdchannel_close(c);
  stop(&sv);
}

/* A server that never answers: the exchange ends at its deadline (the assertion is on the code,
 * not on how long it took). */
static void t_no_reply_times_out(void) {
  server sv;
  memset(&sv, 0, sizeof sv);
  sv.s.no_reply = 1;
  Vfiobroker__V1__FdReply *got = NULL;
  int fd;
  vfb_fdchannel *c = NULL;
  CHECK_EQ(fetch(&sv, 50, &got, &fd, &c), VFB_E_TIMEOUT);
  CHECK_EQ(c->sock, -1); /* closed, so the server thread sees EOF */
  vfb_fdchannel_close(c);
  stop(&sv);
}

static void t_nothing_listens(void) {
  vfb_fdchannel *c = NULL;
  CHECK_EQ(vfb_fdchannel_new("/tmp/vfb-no-such-dir/fd.sock", 1000, &c), VFB_OK);
  REQUIRE(c != NULL);
  CHECK_EQ(vfb_fdchannel_connect(c), VFB_E_CONNECT);
  CHECK(strstr(vfb_fdchannel_message(c), "is brokerd running") != NULL);
  Vfiobroker__V1__FdReply *got = NULL;
  int fd;
  CHECK_EQ(vfb_fdchannel_fetch_fd(c, TICKET, &got, &fd), VFB_E_CLOSED);
  vfb_fdchannel_close(c);
}

static void t_bad_arguments(void) {
  vfb_fdchannel *c = NULL;
  char longpath[200];
  memset(longpath, 'a', sizeof longpath - 1);
  longpath[sizeof longpath - 1] = '\0';
  CHECK_EQ(vfb_fdchannel_new(longpath, 1000, &c), VFB_E_INVALID_ARGUMENT);
  CHECK(c == NULL);
  CHECK_EQ(vfb_fdchannel_new("", 1000, &c), VFB_E_INVALID_ARGUMENT);
  CHECK_EQ(vfb_fdchannel_new("/x", 0, &c), VFB_E_INVALID_ARGUMENT);
  CHECK_EQ(vfb_fdchannel_new("/x", 1000, NULL), VFB_E_INVALID_ARGUMENT);
  /* Bad tickets are refused before anything is sent (the server sees no request). */
  server sv;
  memset(&sv, 0, sizeof sv);
  sv.s.no_reply = 1;
  REQUIRE(start(&sv) == 0);
  REQUIRE(vfb_fdchannel_new(sv.path, 1000, &c) == VFB_OK);
  REQUIRE(vfb_fdchannel_connect(c) == VFB_OK);
  Vfiobroker__V1__FdReply *got = NULL;
  int fd;
  const char *bad[] = {"", "0123456789ABCDEF", "0123456789abcdef0123456789abcdef0", "12 4", "g"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_EQ(vfb_fdchannel_fetch_fd(c, bad[i], &got, &fd), VFB_E_INVALID_ARGUMENT);
  CHECK(c->sock >= 0);
  vfb_fdchannel_close(c);
  stop(&sv);
  CHECK_EQ(sv.s.requests, 0);
}

static void t_status_codes(void) {
  CHECK_EQ(vfb_fd_status_error(VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK), VFB_OK);
  for (int st = 2; st <= 11; st++) CHECK_EQ(vfb_fd_status_error(st), -100 - st);
  CHECK_EQ(vfb_fd_status_error(0), VFB_E_PROTOCOL);
  CHECK_EQ(vfb_fd_status_error(12), VFB_E_UNSUPPORTED_VERSION);
  CHECK_EQ(vfb_fd_status_error(13), VFB_E_PROTOCOL);
}

const vfb_test vfb_fdchannel_tests[] = {
    {"fdchannel: a ticket redeemed, its fd close-on-exec", t_fetch_ok},
    {"fdchannel: a refusal with a stray fd: code, message, fd closed", t_refusal},
    {"fdchannel: REFUSED says the gRPC code", t_refused_grpc_code},
    {"fdchannel: BUSY closes the connection", t_busy_closes},
    {"fdchannel: an OK reply with 0 or 2 fds is a protocol error", t_wrong_fd_count},
    {"fdchannel: a reply that is not an FdReply", t_garbage_reply},
    {"fdchannel: an oversize reply frame", t_oversize_reply},
    {"fdchannel: brokerd closes without replying", t_closed_without_reply},
    {"fdchannel: no reply before the deadline", t_no_reply_times_out},
    {"fdchannel: nothing listens", t_nothing_listens},
    {"fdchannel: bad arguments and tickets, nothing sent", t_bad_arguments},
    {"fdchannel: FdStatus to error codes", t_status_codes},
    {NULL, NULL},
};

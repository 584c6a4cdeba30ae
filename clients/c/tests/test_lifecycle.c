/* test_lifecycle.c: what a session's end means to its mappings and to vfb_resume, the bound of the
 * event queue against a peer that floods it, and the last error of every failed call, on a
 * scripted socketpair (script.h) and, for vfb_resume, a listening socket served by a thread. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "runner.h"
#include "script.h"
#include "session.h"

/* The grant of one page (cookie) of sim0 BAR2, with a memfd as the fd. */
static void put_grant(int sock, uint64_t cookie) {
  int bar = memfd_create("test-bar", MFD_CLOEXEC);
  if (bar < 0 || ftruncate(bar, 4096) != 0) abort();
  Vfiobroker__V1__FdReply g = VFIOBROKER__V1__FD_REPLY__INIT;
  g.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK;
  g.cookie = cookie;
  g.length = 4096;
  g.region_index = 2;
  g.prot = VFIOBROKER__V1__PROT__PROT_READ_WRITE;
  g.effective_attribute = VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC;
  g.backing = VFIOBROKER__V1__BACKING_KIND__BACKING_KIND_MEMFD;
  Vfiobroker__V1__WorkloadReply gr = VFIOBROKER__V1__WORKLOAD_REPLY__INIT;
  gr.kind_case = VFIOBROKER__V1__WORKLOAD_REPLY__KIND_GRANT;
  gr.grant = &g;
  put(sock, &gr, bar);
  close(bar);
}

static void put_end(int sock, const char *reason) {
  Vfiobroker__V1__WorkloadLeaseEnded le = VFIOBROKER__V1__WORKLOAD_LEASE_ENDED__INIT;
  le.reason = (char *)reason;
  le.message = "scripted";
  Vfiobroker__V1__WorkloadEvent e = VFIOBROKER__V1__WORKLOAD_EVENT__INIT;
  e.kind_case = VFIOBROKER__V1__WORKLOAD_EVENT__KIND_LEASE_ENDED;
  e.lease_ended = &le;
  put_event(sock, &e);
}

static void put_revocation(int sock, uint64_t cookie) {
  Vfiobroker__V1__WorkloadRevocation rv = VFIOBROKER__V1__WORKLOAD_REVOCATION__INIT;
  rv.device_file_id = 7;
  rv.cookie = cookie;
  rv.device_id = "sim0";
  rv.reason = "operator";
  rv.message = "scripted";
  Vfiobroker__V1__WorkloadEvent e = VFIOBROKER__V1__WORKLOAD_EVENT__INIT;
  e.kind_case = VFIOBROKER__V1__WORKLOAD_EVENT__KIND_REVOCATION;
  e.revocation = &rv;
  put_event(sock, &e);
}

/* A session with sim0 open and one page mapped; then brokerd's side says `reason` (NULL: nothing)
 * and closes. Reads the session-ended event. */
static void end_with(const char *reason, int want_status, const char *want_perms) {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  put_opened(sv[0]);
  put_grant(sv[0], 8192);
  vfb_session *s = session_on(sv[1]);
  vfb_device *d = NULL;
  vfb_mapping *m = NULL;
  CHECK_EQ(vfb_open_device(s, "sim0", &d), VFB_OK);
  CHECK_EQ(vfb_map(d, 2, 0, 4096, VFB_ATTR_WC, VFB_PROT_RW, &m), VFB_OK);
  if (reason != NULL) put_end(sv[0], reason);
  close(sv[0]);
  vfb_event ev;
  CHECK_EQ(vfb_read_event(s, &ev), 1);
  CHECK_EQ(ev.kind, VFB_EVENT_SESSION_ENDED);
  CHECK(strcmp(ev.reason, reason != NULL ? reason : "connection-lost") == 0);
  if (m != NULL) {
    CHECK_EQ(vfb_mapping_status(m), want_status); /* no longer VFB_OK: the session is down */
    char perms[8];
    perms_of(vfb_mapping_addr(m), perms);
    CHECK(strcmp(perms, want_perms) == 0);
  }
  vfb_disconnect(s);
}

static void t_status_after_end(void) {
  end_with("restart", VFB_E_RESTARTED, "rw-s"); /* kept by brokerd for the next one: left mapped */
  end_with(NULL, VFB_E_CLOSED, "rw-s");         /* brokerd killed: it keeps the pages until exit or resume */
  end_with("operator", VFB_E_SESSION_ENDED, "---p"); /* brokerd released everything: inaccessible */
}

/* A mapping revoked before brokerd's restart says so (more than the session being down). */
static void t_revoked_then_restart(void) {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  put_opened(sv[0]);
  put_grant(sv[0], 8192);
  vfb_session *s = session_on(sv[1]);
  vfb_device *d = NULL;
  vfb_mapping *m = NULL;
  CHECK_EQ(vfb_open_device(s, "sim0", &d), VFB_OK);
  CHECK_EQ(vfb_map(d, 2, 0, 4096, VFB_ATTR_WC, VFB_PROT_RW, &m), VFB_OK);
  put_revocation(sv[0], 8192);
  put_end(sv[0], "restart");
  close(sv[0]);
  vfb_event ev;
  CHECK_EQ(vfb_read_event(s, &ev), 1);
  CHECK(ev.kind == VFB_EVENT_REVOKED && ev.mapping == m);
  CHECK_EQ(vfb_read_event(s, &ev), 1);
  CHECK_EQ(ev.kind, VFB_EVENT_SESSION_ENDED);
  if (m != NULL) CHECK_EQ(vfb_mapping_status(m), VFB_E_MAPPING_REVOKED);
  vfb_disconnect(s);
}

static void t_resume_after_ended(void) {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  put_end(sv[0], "operator");
  close(sv[0]);
  vfb_session *s = session_on(sv[1]);
  vfb_event ev;
  CHECK_EQ(vfb_read_event(s, &ev), 1);
  /* Nothing to take back: no connection attempted (fd_path "test" does not exist either way). */
  CHECK_EQ(vfb_resume(s), VFB_E_SESSION_ENDED);
  CHECK(strstr(vfb_last_error(s), "nothing to resume") != NULL && strstr(vfb_last_error(s), "operator") != NULL);
  vfb_disconnect(s);
}

/* One connection accepted on a listening socket: closed at once (welcome 0), or answered with a
 * welcome of a fresh session (welcome 1), then held until the client closes it. */
struct server {
  int listener;
  int welcome;
};

static void *serve(void *arg) {
  struct server *sv = arg;
  int c = accept4(sv->listener, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) return NULL;
  if (sv->welcome) {
    uint8_t hdr[4], body[4096];
    if (recv(c, hdr, 4, MSG_WAITALL) == 4) {
      uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
      if (n <= sizeof body && recv(c, body, n, MSG_WAITALL) == (ssize_t)n) {
        Vfiobroker__V1__Identity id = VFIOBROKER__V1__IDENTITY__INIT;
        Vfiobroker__V1__WorkloadWelcome w = VFIOBROKER__V1__WORKLOAD_WELCOME__INIT;
        w.version = 1;
        w.page_size = 4096;
        w.identity = &id;
        w.session_id = "fresh";
        w.resume_token = "0123456789abcdef0123456789abcdef";
        Vfiobroker__V1__WorkloadReply r = VFIOBROKER__V1__WORKLOAD_REPLY__INIT;
        r.kind_case = VFIOBROKER__V1__WORKLOAD_REPLY__KIND_HELLO;
        r.hello = &w;
        put(c, &r, -1);
        while (recv(c, body, sizeof body, 0) > 0) {
        }
      }
    }
  }
  close(c);
  return NULL;
}

/* A session whose connection the library closed itself (no reply within its timeout), resumed
 * against a listening socket whose peer does `welcome`. */
static int resume_against(int welcome, vfb_session **out) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  vfb_session *s = session_on(sv[1]);
  s->timeout_ms = 50;
  vfb_device_list *l = NULL;
  CHECK_EQ(vfb_list_devices(s, &l), VFB_E_TIMEOUT); /* nobody answers on sv[0] */
  close(sv[0]);
  char dir[] = "/tmp/vfb-resume-XXXXXX";
  if (mkdtemp(dir) == NULL) abort();
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s/fd.sock", dir);
  struct server srv = {.listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), .welcome = welcome};
  if (srv.listener < 0 || bind(srv.listener, (struct sockaddr *)&a, sizeof a) != 0 || listen(srv.listener, 4) != 0)
    abort();
  vfb_copy(s->fd_path, sizeof s->fd_path, a.sun_path);
  s->timeout_ms = 5000;
  pthread_t th;
  if (pthread_create(&th, NULL, serve, &srv) != 0) abort();
  int rc = vfb_resume(s);
  pthread_join(th, NULL);
  close(srv.listener);
  unlink(a.sun_path);
  rmdir(dir);
  *out = s;
  return rc;
}

static void t_resume_answers(void) {
  vfb_session *s = NULL;
  /* Accepted and closed before the hello's answer (a stopping brokerd's backlog): not back yet. */
  CHECK_EQ(resume_against(0, &s), VFB_E_CONNECT);
  CHECK(strstr(vfb_last_error(s), "closed it before answering the hello") != NULL);
  CHECK_EQ(vfb_resume(s), VFB_E_CONNECT); /* the socket is gone now: still "not back", never RESTARTED */
  vfb_disconnect(s);
  /* A brokerd that answers without the session, after the library's own timeout: says so. */
  CHECK_EQ(resume_against(1, &s), VFB_E_RESUME_REFUSED);
  CHECK(strstr(vfb_last_error(s), "the library closed its connection (no reply from") != NULL);
  CHECK(strstr(vfb_last_error(s), "restart") == NULL); /* no restart happened */
  vfb_disconnect(s);
}

/* brokerd restarted between recording a grant (or an open) and replying: vfb_resume asks the
 * restored session's brokerd for it again with its request id, and gives back what it answers. A
 * scripted brokerd on a listening socket: the hello (resumed, holding `held_cookie` of device file
 * 7 if not 0), then the request asked for again (`again`), answered with cookie 0x5000 or device
 * file 7, then the give-back (`back`), answered; each request's id, cookie or device file kept. */
struct lost_server {
  int listener;
  char session_id[64];
  uint64_t held_cookie;
  Vfiobroker__V1__WorkloadRequest__KindCase again, back;
  char again_id[64]; /* the request id asked for again */
  uint64_t given;    /* the cookie released, or the device file closed */
  int steps;
  int die_at; /* if not 0: the connection closed once request number die_at is read, unanswered */
};

static int read_request(int c, Vfiobroker__V1__WorkloadRequest **out) {
  uint8_t hdr[4], body[4096];
  if (recv(c, hdr, 4, MSG_WAITALL) != 4) return -1;
  uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
  if (n > sizeof body || recv(c, body, n, MSG_WAITALL) != (ssize_t)n) return -1;
  *out = vfiobroker__v1__workload_request__unpack(NULL, n, body);
  return *out == NULL ? -1 : 0;
}

/* The next request on c, if it is of `kind` (*q then the caller's to free); any other is freed. */
static int next_is(int c, Vfiobroker__V1__WorkloadRequest__KindCase kind, Vfiobroker__V1__WorkloadRequest **q) {
  if (read_request(c, q) != 0) return 0;
  if ((*q)->kind_case == kind) return 1;
  vfiobroker__v1__workload_request__free_unpacked(*q, NULL);
  return 0;
}

static void put_resumed(int c, struct lost_server *sv) {
  uint64_t cookies[1] = {sv->held_cookie};
  Vfiobroker__V1__WorkloadHeldDevice hd = VFIOBROKER__V1__WORKLOAD_HELD_DEVICE__INIT;
  hd.device_file_id = 7;
  hd.n_cookies = 1;
  hd.cookies = cookies;
  Vfiobroker__V1__WorkloadHeldDevice *held[1] = {&hd};
  Vfiobroker__V1__Identity id = VFIOBROKER__V1__IDENTITY__INIT;
  Vfiobroker__V1__WorkloadWelcome w = VFIOBROKER__V1__WORKLOAD_WELCOME__INIT;
  w.version = 1;
  w.page_size = 4096;
  w.identity = &id;
  w.session_id = sv->session_id;
  w.resume_token = "0123456789abcdef0123456789abcdef";
  w.resumed = 1;
  w.n_held = sv->held_cookie != 0;
  w.held = held;
  Vfiobroker__V1__WorkloadReply r = VFIOBROKER__V1__WORKLOAD_REPLY__INIT;
  r.kind_case = VFIOBROKER__V1__WORKLOAD_REPLY__KIND_HELLO;
  r.hello = &w;
  put(c, &r, -1);
}

static void *serve_lost(void *arg) {
  struct lost_server *sv = arg;
  int c = accept4(sv->listener, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) return NULL;
  Vfiobroker__V1__WorkloadRequest *q = NULL;
  int grant = sv->again == VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT;
  if (next_is(c, VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_HELLO, &q)) {
    sv->steps++;
    vfiobroker__v1__workload_request__free_unpacked(q, NULL);
    put_resumed(c, sv);
    /* Then the request asked for again and the give-back, each answered unless it is die_at's. */
    while (read_request(c, &q) == 0) {
      int kind = q->kind_case;
      if (kind == (int)sv->again)
        vfb_copy(sv->again_id, sizeof sv->again_id, grant ? q->grant->request_id : q->open_device->request_id);
      else if (kind == (int)sv->back)
        sv->given = grant ? q->release->cookie : q->close_device->device_file_id;
      vfiobroker__v1__workload_request__free_unpacked(q, NULL);
      if (kind != (int)sv->again && kind != (int)sv->back) break;
      if (++sv->steps == sv->die_at) break;
      if (kind == (int)sv->again && grant) put_grant(c, 0x5000);
      else if (kind == (int)sv->again) put_opened(c); /* device file 7 */
      else put_plain(c, grant ? VFIOBROKER__V1__WORKLOAD_REPLY__KIND_RELEASE : VFIOBROKER__V1__WORKLOAD_REPLY__KIND_DEVICE_CLOSED);
    }
  }
  close(c);
  return NULL;
}

/* s resumes against a lost_server doing `sv` on a listening socket of its own; then, if `last`, s is
 * disconnected (the server holds the connection until then). */
static int resume_on(vfb_session *s, struct lost_server *sv, int last) {
  char dir[] = "/tmp/vfb-lost-XXXXXX";
  if (mkdtemp(dir) == NULL) abort();
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s/fd.sock", dir);
  sv->listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sv->listener < 0 || bind(sv->listener, (struct sockaddr *)&a, sizeof a) != 0 || listen(sv->listener, 4) != 0)
    abort();
  vfb_copy(sv->session_id, sizeof sv->session_id, s->session_id);
  vfb_copy(s->fd_path, sizeof s->fd_path, a.sun_path);
  s->timeout_ms = 5000;
  pthread_t th;
  if (pthread_create(&th, NULL, serve_lost, sv) != 0) abort();
  int rc = vfb_resume(s);
  if (last) vfb_disconnect(s);
  pthread_join(th, NULL);
  close(sv->listener);
  unlink(a.sun_path);
  rmdir(dir);
  return rc;
}

/* s's connection (its peer end `peer`) lost a call whose request is the last one unread on peer:
 * `first` gets that request's id; then s resumes against a lost_server doing `sv` (and, if `killed`
 * is not NULL, a first one doing `killed`, which closes the connection in the middle of that resume:
 * brokerd killed again). s is disconnected after. */
static int resume_lost(vfb_session *s, int peer, struct lost_server *sv, char first[64], struct lost_server *killed) {
  Vfiobroker__V1__WorkloadRequest *q = NULL;
  first[0] = '\0';
  while (read_request(peer, &q) == 0) { /* the calls before it too (an open's request) */
    if (q->kind_case == sv->again)
      vfb_copy(first, 64, sv->again == VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT ? q->grant->request_id
                                                                                   : q->open_device->request_id);
    vfiobroker__v1__workload_request__free_unpacked(q, NULL);
    int pending = 0;
    if (ioctl(peer, FIONREAD, &pending) != 0 || pending == 0) break;
  }
  close(peer);
  if (killed != NULL) CHECK(resume_on(s, killed, 0) != VFB_OK);
  return resume_on(s, sv, 1);
}

/* A session whose grant (vfb_map after an open of sim0) or open of sim0, `again`, failed: brokerd
 * read it, recorded it and gave no reply (it is killed; here the library's timeout stands for the
 * connection's end), so the session is down: *out (left NULL if the setup failed). *peer: brokerd's
 * end, the lost request last on it. */
static void lose(Vfiobroker__V1__WorkloadRequest__KindCase again, int *peer, vfb_session **out) {
  int grant = again == VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT;
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  if (grant) put_opened(sv[0]);
  vfb_session *s = session_on(sv[1]);
  vfb_device *d = NULL;
  vfb_mapping *m = NULL;
  if (grant) REQUIRE(vfb_open_device(s, "sim0", &d) == VFB_OK);
  s->timeout_ms = 50;
  if (grant) {
    CHECK_EQ(vfb_map(d, 2, 0, 4096, VFB_ATTR_WC, VFB_PROT_RW, &m), VFB_E_TIMEOUT);
    CHECK(m == NULL);
  } else {
    CHECK_EQ(vfb_open_device(s, "sim0", &d), VFB_E_TIMEOUT);
    CHECK(d == NULL);
  }
  *peer = sv[0];
  *out = s;
}

/* A lost grant (or open), `again`: vfb_resume asks for it again with its request id and gives back
 * what brokerd answers (the restored session holding cookie `held` of device file 7, if not 0).
 * die_at not 0: the next brokerd is killed in the middle of that resume, once it read request
 * number die_at (2: the regrant or reopen, 3: its release or close); the resume after it still
 * settles the call, asking again with the same id or giving back what the killed one answered,
 * never a second grant. */
static void resume_settles(Vfiobroker__V1__WorkloadRequest__KindCase again, uint64_t held, int die_at) {
  int grant = again == VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT;
  int fds0 = vfb_test_count_fds();
  int peer = -1;
  vfb_session *s = NULL;
  lose(again, &peer, &s);
  REQUIRE(s != NULL);
  Vfiobroker__V1__WorkloadRequest__KindCase back =
      grant ? VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_RELEASE : VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_CLOSE_DEVICE;
  struct lost_server k = {.held_cookie = held, .again = again, .back = back, .die_at = die_at};
  struct lost_server srv = {.held_cookie = held, .again = again, .back = back};
  char first[64];
  CHECK_EQ(resume_lost(s, peer, &srv, first, die_at != 0 ? &k : NULL), VFB_OK);
  CHECK(strncmp(first, "vfb-", 4) == 0);
  if (die_at != 0) {
    CHECK_EQ(k.steps, die_at);
    CHECK(strcmp(k.again_id, first) == 0);
  }
  if (die_at != 3) { /* asked again with the same id (the same grant, not a new one), then given back */
    CHECK_EQ(srv.steps, 3);
    CHECK(strcmp(srv.again_id, first) == 0);
  } else { /* answered, killed during the give-back: only the give-back again, no second grant */
    CHECK_EQ(srv.steps, 2);
    CHECK(srv.again_id[0] == '\0');
  }
  CHECK_EQ(srv.given, grant ? 0x5000 : 7); /* what brokerd answered is given back */
  CHECK_EQ(vfb_test_count_fds(), fds0);    /* the regrant's fd was closed */
}

static void t_resume_regrants_a_lost_grant(void) {
  resume_settles(VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT, 0x5000, 0);
}

static void t_resume_closes_a_lost_open(void) {
  resume_settles(VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_OPEN_DEVICE, 0, 0);
}

static void t_resume_killed_during_regrant(void) {
  resume_settles(VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT, 0x5000, 2);
  resume_settles(VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT, 0x5000, 3);
}

static void t_resume_killed_during_reopen(void) {
  resume_settles(VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_OPEN_DEVICE, 0x5000, 2);
  resume_settles(VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_OPEN_DEVICE, 0x5000, 3);
}

static void t_queue_bound(void) {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  int big = 1 << 20;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  put_opened(sv[0]);
  put_grant(sv[0], 8192);
  vfb_session *s = session_on(sv[1]);
  vfb_device *d = NULL;
  vfb_mapping *m = NULL;
  CHECK_EQ(vfb_open_device(s, "sim0", &d), VFB_OK);
  CHECK_EQ(vfb_map(d, 2, 0, 4096, VFB_ATTR_WC, VFB_PROT_RW, &m), VFB_OK);
  for (int i = 0; i < 50; i++) put_revocation(sv[0], 8192);             /* repeats of a held cookie */
  for (int i = 0; i < 400; i++) put_revocation(sv[0], (uint64_t)(i + 100) << 12); /* cookies never held */
  vfb_event ev;
  int held = 0, unknown = 0, n;
  while ((n = vfb_read_event(s, &ev)) == 1) {
    if (ev.mapping == m && m != NULL) held++;
    else if (ev.mapping == NULL) unknown++;
  }
  CHECK_EQ(n, 0);
  CHECK_EQ(held, 1);
  CHECK_EQ(unknown, VFB_MAX_QUEUED_UNKNOWN);
  close(sv[0]);
  vfb_disconnect(s);
}

static void t_last_error(void) {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  put_opened(sv[0]);
  vfb_session *s = session_on(sv[1]);
  vfb_device *d = NULL;
  CHECK_EQ(vfb_open_device(s, "sim0", &d), VFB_OK);
  REQUIRE(d != NULL);
  vfb_mapping *m = NULL;
  vfb_region r;
  CHECK_EQ(vfb_map(d, 2, 1, 4096, VFB_ATTR_UC, VFB_PROT_RW, &m), VFB_E_UNALIGNED);
  CHECK_EQ(vfb_region_info(d, 9, &r), VFB_E_NO_SUCH_REGION);
  CHECK(strstr(vfb_last_error(s), "no region 9") != NULL);
  CHECK_EQ(vfb_region_at(d, 5, &r), VFB_E_INVALID_ARGUMENT);
  CHECK(strstr(vfb_last_error(s), "position 5") != NULL);
  CHECK_EQ(vfb_region_info(d, 2, NULL), VFB_E_INVALID_ARGUMENT);
  CHECK(strstr(vfb_last_error(s), "vfb_region_info: out is NULL") != NULL);
  CHECK_EQ(vfb_map(d, 2, 0, 4096, VFB_ATTR_UC, VFB_PROT_RW, NULL), VFB_E_INVALID_ARGUMENT);
  CHECK(strstr(vfb_last_error(s), "vfb_map: out is NULL") != NULL);
  vfb_range rg = {.region = 2, .offset = 0, .length = 4096, .attr = VFB_ATTR_UC, .prot = VFB_PROT_RW};
  CHECK_EQ(vfb_map_many(d, &rg, 0, &m), VFB_E_INVALID_ARGUMENT);
  CHECK(strstr(vfb_last_error(s), "0 ranges") != NULL);
  CHECK_EQ(vfb_read_event(s, NULL), VFB_E_INVALID_ARGUMENT);
  CHECK(strstr(vfb_last_error(s), "ev is NULL") != NULL);
  CHECK_EQ(vfb_session_identity(s, NULL), VFB_E_INVALID_ARGUMENT);
  CHECK(strstr(vfb_last_error(s), "out is NULL") != NULL);
  CHECK_EQ(vfb_open_device(s, "sim0", NULL), VFB_E_INVALID_ARGUMENT);
  CHECK(strstr(vfb_last_error(s), "vfb_open_device: out") != NULL);
  put_plain(sv[0], VFIOBROKER__V1__WORKLOAD_REPLY__KIND_DEVICE_CLOSED);
  vfb_disconnect(s);
  close(sv[0]);
}

const vfb_test vfb_lifecycle_tests[] = {
    {"lifecycle: a mapping's status and access after restart, connection lost, brokerd's end", t_status_after_end},
    {"lifecycle: a mapping revoked before a restart reports the revocation", t_revoked_then_restart},
    {"lifecycle: vfb_resume of a session brokerd ended says so without connecting", t_resume_after_ended},
    {"lifecycle: vfb_resume: closed before the hello is CONNECT; refused says why, truthfully", t_resume_answers},
    {"lifecycle: vfb_resume asks again for a grant whose reply the restart lost (same request id) and releases it", t_resume_regrants_a_lost_grant},
    {"lifecycle: vfb_resume opens again a device whose open's reply the restart lost (same request id) and closes it", t_resume_closes_a_lost_open},
    {"lifecycle: a brokerd killed during vfb_resume's regrant or its release: the next resume settles the grant once", t_resume_killed_during_regrant},
    {"lifecycle: a brokerd killed during vfb_resume's reopen or its close: the next resume settles the open once", t_resume_killed_during_reopen},
    {"lifecycle: a flood of revocations is bounded (repeats dropped, unknown cookies capped)", t_queue_bound},
    {"lifecycle: every failed call of a session sets its last error, device-level ones too", t_last_error},
    {NULL, NULL},
};

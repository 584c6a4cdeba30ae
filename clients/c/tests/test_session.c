/* test_session.c: the session API without brokerd: a session whose connection is a socketpair,
 * brokerd's side scripted as the frames written to it beforehand (workload.proto replies and
 * events, a memfd as the granted fd). A revocation read replaces the mapping at the same address
 * by an inaccessible one and says why; the event fd polls readable for a pushed event; brokerd's
 * "restart" makes calls fail VFB_E_RESTARTED; connect's own failures; brokerd's statuses as codes.
 * Real brokerd runs are test/clib/session.test.ts's. */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runner.h"
#include "script.h"
#include "session.h"

/* A live session on sock, as vfb_connect_ex leaves one after its hello. */
vfb_session *session_on(int sock) {
  vfb_session *s = calloc(1, sizeof *s);
  if (s == NULL) abort();
  s->sock = s->epfd = s->evfd = -1;
  s->timeout_ms = 2000;
  s->page_size = 4096;
  strcpy(s->fd_path, "test");
  s->rbuf = malloc(VFB_WL_REPLY_MAX_BYTES);
  if (s->rbuf == NULL) abort();
  vfb_frame_reader_init(&s->reader, s->rbuf, VFB_WL_REPLY_MAX_BYTES, 0);
  if (vfb_events_open(s) != VFB_OK) abort();
  int fl = fcntl(sock, F_GETFL);
  if (fl < 0 || fcntl(sock, F_SETFL, fl | O_NONBLOCK) < 0) abort(); /* as vfb_wl_connect leaves it */
  s->sock = sock;
  if (vfb_events_watch(s, sock) != VFB_OK) abort();
  return s;
}

/* Writes one reply frame (and fd, if >= 0) to sock, as brokerd would. */
void put(int sock, Vfiobroker__V1__WorkloadReply *r, int fd) {
  uint8_t buf[4096];
  r->status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK;
  size_t n = vfiobroker__v1__workload_reply__pack(r, buf + 4);
  vfb_frame_put_len(buf, (uint32_t)n);
  struct iovec iov = {.iov_base = buf, .iov_len = n + 4};
  union {
    struct cmsghdr align;
    char b[CMSG_SPACE(sizeof(int))];
  } control;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  memset(&control, 0, sizeof control);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    msg.msg_control = control.b;
    msg.msg_controllen = sizeof control.b;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  if (sendmsg(sock, &msg, MSG_NOSIGNAL) != (ssize_t)(n + 4)) abort();
}

void put_event(int sock, Vfiobroker__V1__WorkloadEvent *e) {
  Vfiobroker__V1__WorkloadReply r = VFIOBROKER__V1__WORKLOAD_REPLY__INIT;
  r.kind_case = VFIOBROKER__V1__WORKLOAD_REPLY__KIND_EVENT;
  r.event = e;
  put(sock, &r, -1);
}

/* The device_opened reply of sim0 (device file 7) with BAR2: 1 MiB, UC or WC. */
void put_opened(int sock) {
  Vfiobroker__V1__Attribute attrs[2] = {VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_UC, VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC};
  Vfiobroker__V1__Region rg = VFIOBROKER__V1__REGION__INIT;
  rg.index = 2;
  rg.name = "BAR2";
  rg.size = 1 << 20;
  rg.readable = rg.writable = rg.mappable = rg.prefetchable = 1;
  rg.n_attributes = 2;
  rg.attributes = attrs;
  Vfiobroker__V1__Region *rgs[1] = {&rg};
  Vfiobroker__V1__Device dv = VFIOBROKER__V1__DEVICE__INIT;
  dv.id = "sim0";
  dv.n_regions = 1;
  dv.regions = rgs;
  dv.health = VFIOBROKER__V1__DEVICE_HEALTH__DEVICE_HEALTH_HEALTHY;
  Vfiobroker__V1__WorkloadDeviceOpened op = VFIOBROKER__V1__WORKLOAD_DEVICE_OPENED__INIT;
  op.device_file_id = 7;
  op.device = &dv;
  Vfiobroker__V1__WorkloadReply r = VFIOBROKER__V1__WORKLOAD_REPLY__INIT;
  r.kind_case = VFIOBROKER__V1__WORKLOAD_REPLY__KIND_DEVICE_OPENED;
  r.device_opened = &op;
  put(sock, &r, -1);
}

void put_plain(int sock, int kind) {
  Vfiobroker__V1__FdReply fr = VFIOBROKER__V1__FD_REPLY__INIT;
  fr.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK;
  Vfiobroker__V1__WorkloadDeviceClosed dc = VFIOBROKER__V1__WORKLOAD_DEVICE_CLOSED__INIT;
  Vfiobroker__V1__WorkloadReply r = VFIOBROKER__V1__WORKLOAD_REPLY__INIT;
  r.kind_case = kind;
  if (kind == VFIOBROKER__V1__WORKLOAD_REPLY__KIND_RELEASE) r.release = &fr;
  else r.device_closed = &dc;
  put(sock, &r, -1);
}

void perms_of(const void *addr, char out[8]) {
  out[0] = '\0';
  FILE *f = fopen("/proc/self/maps", "re");
  if (f == NULL) return;
  char line[512];
  while (fgets(line, sizeof line, f) != NULL) {
    unsigned long lo, hi;
    char p[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, p) == 3 && lo <= (unsigned long)addr && (unsigned long)addr < hi) {
      memcpy(out, p, 8);
      break;
    }
  }
  fclose(f);
}

static void t_revocation(void) {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  int bar = memfd_create("test-bar", MFD_CLOEXEC);
  REQUIRE(bar >= 0 && ftruncate(bar, 4096) == 0);
  put_opened(sv[0]);
  Vfiobroker__V1__FdReply g = VFIOBROKER__V1__FD_REPLY__INIT;
  g.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK;
  g.cookie = 8192;
  g.length = 4096;
  g.region_index = 2;
  g.prot = VFIOBROKER__V1__PROT__PROT_READ_WRITE;
  g.effective_attribute = VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC;
  g.backing = VFIOBROKER__V1__BACKING_KIND__BACKING_KIND_MEMFD;
  Vfiobroker__V1__WorkloadReply gr = VFIOBROKER__V1__WORKLOAD_REPLY__INIT;
  gr.kind_case = VFIOBROKER__V1__WORKLOAD_REPLY__KIND_GRANT;
  gr.grant = &g;
  put(sv[0], &gr, bar);
  Vfiobroker__V1__WorkloadRevocation rv = VFIOBROKER__V1__WORKLOAD_REVOCATION__INIT;
  rv.device_file_id = 7;
  rv.cookie = 8192;
  rv.device_id = "sim0";
  rv.reason = "device-drain";
  rv.message = "an operator drains sim0";
  Vfiobroker__V1__WorkloadEvent e = VFIOBROKER__V1__WORKLOAD_EVENT__INIT;
  e.kind_case = VFIOBROKER__V1__WORKLOAD_EVENT__KIND_REVOCATION;
  e.revocation = &rv;
  put_event(sv[0], &e);

  vfb_session *s = session_on(sv[1]);
  vfb_device *d = NULL;
  vfb_mapping *m = NULL;
  CHECK_EQ(vfb_open_device(s, "sim0", &d), VFB_OK);
  CHECK_EQ(vfb_map(d, 2, 0, 4096, VFB_ATTR_WC, VFB_PROT_RW, &m), VFB_OK);
  if (m != NULL) {
    char *addr = vfb_mapping_addr(m);
    memcpy(addr, "bar!", 4);
    char got[4] = {0};
    CHECK(pread(bar, got, 4, 0) == 4 && memcmp(got, "bar!", 4) == 0); /* the write reached the "BAR" */
    struct pollfd p = {.fd = vfb_event_fd(s), .events = POLLIN, .revents = 0};
    CHECK_EQ(poll(&p, 1, 0), 1); /* the pushed revocation makes the event fd readable */
    char perms[8];
    perms_of(addr, perms);
    CHECK(strcmp(perms, "rw-s") == 0);
    CHECK_EQ(vfb_mapping_status(m), VFB_OK); /* not applied until read */
    vfb_event ev;
    CHECK_EQ(vfb_read_event(s, &ev), 1);
    CHECK_EQ(ev.kind, VFB_EVENT_REVOKED);
    CHECK(ev.mapping == m);
    CHECK(strcmp(ev.reason, "device-drain") == 0 && strcmp(ev.message, "an operator drains sim0") == 0);
    CHECK_EQ(vfb_mapping_status(m), VFB_E_MAPPING_REVOKED);
    CHECK(vfb_mapping_addr(m) == addr);
    perms_of(addr, perms);
    CHECK(strcmp(perms, "---p") == 0); /* the same address, inaccessible */
    /* (That an access then fails EFAULT is the e2e test's check: valgrind flags the probe.) */
    CHECK_EQ(vfb_read_event(s, &ev), 0);
    put_plain(sv[0], VFIOBROKER__V1__WORKLOAD_REPLY__KIND_RELEASE); /* only now: a reply nobody asked for breaks */
    CHECK_EQ(vfb_unmap(m), VFB_OK);
  }
  put_plain(sv[0], VFIOBROKER__V1__WORKLOAD_REPLY__KIND_DEVICE_CLOSED);
  vfb_disconnect(s); /* closes the device (the scripted device_closed reply) and sv[1] */
  close(bar);
  close(sv[0]);
}

static void t_restart(void) {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  Vfiobroker__V1__WorkloadDeviceHealth h = VFIOBROKER__V1__WORKLOAD_DEVICE_HEALTH__INIT;
  h.device_id = "sim0";
  h.health = VFIOBROKER__V1__DEVICE_HEALTH__DEVICE_HEALTH_DRAINING;
  Vfiobroker__V1__WorkloadEvent e = VFIOBROKER__V1__WORKLOAD_EVENT__INIT;
  e.kind_case = VFIOBROKER__V1__WORKLOAD_EVENT__KIND_DEVICE_HEALTH;
  e.device_health = &h;
  put_event(sv[0], &e);
  h.health = VFIOBROKER__V1__DEVICE_HEALTH__DEVICE_HEALTH_GONE;
  put_event(sv[0], &e); /* coalesced with the first: the latest health of sim0 */
  Vfiobroker__V1__WorkloadLeaseEnded le = VFIOBROKER__V1__WORKLOAD_LEASE_ENDED__INIT;
  le.reason = "restart";
  le.message = "brokerd restarts";
  Vfiobroker__V1__WorkloadEvent end = VFIOBROKER__V1__WORKLOAD_EVENT__INIT;
  end.kind_case = VFIOBROKER__V1__WORKLOAD_EVENT__KIND_LEASE_ENDED;
  end.lease_ended = &le;
  put_event(sv[0], &end);
  shutdown(sv[0], SHUT_WR);
  vfb_session *s = session_on(sv[1]);
  vfb_device_list *l = NULL;
  CHECK_EQ(vfb_list_devices(s, &l), VFB_E_RESTARTED);
  CHECK(l == NULL);
  CHECK(strstr(vfb_last_error(s), "vfb_resume") != NULL);
  vfb_event ev;
  CHECK_EQ(vfb_read_event(s, &ev), 1);
  CHECK(ev.kind == VFB_EVENT_DEVICE_HEALTH && ev.health == VFB_HEALTH_GONE && strcmp(ev.device_id, "sim0") == 0);
  CHECK_EQ(vfb_read_event(s, &ev), 1);
  CHECK(ev.kind == VFB_EVENT_SESSION_ENDED && strcmp(ev.reason, "restart") == 0);
  CHECK_EQ(vfb_read_event(s, &ev), 0);
  vfb_disconnect(s);
  close(sv[0]);
}

static void t_connect_failures(void) {
  vfb_session *s = (vfb_session *)&s;
  char msg[256] = "";
  vfb_connect_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.broker_socket = "/nonexistent-vfb-unit/broker.sock";
  o.error_message = msg;
  o.error_message_size = sizeof msg;
  CHECK_EQ(vfb_connect_ex(&o, &s), VFB_E_CONNECT);
  CHECK(s == NULL);
  /* The message names the missing directory and where the path came from. */
  CHECK(strstr(msg, "the directory /nonexistent-vfb-unit does not exist") != NULL);
  CHECK(strstr(msg, "beside the broker socket /nonexistent-vfb-unit/broker.sock, from the argument") != NULL);
  char dir[] = "/tmp/vfb-unit-XXXXXX", sock[64];
  REQUIRE(mkdtemp(dir) != NULL);
  snprintf(sock, sizeof sock, "%s/broker.sock", dir);
  o.broker_socket = sock;
  CHECK_EQ(vfb_connect_ex(&o, &s), VFB_E_CONNECT);
  CHECK(strstr(msg, "nothing listens at /tmp/vfb-unit-") != NULL && strstr(msg, "is brokerd running") != NULL);
  rmdir(dir);
  o.broker_socket = "/nonexistent-vfb-unit/broker.sock";
  o.resume_token = "not-a-token";
  CHECK_EQ(vfb_connect_ex(&o, &s), VFB_E_INVALID_ARGUMENT);
  CHECK(strstr(msg, "32 lower-case hex") != NULL);
  o.resume_token = NULL;
  o.struct_size = 4;
  CHECK_EQ(vfb_connect_ex(&o, &s), VFB_E_INVALID_ARGUMENT);
  CHECK_EQ(vfb_connect_ex(NULL, NULL), VFB_E_INVALID_ARGUMENT);
  /* NULL objects: accessors answer, calls refuse, nothing crashes. */
  CHECK(strcmp(vfb_last_error(NULL), "") == 0);
  CHECK_EQ(vfb_event_fd(NULL), -1);
  CHECK_EQ(vfb_read_event(NULL, NULL), VFB_E_INVALID_ARGUMENT);
  CHECK_EQ(vfb_unmap(NULL), VFB_E_INVALID_ARGUMENT);
  CHECK_EQ(vfb_close_device(NULL), VFB_E_INVALID_ARGUMENT);
  CHECK_EQ(vfb_resume(NULL), VFB_E_INVALID_ARGUMENT);
  CHECK_EQ(vfb_mapping_status(NULL), VFB_E_INVALID_ARGUMENT);
  vfb_disconnect(NULL);
}

static void t_refusals(void) {
  const int refused = VFIOBROKER__V1__FD_STATUS__FD_STATUS_REFUSED;
  const int open = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_OPEN_DEVICE;
  const int grant = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT;
  CHECK_EQ(vfb_refusal_error(refused, "NOT_FOUND", open), VFB_E_UNKNOWN_DEVICE);
  CHECK_EQ(vfb_refusal_error(refused, "NOT_FOUND", grant), VFB_E_NOT_FOUND);
  CHECK_EQ(vfb_refusal_error(refused, "PERMISSION_DENIED", grant), VFB_E_PERMISSION);
  CHECK_EQ(vfb_refusal_error(refused, "RESOURCE_EXHAUSTED", grant), VFB_E_QUOTA);
  CHECK_EQ(vfb_refusal_error(refused, "FAILED_PRECONDITION", grant), VFB_E_CONFLICT);
  CHECK_EQ(vfb_refusal_error(refused, "UNAVAILABLE", grant), VFB_E_UNAVAILABLE);
  CHECK_EQ(vfb_refusal_error(refused, "INVALID_ARGUMENT", grant), VFB_E_REJECTED);
  CHECK_EQ(vfb_refusal_error(refused, "SOMETHING_NEW", grant), VFB_E_REFUSED);
  CHECK_EQ(vfb_refusal_error(VFIOBROKER__V1__FD_STATUS__FD_STATUS_BUSY, "", grant), VFB_E_BUSY);
  CHECK_EQ(vfb_refusal_error(VFIOBROKER__V1__FD_STATUS__FD_STATUS_UNSUPPORTED_VERSION, "", grant), VFB_E_UNSUPPORTED_VERSION);
}

const vfb_test vfb_session_tests[] = {
    {"session: a revocation read leaves the same address PROT_NONE and says why", t_revocation},
    {"session: brokerd's restart fails calls VFB_E_RESTARTED; health coalesced; the end's event", t_restart},
    {"session: connect's failures and NULL objects", t_connect_failures},
    {"session: brokerd's refusals as codes", t_refusals},
    {NULL, NULL},
};

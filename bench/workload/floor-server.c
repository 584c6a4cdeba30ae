/* floor-server.c: the C floor of the workload exchange. A single-threaded epoll server on a Unix
 * stream socket that speaks the same frames as brokerd's workload protocol: it decodes each
 * WorkloadRequest with protobuf-c and answers hello, open_device, grant (a WorkloadReply carrying
 * an FdReply with every field brokerd fills, and a memfd with SCM_RIGHTS) and release, with no
 * policy, quota, state or journal. What it costs is what the exchange itself costs (syscalls, fd
 * passing, protobuf encode and decode, the wake-ups between processes); brokerd's figures are
 * divided by it. It owns nothing else and never runs outside the benchmark.
 * Usage: floor-server PATH   (prints "ready", serves until killed; "rss" on stdin prints VmRSS) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vfiobroker/v1/workload.pb-c.h"
#include "wire.h"

/* One connection: only a partial frame's bytes are kept (most reads hold whole frames). */
struct conn {
  int fd;
  uint32_t have;
  uint8_t *partial; /* NULL unless a frame is split across reads */
};

static int memfd;
static uint64_t next_cookie = 1;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static int reply(int fd, Vfiobroker__V1__WorkloadReply *r, int pass) {
  uint8_t out[4096];
  size_t n = vfiobroker__v1__workload_reply__get_packed_size(r);
  if (n > sizeof out) return -1;
  vfiobroker__v1__workload_reply__pack(r, out);
  return wire_send(fd, out, n, pass);
}

static int serve(int fd, const uint8_t *frame, size_t len) {
  Vfiobroker__V1__WorkloadRequest *req = vfiobroker__v1__workload_request__unpack(NULL, len, frame);
  if (!req) return -1;
  Vfiobroker__V1__WorkloadReply r = VFIOBROKER__V1__WORKLOAD_REPLY__INIT;
  r.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK;
  Vfiobroker__V1__WorkloadWelcome w = VFIOBROKER__V1__WORKLOAD_WELCOME__INIT;
  Vfiobroker__V1__WorkloadDeviceOpened o = VFIOBROKER__V1__WORKLOAD_DEVICE_OPENED__INIT;
  Vfiobroker__V1__FdReply g = VFIOBROKER__V1__FD_REPLY__INIT;
  int pass = -1, rc;
  switch (req->kind_case) {
    case VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_HELLO:
      w.version = 1;
      w.session_id = "0123456789abcdef";
      w.resume_token = "0123456789abcdef0123456789abcdef";
      w.page_size = 4096;
      r.kind_case = VFIOBROKER__V1__WORKLOAD_REPLY__KIND_HELLO;
      r.hello = &w;
      break;
    case VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_OPEN_DEVICE:
      o.device_file_id = 1;
      r.kind_case = VFIOBROKER__V1__WORKLOAD_REPLY__KIND_DEVICE_OPENED;
      r.device_opened = &o;
      break;
    case VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT:
      /* Every field brokerd's grant reply sets (fdpass/adapter.ts mappingReply). */
      g.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK;
      g.cookie = (next_cookie++) << 12;
      g.mmap_offset = 0;
      g.length = req->grant->length;
      g.prot = req->grant->prot;
      g.effective_attribute = req->grant->attribute;
      g.requested_attribute = req->grant->attribute;
      g.backing = VFIOBROKER__V1__BACKING_KIND__BACKING_KIND_MEMFD;
      g.region_index = req->grant->region_index;
      g.region_offset = req->grant->offset;
      g.refs = 1;
      r.kind_case = VFIOBROKER__V1__WORKLOAD_REPLY__KIND_GRANT;
      r.grant = &g;
      pass = memfd;
      break;
    case VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_RELEASE:
      g.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK;
      g.cookie = req->release->cookie;
      r.kind_case = VFIOBROKER__V1__WORKLOAD_REPLY__KIND_RELEASE;
      r.release = &g;
      break;
    default:
      r.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_BAD_REQUEST;
      r.message = "the floor server answers hello, open_device, grant and release only";
  }
  rc = reply(fd, &r, pass);
  vfiobroker__v1__workload_request__free_unpacked(req, NULL);
  return rc;
}

/* Reads what the socket has and serves every whole frame in it. -1: close the connection. */
static int readable(struct conn *c) {
  static uint8_t buf[64 * 1024];
  uint32_t have = c->have;
  if (have) memcpy(buf, c->partial, have);
  ssize_t n = recv(c->fd, buf + have, sizeof buf - have, MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return -1;
  if (n < 0) return 0;
  size_t end = have + (size_t)n, at = 0;
  while (end - at >= 4) {
    uint32_t be;
    memcpy(&be, buf + at, 4);
    uint32_t len = ntohl(be);
    if (len > 3072) return -1;
    if (end - at < 4 + (size_t)len) break;
    if (serve(c->fd, buf + at + 4, len) < 0) return -1;
    at += 4 + len;
  }
  free(c->partial);
  c->partial = NULL;
  c->have = (uint32_t)(end - at);
  if (c->have) {
    c->partial = malloc(c->have);
    if (!c->partial) return -1;
    memcpy(c->partial, buf + at, c->have);
  }
  return 0;
}

static void print_rss(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) printf("rss %ld\n", atol(line + 6));
  if (f) fclose(f);
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s PATH\n", argv[0]);
    return 2;
  }
  struct rlimit rl = {65536, 65536};
  setrlimit(RLIMIT_NOFILE, &rl);
  memfd = memfd_create("floor-bar", MFD_CLOEXEC);
  if (memfd < 0 || ftruncate(memfd, 1 << 20) < 0) die("memfd");
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[1]);
  unlink(argv[1]);
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0) die("listen");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
  struct conn in = {.fd = 0};
  ev.data.ptr = &in;
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
  printf("ready\n");
  fflush(stdout);
  struct epoll_event evs[64];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (!c) {
        int s;
        while ((s = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
          struct conn *nc = calloc(1, sizeof *nc);
          if (!nc) die("calloc");
          nc->fd = s;
          struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
          epoll_ctl(ep, EPOLL_CTL_ADD, s, &e);
        }
      } else if (c == &in) {
        char line[64];
        if (!fgets(line, sizeof line, stdin)) return 0;
        print_rss();
      } else if (readable(c) < 0) {
        close(c->fd);
        free(c->partial);
        free(c);
      }
    }
  }
}

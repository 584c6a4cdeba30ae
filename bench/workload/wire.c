/* wire.c: blocking frames and the raw client's exchanges (wire.h). */
#define _GNU_SOURCE
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int wire_send(int sock, const uint8_t *payload, size_t len, int fd) {
  uint8_t head[4];
  uint32_t be = htonl((uint32_t)len);
  memcpy(head, &be, 4);
  struct iovec iov[2] = {{head, 4}, {(void *)payload, len}};
  union {
    struct cmsghdr align;
    char b[CMSG_SPACE(sizeof(int))];
  } ctl;
  struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
  if (fd >= 0) {
    m.msg_control = ctl.b;
    m.msg_controllen = sizeof ctl.b;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  size_t want = 4 + len, sent = 0;
  while (sent < want) {
    ssize_t r = sendmsg(sock, &m, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    sent += (size_t)r;
    m.msg_control = NULL;
    m.msg_controllen = 0;
    /* advance the iovecs past what went out */
    size_t skip = (size_t)r;
    while (m.msg_iovlen > 0 && skip >= m.msg_iov[0].iov_len) {
      skip -= m.msg_iov[0].iov_len;
      m.msg_iov++;
      m.msg_iovlen--;
    }
    if (m.msg_iovlen > 0) {
      m.msg_iov[0].iov_base = (char *)m.msg_iov[0].iov_base + skip;
      m.msg_iov[0].iov_len -= skip;
    }
  }
  return 0;
}

/* Reads exactly len bytes (fds only on the first read). 0, 1 on EOF before any byte, -1. */
static int read_exact(int sock, uint8_t *buf, size_t len, int *fds, size_t *nfds) {
  size_t got = 0;
  while (got < len) {
    union {
      struct cmsghdr align;
      char b[CMSG_SPACE(sizeof(int) * WIRE_MAX_FDS)];
    } ctl;
    struct iovec iov = {buf + got, len - got};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fds) {
      m.msg_control = ctl.b;
      m.msg_controllen = sizeof ctl.b;
    }
    ssize_t r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return got == 0 ? 1 : -1;
    if (fds) {
      for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n && *nfds < WIRE_MAX_FDS; i++)
          memcpy(&fds[(*nfds)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      }
    }
    got += (size_t)r;
  }
  return 0;
}

long wire_recv(int sock, uint8_t *buf, size_t max, int *fds, size_t *nfds) {
  uint8_t head[4];
  *nfds = 0;
  int r = read_exact(sock, head, 4, fds, nfds);
  if (r == 1) return 0;
  if (r < 0) return -1;
  uint32_t be;
  memcpy(&be, head, 4);
  uint32_t len = ntohl(be);
  if (len > max) return -1;
  if (len > 0 && read_exact(sock, buf, len, fds, nfds) != 0) return -1;
  return (long)len;
}

int wire_connect(const char *path) {
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
    close(s);
    return -1;
  }
  return s;
}

/* One request, its reply (events skipped). The reply is the caller's to free. */
static Vfiobroker__V1__WorkloadReply *call(wire_session *s, const Vfiobroker__V1__WorkloadRequest *req,
                                           int *fds, size_t *nfds) {
  uint8_t out[3072];
  size_t n = vfiobroker__v1__workload_request__get_packed_size(req);
  if (n > sizeof out) return NULL;
  vfiobroker__v1__workload_request__pack(req, out);
  if (wire_send(s->sock, out, n, -1) < 0) return NULL;
  for (;;) {
    long len = wire_recv(s->sock, s->buf, sizeof s->buf, fds, nfds);
    if (len <= 0) return NULL;
    Vfiobroker__V1__WorkloadReply *r = vfiobroker__v1__workload_reply__unpack(NULL, (size_t)len, s->buf);
    if (!r) return NULL;
    if (r->kind_case != VFIOBROKER__V1__WORKLOAD_REPLY__KIND_EVENT) return r;
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    for (size_t i = 0; i < *nfds; i++) close(fds[i]);
  }
}

static int refused(const char *what, Vfiobroker__V1__WorkloadReply *r) {
  fprintf(stderr, "wire: %s: %s\n", what, r ? r->message : "no reply (connection closed)");
  if (r) vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return -1;
}

int wire_open(wire_session *s, const char *path, const char *device) {
  int fds[WIRE_MAX_FDS];
  size_t nfds;
  s->sock = wire_connect(path);
  if (s->sock < 0) {
    perror("wire: connect");
    return -1;
  }
  Vfiobroker__V1__WorkloadHello hello = VFIOBROKER__V1__WORKLOAD_HELLO__INIT;
  hello.version = 1;
  Vfiobroker__V1__WorkloadRequest req = VFIOBROKER__V1__WORKLOAD_REQUEST__INIT;
  req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_HELLO;
  req.hello = &hello;
  Vfiobroker__V1__WorkloadReply *r = call(s, &req, fds, &nfds);
  if (!r || r->kind_case != VFIOBROKER__V1__WORKLOAD_REPLY__KIND_HELLO) return refused("hello", r);
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  Vfiobroker__V1__WorkloadOpenDevice open = VFIOBROKER__V1__WORKLOAD_OPEN_DEVICE__INIT;
  open.device_id = (char *)device;
  req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_OPEN_DEVICE;
  req.open_device = &open;
  r = call(s, &req, fds, &nfds);
  if (!r || r->kind_case != VFIOBROKER__V1__WORKLOAD_REPLY__KIND_DEVICE_OPENED) return refused("open", r);
  s->device_file = r->device_opened->device_file_id;
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return 0;
}

int wire_grant(wire_session *s, unsigned region, uint64_t length, int *fd, uint64_t *cookie,
               uint64_t *mmap_offset) {
  int fds[WIRE_MAX_FDS];
  size_t nfds = 0;
  Vfiobroker__V1__FdGrant g = VFIOBROKER__V1__FD_GRANT__INIT;
  g.device_file_id = s->device_file;
  g.region_index = region;
  g.length = length;
  g.attribute = VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC;
  g.prot = VFIOBROKER__V1__PROT__PROT_READ_WRITE;
  Vfiobroker__V1__WorkloadRequest req = VFIOBROKER__V1__WORKLOAD_REQUEST__INIT;
  req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT;
  req.grant = &g;
  Vfiobroker__V1__WorkloadReply *r = call(s, &req, fds, &nfds);
  if (!r || r->kind_case != VFIOBROKER__V1__WORKLOAD_REPLY__KIND_GRANT || nfds != 1) {
    for (size_t i = 0; i < nfds; i++) close(fds[i]);
    return refused("grant", r);
  }
  *fd = fds[0];
  *cookie = r->grant->cookie;
  *mmap_offset = r->grant->mmap_offset;
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return 0;
}

int wire_release(wire_session *s, uint64_t cookie) {
  int fds[WIRE_MAX_FDS];
  size_t nfds = 0;
  Vfiobroker__V1__FdRelease rel = VFIOBROKER__V1__FD_RELEASE__INIT;
  rel.device_file_id = s->device_file;
  rel.cookie = cookie;
  Vfiobroker__V1__WorkloadRequest req = VFIOBROKER__V1__WORKLOAD_REQUEST__INIT;
  req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_RELEASE;
  req.release = &rel;
  Vfiobroker__V1__WorkloadReply *r = call(s, &req, fds, &nfds);
  for (size_t i = 0; i < nfds; i++) close(fds[i]);
  if (!r || r->kind_case != VFIOBROKER__V1__WORKLOAD_REPLY__KIND_RELEASE) return refused("release", r);
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return 0;
}

void wire_close(wire_session *s) {
  if (s->sock >= 0) close(s->sock);
  s->sock = -1;
}

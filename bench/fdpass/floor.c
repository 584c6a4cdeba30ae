// floor.c: the C floor for bench/fdpass: the same request -> fd pass -> mmap -> write -> munmap
// round trip as fdpass.ts, between two processes (fork) over a Unix STREAM socketpair, with blocking
// syscalls and no event loop. Framing is identical: 4-byte big-endian length + payload, one sendmsg
// per frame carrying the fd. Usage: floor N  -> prints "<N> <seconds>" on stdout.
// floor N grant: the whole grant exchange of bench/grant (issue 12): create request -> reply with
// the fd -> mmap -> write -> munmap -> close -> release request -> ack; prints
// "<N> <seconds> <p50 µs> <p99 µs>".
// floor N grant-batched: one exchange per grant, the previous grant's release riding in the same
// request frame (as the Node client's FdBatch does when a release waits for the next grant).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REQ_BYTES 16
#define REPLY_BYTES 24

static void die(const char* what) {
  perror(what);
  exit(1);
}

static void read_full(int fd, void* buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = read(fd, (char*)buf + got, len - got);
    if (r <= 0) die("read");
    got += (size_t)r;
  }
}

static void send_frame(int s, const void* payload, uint32_t len, int fd) {
  char buf[4 + 64];
  uint32_t be = htonl(len);
  memcpy(buf, &be, 4);
  memcpy(buf + 4, payload, len);
  struct iovec iov = {buf, 4 + len};
  union {
    struct cmsghdr align;
    char b[CMSG_SPACE(sizeof(int))];
  } ctl;
  struct msghdr m = {0};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  if (fd >= 0) {
    m.msg_control = ctl.b;
    m.msg_controllen = sizeof ctl.b;
    struct cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  if (sendmsg(s, &m, MSG_NOSIGNAL) != (ssize_t)(4 + len)) die("sendmsg");
}

// Reads one frame of known size; returns the fd that came with it (or -1).
static int recv_frame(int s, void* payload, uint32_t len) {
  char buf[4 + 64];
  struct iovec iov = {buf, 4 + len};
  union {
    struct cmsghdr align;
    char b[CMSG_SPACE(sizeof(int) * 253)];
  } ctl;
  struct msghdr m = {0};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl.b;
  m.msg_controllen = sizeof ctl.b;
  ssize_t r = recvmsg(s, &m, MSG_CMSG_CLOEXEC);
  if (r <= 0) return -2;
  if (m.msg_flags & MSG_CTRUNC) die("MSG_CTRUNC");
  int fd = -1;
  struct cmsghdr* c = CMSG_FIRSTHDR(&m);
  if (c && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof fd);
  if ((size_t)r < 4 + len) read_full(s, buf + r, 4 + len - (size_t)r);
  uint32_t be;
  memcpy(&be, buf, 4);
  if (ntohl(be) != len) die("frame length");
  memcpy(payload, buf + 4, len);
  return fd;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

// Forks the server end: it answers every frame, with the memfd for "map" requests (the fd pass) and
// without one for anything else (a release's ack). Returns its pid; *client is our end.
static pid_t start_server(int* client) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(sv[0]);
    int memfd = memfd_create("bench-bar", MFD_CLOEXEC);
    if (memfd < 0 || ftruncate(memfd, 4096) < 0) die("memfd");
    char req[REQ_BYTES], reply[REPLY_BYTES] = "cookie=4096 len=4096";
    for (;;) {
      if (recv_frame(sv[1], req, REQ_BYTES) == -2) _exit(0);
      send_frame(sv[1], reply, REPLY_BYTES, req[0] == 'm' ? memfd : -1);
    }
  }
  close(sv[1]);
  *client = sv[0];
  return pid;
}

// One request -> reply with the fd -> mmap 4 KiB -> one write -> munmap -> close.
static void map_write_unmap(int s, long i) {
  char req[REQ_BYTES] = "map region=2", reply[REPLY_BYTES];
  send_frame(s, req, REQ_BYTES, -1);
  int fd = recv_frame(s, reply, REPLY_BYTES);
  if (fd < 0) die("no fd");
  uint8_t* p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  p[(unsigned long)i & 4095] = (uint8_t)i;
  munmap(p, 4096);
  close(fd);
}

// The whole grant: two exchanges (create + fd, release + ack), as brokerd's fast path does;
// batched: the release has no frame of its own, it rides in the next create's request.
static int grant_floor(long n, int batched) {
  int s;
  pid_t pid = start_server(&s);
  char release_req[REQ_BYTES] = "rel cookie=4096", reply[REPLY_BYTES];
  long warm = n / 10 + 100;
  double* us = malloc(sizeof(double) * (size_t)n);
  if (!us) die("malloc");
  double t0 = 0;
  for (long i = -warm; i < n; i++) {
    double a = now_us();
    if (i == 0) t0 = a;
    map_write_unmap(s, i);
    if (!batched) {
      send_frame(s, release_req, REQ_BYTES, -1);
      if (recv_frame(s, reply, REPLY_BYTES) != -1) die("ack");
    }
    if (i >= 0) us[i] = now_us() - a;
  }
  double total = (now_us() - t0) / 1e6;
  close(s);
  waitpid(pid, NULL, 0);
  qsort(us, (size_t)n, sizeof(double), cmp_double);
  printf("%ld %.9f %.2f %.2f\n", n, total, us[n / 2], us[(n * 99) / 100]);
  free(us);
  return 0;
}

int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 20000;
  if (argc > 2 && strcmp(argv[2], "grant") == 0) return grant_floor(n, 0);
  if (argc > 2 && strcmp(argv[2], "grant-batched") == 0) return grant_floor(n, 1);
  int s;
  pid_t pid = start_server(&s);
  struct timespec t0, t1;
  long warm = n / 10 + 100;
  for (long i = -warm; i < n; i++) {
    if (i == 0) clock_gettime(CLOCK_MONOTONIC, &t0);
    map_write_unmap(s, i);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  close(s);
  waitpid(pid, NULL, 0);
  printf("%ld %.9f\n", n, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
  return 0;
}

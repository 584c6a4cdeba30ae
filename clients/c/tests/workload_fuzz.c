/* workload_fuzz.c: libFuzzer target of the library's workload-frame decoder: a session (the
 * library's own code: src/workload.c's reply and event decoding, events.c's queue and revocations,
 * session.c's welcome checks, devices.c and mappings.c on what a reply says) whose connection is a
 * socketpair, brokerd's end written by the input. Built with ASan + UBSan by `make -C clients/c
 * fuzz` (clang-14); it owns no code under test. After every input the process must hold exactly
 * the fds it held before, and the library must have closed every fd it received.
 *
 * Input: byte 0 picks the call made first (% 4): none (events only), a hello, a device list, an
 * open of "sim0" then a map of BAR2's first page; the events are then read until none is left.
 * Then chunks, each sent with one sendmsg: a length byte, a flags byte (bits 0-1: how many fds of
 * an empty memfd ride on the chunk), then that many bytes (frames are a 4-byte big-endian length
 * and a WorkloadReply). The writer then shuts down, so every read ends (EOF or an error). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "session.h"

static int count_fds(void) {
  int n = 0;
  for (int fd = 0; fd < 1024; fd++)
    if (fcntl(fd, F_GETFD) >= 0) n++;
  return n;
}

static void send_chunk(int sock, const uint8_t *data, size_t len, int nfds, int memfd) {
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * 3)];
  } control;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  memset(&control, 0, sizeof control);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    int fds[3] = {memfd, memfd, memfd};
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
  }
  (void)sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* A live session on sock, as vfb_connect_ex leaves one after its hello (without sending one). */
static vfb_session *session_on(int sock) {
  vfb_session *s = calloc(1, sizeof *s);
  if (s == NULL) abort();
  s->sock = s->epfd = s->evfd = -1;
  s->timeout_ms = 1000;
  s->page_size = 4096;
  strcpy(s->fd_path, "fuzz");
  s->rbuf = malloc(VFB_WL_REPLY_MAX_BYTES);
  if (s->rbuf == NULL) abort();
  vfb_frame_reader_init(&s->reader, s->rbuf, VFB_WL_REPLY_MAX_BYTES, 0);
  if (vfb_events_open(s) != VFB_OK) abort();
  s->sock = sock;
  if (vfb_events_watch(s, sock) != VFB_OK) abort();
  return s;
}

static void first_call(vfb_session *s, int op) {
  if (op == 1) {
    (void)vfb_hello(s, NULL, NULL);
  } else if (op == 2) {
    vfb_device_list *l = NULL;
    if (vfb_list_devices(s, &l) == VFB_OK) {
      vfb_region r;
      for (size_t i = 0; i < vfb_device_list_count(l); i++)
        for (unsigned p = 0; p < vfb_device_list_region_count(l, i); p++) (void)vfb_device_list_region(l, i, p, &r);
    }
    vfb_device_list_free(l);
  } else if (op == 3) {
    vfb_device *d = NULL;
    vfb_mapping *m = NULL;
    if (vfb_open_device(s, "sim0", &d) == VFB_OK &&
        vfb_map(d, 2, 0, 4096, VFB_ATTR_WC | VFB_ATTR_FALLBACK_UC, VFB_PROT_RW, &m) == VFB_OK)
      (void)vfb_mapping_addr(m); /* freed by vfb_disconnect, revoked first if an event says so */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int before = count_fds();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  int memfd = memfd_create("fuzz-bar", MFD_CLOEXEC);
  if (memfd < 0) abort();
  size_t off = 1;
  while (off + 2 <= size) {
    size_t len = data[off];
    int nfds = data[off + 1] & 3;
    off += 2;
    if (len > size - off) len = size - off;
    send_chunk(sv[0], data + off, len, nfds, memfd);
    off += len;
  }
  close(memfd);
  shutdown(sv[0], SHUT_WR);
  int fl = fcntl(sv[1], F_GETFL);
  if (fl < 0 || fcntl(sv[1], F_SETFL, fl | O_NONBLOCK) < 0) abort();
  vfb_session *s = session_on(sv[1]); /* the session owns sv[1] from now on */
  first_call(s, data[0] % 4);
  vfb_event ev;
  int events = 0;
  while (vfb_read_event(s, &ev) == 1) {
    if (++events > 100000) abort(); /* the queue is bounded: it must run dry */
    if (ev.kind == VFB_EVENT_REVOKED && ev.mapping != NULL && !ev.mapping->revoked)
      abort(); /* a revocation returned is applied (its status may say the session's end first) */
  }
  vfb_disconnect(s);
  close(sv[0]);
  if (count_fds() != before) {
    fprintf(stderr, "fd leak: %d before, %d after\n", before, count_fds());
    abort();
  }
  return 0;
}

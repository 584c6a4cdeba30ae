/* frame_fuzz.c: libFuzzer target of the library's decoder: the frame reader (src/frame.c) on a real
 * socketpair, and protobuf-c's FdReply decoder on every frame it completes, as the library reads
 * brokerd's replies. Built with ASan + UBSan by `make -C clients/c fuzz` (clang-14); it owns no
 * code under test. After every input the process must hold exactly the fds it held before.
 *
 * Input: byte 0 picks the reader's max_bytes (byte0 * 64, so 0..16320), byte 1 its max_fds
 * (byte1 % 4). Then chunks, each sent with one sendmsg: a length byte, a flags byte (bits 0-1: how
 * many dups of /dev/null ride on the chunk), then that many bytes of data. The writer then shuts
 * down, and the reader reads frames until EOF or an error. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "frame.h"
#include "vfiobroker/v1/fdchannel.pb-c.h"
#include "vfio-broker.h"

static int count_fds(void) {
  int n = 0;
  for (int fd = 0; fd < 1024; fd++)
    if (fcntl(fd, F_GETFD) >= 0) n++;
  return n;
}

static void send_chunk(int sock, const uint8_t *data, size_t len, int nfds, int devnull) {
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
    int fds[3] = {devnull, devnull, devnull};
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  static uint8_t buf[255 * 64];
  int before = count_fds();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) abort();
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) abort();
  size_t max_bytes = (size_t)data[0] * 64, max_fds = data[1] % 4;
  size_t off = 2;
  while (off + 2 <= size) {
    size_t len = data[off];
    int nfds = data[off + 1] & 3;
    off += 2;
    if (len > size - off) len = size - off;
    send_chunk(sv[0], data + off, len, nfds, devnull);
    off += len;
  }
  close(devnull);
  shutdown(sv[0], SHUT_WR);
  vfb_frame_reader r;
  if (vfb_frame_reader_init(&r, buf, max_bytes, max_fds) != VFB_OK) abort();
  for (int frames = 0; frames < 10000; frames++) {
    int rc = vfb_frame_read(&r, sv[1]);
    if (rc != VFB_FRAME_DONE) {
      if (rc == VFB_FRAME_AGAIN) abort(); /* the writer shut down: EOF or an error must come */
      if (rc < 0 && r.nfds != 0) abort(); /* an error keeps no fd */
      break;
    }
    if (r.len > max_bytes || r.nfds > max_fds) abort();
    Vfiobroker__V1__FdReply *reply = vfiobroker__v1__fd_reply__unpack(NULL, r.len, r.buf);
    if (reply != NULL) vfiobroker__v1__fd_reply__free_unpacked(reply, NULL);
    int fds[VFB_FRAME_MAX_FDS];
    size_t n = vfb_frame_take_fds(&r, fds);
    for (size_t i = 0; i < n; i++) {
      if (!(fcntl(fds[i], F_GETFD) & FD_CLOEXEC)) abort();
      close(fds[i]);
    }
    vfb_frame_reader_next(&r);
  }
  vfb_frame_reader_next(&r);
  close(sv[0]);
  close(sv[1]);
  if (count_fds() != before) {
    fprintf(stderr, "fd leak: %d before, %d after\n", before, count_fds());
    abort();
  }
  return 0;
}

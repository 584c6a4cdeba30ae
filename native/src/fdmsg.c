// fdmsg.c: SCM_RIGHTS without Node (see fdmsg.h). Built into the addon and into native/fuzz, so
// what the fuzzer finds here is what brokerd runs. Receives always use MSG_CMSG_CLOEXEC and close
// every fd of a truncated message; nothing here blocks (MSG_DONTWAIT) or retries except on EINTR.
#define _GNU_SOURCE
#include "fdmsg.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

void attach_rights(struct msghdr* msg, rights_buffer* control, const int* fds, uint32_t nfds) {
  if (nfds == 0) return;
  memset(control, 0, sizeof *control);
  msg->msg_control = control->buf;
  msg->msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
  struct cmsghdr* c = CMSG_FIRSTHDR(msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
}

// Walks the headers by hand rather than with CMSG_FIRSTHDR/CMSG_NXTHDR: glibc checks neither that
// the first header's cmsg_len fits the buffer nor that it covers a header at all, and a cmsg_len
// below CMSG_LEN(0) would turn the fd count into a huge unsigned number.
bool fdmsg_each_right(const struct msghdr* msg, void (*sink)(void* ctx, int fd), void* ctx) {
  const unsigned char* base = msg->msg_control;
  size_t total = msg->msg_controllen;
  if (base == NULL) return total == 0;
  size_t off = 0;
  while (total - off >= sizeof(struct cmsghdr)) {
    struct cmsghdr h;
    memcpy(&h, base + off, sizeof h);
    if (h.cmsg_len < CMSG_LEN(0) || h.cmsg_len > total - off) return false;
    if (h.cmsg_level == SOL_SOCKET && h.cmsg_type == SCM_RIGHTS) {
      size_t n = (h.cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < n; i++) {
        int one;
        memcpy(&one, base + off + CMSG_LEN(0) + i * sizeof(int), sizeof one);
        sink(ctx, one);
      }
    }
    size_t step = CMSG_ALIGN(h.cmsg_len);
    if (step >= total - off) break;
    off += step;
  }
  return true;
}

typedef struct {
  int got[MAX_FDS_PER_MESSAGE];
  size_t n;
  bool overflow;
} harvest;

// More fds than got[] holds cannot come from the kernel into our buffer, but if they ever did they
// are closed at once, never dropped on the floor.
static void harvest_one(void* ctx, int fd) {
  harvest* h = ctx;
  if (h->n < MAX_FDS_PER_MESSAGE) {
    h->got[h->n++] = fd;
  } else {
    close(fd);
    h->overflow = true;
  }
}

fdrecv_result fdrecv(int fd, void* buf, size_t len, size_t maxfds, int* fds) {
  fdrecv_result res = {.status = FDRECV_OK, .n = 0, .err = 0, .nfds = 0};
  if (maxfds > MAX_FDS_PER_MESSAGE) maxfds = MAX_FDS_PER_MESSAGE;
  rights_buffer control;
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (maxfds > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * maxfds);
  }
  ssize_t r;
  do r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    res.err = errno;
    res.status = (errno == EAGAIN || errno == EWOULDBLOCK) ? FDRECV_AGAIN : FDRECV_ERRNO;
    return res;
  }
  harvest h = {.n = 0, .overflow = false};
  bool wellformed = msg.msg_controllen == 0 || fdmsg_each_right(&msg, harvest_one, &h);
  // CMSG_SPACE rounds up to 8 bytes, so an odd maxfds leaves room for one fd more: n > maxfds.
  if (!wellformed || (msg.msg_flags & MSG_CTRUNC) || h.overflow || h.n > maxfds) {
    for (size_t i = 0; i < h.n; i++) close(h.got[i]);
    res.nfds = h.n;
    res.status = h.n >= maxfds ? FDRECV_TOO_MANY : FDRECV_TRUNCATED;
    return res;
  }
  res.n = r;
  res.nfds = h.n;
  memcpy(fds, h.got, h.n * sizeof(int));
  return res;
}

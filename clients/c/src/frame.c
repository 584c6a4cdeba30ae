/* frame.c: the fd channel's frame codec (see frame.h). Reads and writes what the socket takes now, no policy: the
 * caller decides blocking, timeouts and limits. Its only rule of its own is never to leak an fd:
 * fds that arrive where frame.h says none may are closed before the call returns. */
#include "frame.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "vfio-broker.h"

void vfb_frame_put_len(uint8_t out[VFB_FRAME_HEADER_BYTES], uint32_t len) {
  out[0] = (uint8_t)(len >> 24);
  out[1] = (uint8_t)(len >> 16);
  out[2] = (uint8_t)(len >> 8);
  out[3] = (uint8_t)len;
}

uint32_t vfb_frame_get_len(const uint8_t in[VFB_FRAME_HEADER_BYTES]) {
  return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | (uint32_t)in[3];
}

int vfb_frame_reader_init(vfb_frame_reader *r, uint8_t *buf, size_t max_bytes, size_t max_fds) {
  if (r == NULL || (buf == NULL && max_bytes > 0) || max_bytes > VFB_FRAME_MAX_BYTES ||
      max_fds > VFB_FRAME_MAX_FDS)
    return VFB_E_INVALID_ARGUMENT;
  memset(r, 0, sizeof *r);
  r->buf = buf;
  r->max_bytes = max_bytes;
  r->max_fds = max_fds;
  return VFB_OK;
}

static void close_held(vfb_frame_reader *r) {
  for (size_t i = 0; i < r->nfds; i++) close(r->fds[i]);
  r->nfds = 0;
}

void vfb_frame_reader_next(vfb_frame_reader *r) {
  close_held(r);
  r->got = 0;
  r->len = 0;
}

size_t vfb_frame_take_fds(vfb_frame_reader *r, int *out) {
  size_t n = r->nfds;
  if (n > 0) memcpy(out, r->fds, n * sizeof(int));
  r->nfds = 0;
  return n;
}

static int fail(vfb_frame_reader *r, int err) {
  int saved = errno;
  close_held(r);
  errno = saved;
  return err;
}

/* Control room for the most fds one message can carry, aligned for cmsghdr. */
typedef union {
  struct cmsghdr align;
  char buf[CMSG_SPACE(sizeof(int) * VFB_FRAME_MAX_FDS)];
} control_buffer;

/* Collects the fds of every SCM_RIGHTS header into the reader, closing those beyond `allowed`
 * (counting what it holds already). Walks by hand and trusts no cmsg_len: a header shorter than a
 * cmsghdr or past msg_controllen stops the walk (returns -1, as for truncation). Returns how many
 * fds were closed as unexpected, or -1. */
static int harvest(vfb_frame_reader *r, const struct msghdr *msg, size_t allowed) {
  const unsigned char *base = msg->msg_control;
  size_t total = msg->msg_controllen, off = 0;
  int closed = 0;
  if (base == NULL || total == 0) return 0;
  while (total - off >= sizeof(struct cmsghdr)) {
    struct cmsghdr h;
    memcpy(&h, base + off, sizeof h);
    if (h.cmsg_len < CMSG_LEN(0) || h.cmsg_len > total - off) return -1;
    if (h.cmsg_level == SOL_SOCKET && h.cmsg_type == SCM_RIGHTS) {
      size_t n = (h.cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < n; i++) {
        int fd;
        memcpy(&fd, base + off + CMSG_LEN(0) + i * sizeof(int), sizeof fd);
        if (r->nfds < allowed && r->nfds < VFB_FRAME_MAX_FDS) {
          r->fds[r->nfds++] = fd;
        } else {
          close(fd);
          closed++;
        }
      }
    }
    size_t step = CMSG_ALIGN(h.cmsg_len);
    if (step >= total - off) break;
    off += step;
  }
  return closed;
}

static int read_once(vfb_frame_reader *r, int sock) {
  struct iovec iov;
  if (r->got < VFB_FRAME_HEADER_BYTES) {
    iov.iov_base = r->head + r->got;
    iov.iov_len = VFB_FRAME_HEADER_BYTES - r->got;
  } else {
    size_t done = r->got - VFB_FRAME_HEADER_BYTES;
    iov.iov_base = r->buf + done;
    iov.iov_len = r->len - done;
  }
  /* fds belong to the read that starts a frame; later reads may bring none. */
  size_t allowed = r->got == 0 ? r->max_fds : 0;
  control_buffer control;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return VFB_FRAME_AGAIN;
    return fail(r, VFB_E_IO);
  }
  int closed = harvest(r, &msg, allowed);
  if (closed < 0 || (msg.msg_flags & MSG_CTRUNC)) return fail(r, VFB_E_FDS_LOST);
  if (closed > 0) return fail(r, VFB_E_UNEXPECTED_FDS);
  if (n == 0) return r->got == 0 ? VFB_FRAME_EOF : fail(r, VFB_E_FRAME_TRUNCATED);
  r->got += (size_t)n;
  if (r->got == VFB_FRAME_HEADER_BYTES) {
    uint32_t len = vfb_frame_get_len(r->head);
    if (len > r->max_bytes) return fail(r, VFB_E_FRAME_TOO_LARGE);
    r->len = len;
  }
  if (r->got >= VFB_FRAME_HEADER_BYTES && r->got - VFB_FRAME_HEADER_BYTES == r->len)
    return VFB_FRAME_DONE;
  return 0; /* progress: read on */
}

int vfb_frame_read(vfb_frame_reader *r, int sock) {
  int rc;
  while ((rc = read_once(r, sock)) == 0) {
  }
  return rc;
}

int vfb_frame_writer_init(vfb_frame_writer *w, const uint8_t *payload, size_t len, size_t max_bytes) {
  if (w == NULL || (payload == NULL && len > 0)) return VFB_E_INVALID_ARGUMENT;
  if (len > max_bytes || len > VFB_FRAME_MAX_BYTES) return VFB_E_FRAME_TOO_LARGE;
  memset(w, 0, sizeof *w);
  vfb_frame_put_len(w->head, (uint32_t)len);
  w->payload = payload;
  w->len = (uint32_t)len;
  return VFB_OK;
}

static int write_once(vfb_frame_writer *w, int sock) {
  size_t total = VFB_FRAME_HEADER_BYTES + (size_t)w->len;
  if (w->sent >= total) return VFB_FRAME_DONE;
  struct iovec iov[2];
  int k = 0;
  if (w->sent < VFB_FRAME_HEADER_BYTES) {
    iov[k].iov_base = w->head + w->sent;
    iov[k].iov_len = VFB_FRAME_HEADER_BYTES - w->sent;
    k++;
  }
  size_t done = w->sent > VFB_FRAME_HEADER_BYTES ? w->sent - VFB_FRAME_HEADER_BYTES : 0;
  if (w->len > done) {
    iov[k].iov_base = (void *)(w->payload + done);
    iov[k].iov_len = w->len - done;
    k++;
  }
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = (size_t)k;
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return VFB_FRAME_AGAIN;
    if (errno == EPIPE || errno == ECONNRESET) return VFB_E_CLOSED;
    return VFB_E_IO;
  }
  w->sent += (size_t)n;
  return w->sent >= total ? VFB_FRAME_DONE : 0;
}

int vfb_frame_write(vfb_frame_writer *w, int sock) {
  int rc;
  while ((rc = write_once(w, sock)) == 0) {
  }
  return rc;
}

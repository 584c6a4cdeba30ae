// fdmsg.h: the Node-free core of fd passing: building one SCM_RIGHTS control message (send) and
// one non-blocking recvmsg that harvests the fds it brought (receive). It includes no Node header,
// so the addon (fdpass.c, notify.c) and the libFuzzer harness (native/fuzz/) compile the very same
// code. Nothing here throws or allocates; every outcome is a status the caller turns into an error.
#ifndef VFIO_NATIVE_FDMSG_H
#define VFIO_NATIVE_FDMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define MAX_FDS_PER_MESSAGE 253 /* SCM_MAX_FD in the kernel */

// Control buffer big enough for one SCM_RIGHTS message of MAX_FDS_PER_MESSAGE fds, aligned for cmsghdr.
typedef union {
  struct cmsghdr align;
  char buf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MESSAGE)];
} rights_buffer;

// Attaches fds[0..nfds) to msg as one SCM_RIGHTS control message in control (no-op when nfds is 0).
void attach_rights(struct msghdr* msg, rights_buffer* control, const int* fds, uint32_t nfds);

// Calls sink(ctx, fd) for every fd of every SOL_SOCKET/SCM_RIGHTS message in msg's control data.
// It trusts no cmsg_len: a header that is shorter than a cmsghdr or runs past msg_controllen makes
// it stop and return false (the caller treats that like truncation and closes what it got).
bool fdmsg_each_right(const struct msghdr* msg, void (*sink)(void* ctx, int fd), void* ctx);

typedef enum {
  FDRECV_OK,          // n bytes read (0 = orderly EOF); fds[0..nfds) are the caller's, close-on-exec
  FDRECV_AGAIN,       // nothing to read (EAGAIN / EWOULDBLOCK)
  FDRECV_ERRNO,       // recvmsg failed with err
  FDRECV_TOO_MANY,    // more fds than maxfds: the nfds that arrived were closed, the kernel dropped the rest
  FDRECV_TRUNCATED,   // control data truncated for another reason (e.g. EMFILE): the nfds that arrived were closed
} fdrecv_status;

typedef struct {
  fdrecv_status status;
  ssize_t n;   // FDRECV_OK: bytes read
  int err;     // FDRECV_ERRNO: errno
  size_t nfds; // FDRECV_OK: fds delivered into fds[]; FDRECV_TOO_MANY / FDRECV_TRUNCATED: fds closed
} fdrecv_result;

// One recvmsg(MSG_CMSG_CLOEXEC | MSG_DONTWAIT) of at most len bytes into buf, with room for maxfds
// (<= MAX_FDS_PER_MESSAGE) fds; fds must hold maxfds entries. It never blocks and never leaks: on
// any truncation every fd that arrived is closed before it returns, and the bytes read are dropped.
fdrecv_result fdrecv(int fd, void* buf, size_t len, size_t maxfds, int* fds);

#endif

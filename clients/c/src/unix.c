/* unix.c: a connection to a Unix stream socket, and the wait on it against a deadline (see unix.h). */
#include "unix.h"

#include "vfio-broker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int fail(int fd, const char *call, const char **failed) {
  int e = errno;
  if (fd >= 0) close(fd);
  *failed = call;
  errno = e;
  return -1;
}

int vfb_unix_connect(const char *path, int timeout_ms, const char **failed) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  size_t n = strlen(path);
  if (n >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    return fail(-1, "connect", failed);
  }
  memcpy(addr.sun_path, path, n);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(-1, "socket(AF_UNIX)", failed);
  /* A blocking connect waits while brokerd's backlog is full: SO_SNDTIMEO bounds it. */
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int r;
  do r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
  while (r < 0 && errno == EINTR);
  if (r < 0) return fail(fd, "connect", failed);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return fail(fd, "fcntl(O_NONBLOCK)", failed);
  return fd;
}

long long vfb_now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int vfb_unix_wait(int sock, short events, long long deadline) {
  for (;;) {
    long long left = deadline - vfb_now_ms();
    if (left <= 0) return VFB_E_TIMEOUT;
    struct pollfd p = {.fd = sock, .events = events, .revents = 0};
    int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return VFB_E_IO;
    if (r > 0) return VFB_OK;
  }
}

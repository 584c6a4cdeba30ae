/* fds.c: what keeps a brokered grant alive after its open: every fd that refers to it (close, dup,
 * dup2, dup3, fcntl F_DUPFD / F_DUPFD_CLOEXEC, close_range, closefrom) and every mapping made
 * from it (mmap / mmap64 with the grant's mmap offset added and the BAR's bound checked, munmap,
 * and an mmap MAP_FIXED over a tracked range). The grant is released when the last of them goes.
 * It owns the wrappers of those calls and never changes what they do to an fd or a range the shim
 * does not track; while the process holds no grant they call straight through, without the lock.
 * A brokered fd is always close-on-exec (the session's connection closes at exec, so brokerd
 * releases the grant then): its dups are made close-on-exec too, and clearing FD_CLOEXEC on one
 * fails with EPERM. mremap is not wrapped: a tracked range moved by mremap stays tracked at its old
 * address (its grant then lives until that range is munmapped, or the process exits). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"

#define EXPORT __attribute__((visibility("default")))

#define LIVE() (atomic_load(&shim_live) != 0)

static size_t page_round(size_t len) {
  static size_t page;
  if (page == 0) page = (size_t)sysconf(_SC_PAGESIZE);
  return (len + page - 1) & ~(page - 1);
}

static void unref(shim_grant *g) {
  if (g != NULL && shim_unref(g)) shim_release(g);
}

/* The grant fd refers to, or NULL; an entry whose fd is now another file (closed behind the
 * shim's back, the number reused) is forgotten. Lock held. */
static shim_grant *tracked(int fd) {
  shim_grant *g = shim_fd_grant(fd);
  if (g == NULL) return NULL;
  struct stat st;
  if (fstat(fd, &st) == 0 && st.st_dev == g->st_dev && st.st_ino == g->st_ino) return g;
  unref(shim_fd_drop(fd));
  return NULL;
}

/* Records newfd as one more fd of g, close-on-exec; on failure closes it: newfd or -1. */
static int adopt(int newfd, shim_grant *g) {
  if (newfd < 0 || g == NULL) return newfd;
  unref(shim_fd_drop(newfd)); /* a stale entry of that number */
  if (shim_real_fcntl(newfd, F_SETFD, FD_CLOEXEC) < 0 || shim_fd_add(newfd, g) < 0) {
    shim_real_close(newfd);
    errno = ENOMEM;
    return -1;
  }
  return newfd;
}

EXPORT int close(int fd) {
  shim_resolve();
  if (!LIVE()) return shim_real_close(fd);
  shim_lock();
  shim_grant *g = shim_fd_drop(fd);
  int r = shim_real_close(fd);
  int e = errno;
  unref(g);
  shim_unlock();
  errno = e;
  return r;
}

EXPORT int dup(int fd) {
  shim_resolve();
  if (!LIVE()) return shim_real_dup(fd);
  shim_lock();
  shim_grant *g = tracked(fd);
  int r = g != NULL ? shim_real_fcntl(fd, F_DUPFD_CLOEXEC, 0) : shim_real_dup(fd);
  int e = errno;
  r = adopt(r, g);
  if (r >= 0 || g == NULL) errno = e;
  shim_unlock();
  return r;
}

static int dup_to(int oldfd, int newfd, int flags, int three) {
  shim_resolve();
  if (!LIVE()) return three ? shim_real_dup3(oldfd, newfd, flags) : shim_real_dup2(oldfd, newfd);
  shim_lock();
  shim_grant *g = tracked(oldfd);
  int r = three ? shim_real_dup3(oldfd, newfd, g != NULL ? flags | O_CLOEXEC : flags) : shim_real_dup2(oldfd, newfd);
  int e = errno;
  if (r >= 0 && oldfd != newfd) {
    unref(shim_fd_drop(newfd)); /* dup2 closed what newfd was */
    r = adopt(r, g);
    if (r < 0) e = errno;
  }
  shim_unlock();
  errno = e;
  return r;
}

EXPORT int dup2(int oldfd, int newfd) {
  return dup_to(oldfd, newfd, 0, 0);
}
EXPORT int dup3(int oldfd, int newfd, int flags) {
  return dup_to(oldfd, newfd, flags, 1);
}

static int do_fcntl(int fd, int cmd, void *arg) {
  shim_resolve();
  if (!LIVE() || (cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC && cmd != F_SETFD))
    return shim_real_fcntl(fd, cmd, arg);
  shim_lock();
  shim_grant *g = tracked(fd);
  int r;
  if (g != NULL && cmd == F_SETFD && ((long)arg & FD_CLOEXEC) == 0) {
    shim_say_once("fcntl(%d, F_SETFD) without FD_CLOEXEC on a brokered BAR fd: refused (EPERM); brokerd releases the "
                  "grant when this process execs, so the fd must not outlive it; this message is printed once per process",
                  fd);
    errno = EPERM;
    r = -1;
  } else if (g != NULL && cmd != F_SETFD) {
    r = adopt(shim_real_fcntl(fd, F_DUPFD_CLOEXEC, arg), g);
  } else {
    r = shim_real_fcntl(fd, cmd, arg);
  }
  int e = errno;
  shim_unlock();
  errno = e;
  return r;
}

EXPORT int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return do_fcntl(fd, cmd, arg);
}
EXPORT int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return do_fcntl(fd, cmd, arg);
}

static void drop_from(unsigned first, unsigned last) {
  int limit = shim_fd_limit();
  for (unsigned fd = first; fd <= last && fd < (unsigned)limit; fd++) unref(shim_fd_drop((int)fd));
}

EXPORT int close_range(unsigned first, unsigned last, int flags) {
  shim_resolve();
  if (!LIVE()) return shim_real_close_range(first, last, flags);
  shim_lock();
  int r = shim_real_close_range(first, last, flags);
  int e = errno;
  if (r == 0 && (flags & CLOSE_RANGE_CLOEXEC) == 0) drop_from(first, last);
  shim_unlock();
  errno = e;
  return r;
}

EXPORT void closefrom(int lowfd) {
  shim_resolve();
  if (!LIVE()) {
    shim_real_closefrom(lowfd);
    return;
  }
  shim_lock();
  shim_real_closefrom(lowfd);
  if (lowfd >= 0) drop_from((unsigned)lowfd, ~0u);
  shim_unlock();
}

static void *do_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  shim_resolve();
  if (!LIVE()) return shim_real_mmap(addr, len, prot, flags, fd, off);
  shim_lock();
  shim_grant *g = (flags & MAP_ANONYMOUS) || fd < 0 ? NULL : tracked(fd);
  void *p;
  int e;
  if (g != NULL && (off < 0 || len == 0 || (uint64_t)off > g->size || page_round(len) > g->size - (uint64_t)off)) {
    p = MAP_FAILED; /* past the BAR: what the kernel says of the real sysfs file */
    e = EINVAL;
  } else {
    p = shim_real_mmap(addr, len, prot, flags, fd, g != NULL ? off + (off_t)g->mmap_offset : off);
    e = errno;
  }
  if (p != MAP_FAILED) {
    if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) shim_map_drop((uintptr_t)p, page_round(len), shim_release);
    if (g != NULL && shim_map_add((uintptr_t)p, page_round(len), g) < 0) {
      shim_real_munmap(p, len);
      p = MAP_FAILED;
      e = ENOMEM;
    }
  }
  shim_unlock();
  errno = e;
  return p;
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  return do_mmap(addr, len, prot, flags, fd, off);
}
EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  return do_mmap(addr, len, prot, flags, fd, off);
}

EXPORT int munmap(void *addr, size_t len) {
  shim_resolve();
  if (!LIVE()) return shim_real_munmap(addr, len);
  shim_lock();
  int r = shim_real_munmap(addr, len);
  int e = errno;
  if (r == 0) shim_map_drop((uintptr_t)addr, page_round(len), shim_release);
  shim_unlock();
  errno = e;
  return r;
}

/* open.c: the open family (open, open64, openat, openat64, the fortify entry points __open_2,
 * __open64_2, __openat_2, __openat64_2) and fopen/fopen64 (glibc's fopen opens inside libc, not
 * through open's PLT entry), fclose (it closes inside libc too), and access/faccessat (DPDK asks
 * access(resourceN_wc, R_OK | W_OK) before it opens the file, and falls back to UC when refused). Each calls the real function
 * first: a process that can open the file gets the real file, and any other path is passed through
 * untouched, at the cost of one string test of its last component. Only when the real open failed
 * with EACCES, EPERM or ENOENT and the path is a BAR file (path.c) is brokerd asked (broker.c). It
 * never touches an fd it did not get from brokerd. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

#define EXPORT __attribute__((visibility("default")))

/* Flags brokerd can never serve as the real file would (a directory, a path handle, a new file). */
#define NOT_SERVED (O_PATH | O_DIRECTORY | O_EXCL | O_TMPFILE)

static int candidate(int e, const char *path, int flags) {
  return (e == EACCES || e == EPERM || e == ENOENT) && path != NULL && (flags & NOT_SERVED) == 0 &&
         shim_maybe_bar(path);
}

/* The real open failed with real_errno on a path that may be a BAR file: brokerd's fd, or -1. */
static int brokered(int dirfd, const char *path, int flags, int real_errno) {
  char abs[PATH_MAX];
  const char *full = path;
  if (path[0] != '/') {
    char dir[PATH_MAX];
    if (dirfd == AT_FDCWD) {
      if (getcwd(dir, sizeof dir) == NULL) goto as_real;
    } else {
      char link[64];
      snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
      ssize_t n = readlink(link, dir, sizeof dir - 1);
      if (n <= 0) goto as_real;
      dir[n] = '\0';
    }
    if (shim_join(abs, sizeof abs, dir, path) < 0) goto as_real;
    full = abs;
  }
  shim_bar_path p;
  if (!shim_parse_bar_path(full, &p)) goto as_real;
  return shim_broker_open(full, &p, flags, real_errno);
as_real:
  errno = real_errno;
  return -1;
}

static mode_t mode_arg(int flags, va_list ap) {
  return __OPEN_NEEDS_MODE(flags) ? (mode_t)va_arg(ap, int) : 0;
}

static int do_openat(int dirfd, const char *path, int flags, mode_t mode) {
  shim_resolve();
  int fd = shim_real_openat(dirfd, path, flags, mode);
  if (fd >= 0 || !candidate(errno, path, flags)) return fd;
  return brokered(dirfd, path, flags, errno);
}

EXPORT int open(const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_openat(AT_FDCWD, path, flags, mode);
}
EXPORT int open64(const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_openat(AT_FDCWD, path, flags | O_LARGEFILE, mode);
}
EXPORT int openat(int dirfd, const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_openat(dirfd, path, flags, mode);
}
EXPORT int openat64(int dirfd, const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return do_openat(dirfd, path, flags | O_LARGEFILE, mode);
}

/* _FORTIFY_SOURCE's entry points: the same, without a mode (glibc aborts when one is needed). */
EXPORT int __open_2(const char *path, int flags);
EXPORT int __open64_2(const char *path, int flags);
EXPORT int __openat_2(int dirfd, const char *path, int flags);
EXPORT int __openat64_2(int dirfd, const char *path, int flags);
EXPORT int __open_2(const char *path, int flags) {
  return do_openat(AT_FDCWD, path, flags, 0);
}
EXPORT int __open64_2(const char *path, int flags) {
  return do_openat(AT_FDCWD, path, flags | O_LARGEFILE, 0);
}
EXPORT int __openat_2(int dirfd, const char *path, int flags) {
  return do_openat(dirfd, path, flags, 0);
}
EXPORT int __openat64_2(int dirfd, const char *path, int flags) {
  return do_openat(dirfd, path, flags | O_LARGEFILE, 0);
}

/* fopen's mode as open flags: "r" read-only, anything with '+', 'w' or 'a' read-write. */
static int flags_of(const char *mode) {
  return mode[0] == 'r' && strchr(mode, '+') == NULL ? O_RDONLY : O_RDWR;
}

static FILE *do_fopen(FILE *(*real)(const char *, const char *), const char *path, const char *mode) {
  FILE *f = real(path, mode);
  if (f != NULL || mode == NULL || !candidate(errno, path, flags_of(mode))) return f;
  int fd = brokered(AT_FDCWD, path, flags_of(mode), errno);
  if (fd < 0) return NULL;
  f = fdopen(fd, mode);
  if (f == NULL) {
    int e = errno;
    close(fd); /* the shim's close: the grant is released */
    errno = e;
  }
  return f;
}

EXPORT FILE *fopen(const char *path, const char *mode) {
  shim_resolve();
  return do_fopen(shim_real_fopen, path, mode);
}
EXPORT FILE *fopen64(const char *path, const char *mode) {
  shim_resolve();
  return do_fopen(shim_real_fopen64, path, mode);
}

EXPORT int fclose(FILE *f) {
  shim_resolve();
  if (atomic_load(&shim_live) == 0 || f == NULL) return shim_real_fclose(f);
  shim_lock();
  int fd = fileno(f);
  shim_grant *g = shim_fd_drop(fd);
  int r = shim_real_fclose(f);
  int e = errno;
  if (g != NULL && shim_unref(g)) shim_release(g);
  shim_unlock();
  errno = e;
  return r;
}

/* access/faccessat of a BAR file the real call refuses: brokerd is asked for the grant the open
 * would get (read-write for W_OK), which is released at once. X_OK is never brokered (a BAR file is
 * not executable). As with any access(2), the answer may be stale by the time the file is opened. */
static int do_access(int dirfd, const char *path, int mode, int flags) {
  shim_resolve();
  int r = shim_real_faccessat(dirfd, path, mode, flags);
  if (r == 0 || (mode & X_OK) != 0 || !candidate(errno, path, 0)) return r;
  int fd = brokered(dirfd, path, (mode & W_OK) != 0 ? O_RDWR : O_RDONLY, errno);
  if (fd < 0) return -1;
  close(fd); /* the shim's close: the grant is released */
  return 0;
}

EXPORT int access(const char *path, int mode) {
  return do_access(AT_FDCWD, path, mode, 0);
}
EXPORT int faccessat(int dirfd, const char *path, int mode, int flags) {
  return do_access(dirfd, path, mode, flags);
}

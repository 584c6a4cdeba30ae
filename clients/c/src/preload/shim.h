/* shim.h (private): the parts of libvfio-broker-preload.so, the LD_PRELOAD shim that serves opens of
 * sysfs BAR files (/sys/bus/pci/devices/BDF/resourceN[_wc]) with brokered fds (clients/c/README.md,
 * "The preload shim"). It owns the declarations the shim's files share and nothing else; it never
 * declares anything public: the shim's only exported symbols are the libc functions it wraps.
 *
 * Files: path.c which paths are BAR files (pure); table.c the grants, the fds and the mappings
 * that keep each grant alive (pure bookkeeping, no I/O); broker.c the process's session, grants and
 * releases, refusals as errno and the once-per-process message, fork; open.c open/openat/open64/
 * the fortify variants/fopen/access; fds.c close, dup, fcntl, close_range, mmap, munmap; real.c the next
 * definition of each wrapped function (dlsym RTLD_NEXT). */
#ifndef VFB_SHIM_H
#define VFB_SHIM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "vfio-broker.h"

/* ---- path.c ---- */
#define SHIM_BDF_LEN 12 /* "dddd:bb:dd.f" */
typedef struct shim_bar_path {
  char bdf[SHIM_BDF_LEN + 1];
  unsigned bar; /* 0-5 */
  int wc;       /* the _wc file */
} shim_bar_path;
/* 1 if `path`'s last component could be a BAR file (resource0 .. resource5, optionally _wc): the
 * cheap test every open makes before anything else. */
int shim_maybe_bar(const char *path);
/* 1 and *out if the absolute path `path` names a BAR file, lexically (see path.c), else 0. */
int shim_parse_bar_path(const char *path, shim_bar_path *out);
/* Joins dir and rel into out (cap bytes): 0, or -1 if it does not fit. */
int shim_join(char *out, size_t cap, const char *dir, const char *rel);

/* ---- table.c: all of it is called with the shim's lock held ---- */
typedef struct shim_dev shim_dev; /* broker.c's: a device file of the session */
typedef struct shim_grant {
  struct shim_grant *next;
  shim_dev *dev;        /* NULL once inherited across fork: never released by this process */
  uint64_t cookie;
  uint64_t mmap_offset; /* added to the offset of every mmap of the grant's fds */
  uint64_t size;        /* the BAR's bytes: an mmap past it fails EINVAL, as on the real file */
  unsigned refs;        /* fds and mappings of the grant in this process */
  dev_t st_dev;         /* the fd's file, to tell a tracked fd from a number reused behind the */
  ino_t st_ino;         /* shim's back (a close it did not see: a raw syscall, a libc-internal close) */
} shim_grant;
/* Any grant held: wrappers skip the lock while this is 0. */
extern atomic_int shim_live;
/* The grant fd refers to, or NULL. */
shim_grant *shim_fd_grant(int fd);
/* Records fd as one of g's (one more reference): 0, or -1 (out of memory: nothing recorded). */
int shim_fd_add(int fd, shim_grant *g);
/* One past the highest fd the table has room for (close_range's bound). */
int shim_fd_limit(void);
/* Forgets fd: the grant it held (its reference dropped), or NULL if fd was not tracked. */
shim_grant *shim_fd_drop(int fd);
/* Records [addr, addr + len) as a mapping of g (one more reference): 0 or -1 (out of memory). */
int shim_map_add(uintptr_t addr, size_t len, shim_grant *g);
/* [addr, addr + len) is no longer mapped: trims, splits or forgets the tracked mappings in it and
 * drops their references; each grant whose count reached 0 is passed to done(). */
void shim_map_drop(uintptr_t addr, size_t len, void (*done)(shim_grant *));
/* A new grant (refs 0) linked into the table, or NULL (out of memory). */
shim_grant *shim_grant_new(shim_dev *dev, uint64_t cookie, uint64_t mmap_offset, uint64_t size);
/* Unlinks and frees g (refs must be 0). */
void shim_grant_free(shim_grant *g);
/* Drops one reference of g: 1 if that was the last (the caller releases and frees it). */
int shim_unref(shim_grant *g);
/* After fork, in the child: every grant becomes the parent's (dev NULL). */
void shim_table_orphan(void);

/* ---- broker.c ---- */
/* Takes and gives back the shim's lock (recursive: the library's own close calls come back in). */
void shim_lock(void);
void shim_unlock(void);
/* Opens `p` through brokerd, as open(2) with `flags` would have; real_errno is the real open's
 * errno. The new fd (close-on-exec, tracked), or -1 with errno set (and the message printed once). */
int shim_broker_open(const char *path, const shim_bar_path *p, int flags, int real_errno);
/* The grant's last reference went: release it in brokerd (if this process's) and free it. */
void shim_release(shim_grant *g);
/* Prints "libvfio-broker-preload: MESSAGE" to stderr once per process (later calls do nothing). */
void shim_say_once(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- real.c: the next definition of each wrapped function ---- */
extern int (*shim_real_open)(const char *, int, ...);
extern int (*shim_real_openat)(int, const char *, int, ...);
extern int (*shim_real_faccessat)(int, const char *, int, int);
extern FILE *(*shim_real_fopen)(const char *, const char *);
extern FILE *(*shim_real_fopen64)(const char *, const char *);
extern int (*shim_real_close)(int);
extern int (*shim_real_dup)(int);
extern int (*shim_real_dup2)(int, int);
extern int (*shim_real_dup3)(int, int, int);
extern int (*shim_real_fcntl)(int, int, ...);
extern int (*shim_real_close_range)(unsigned, unsigned, int);
extern void (*shim_real_closefrom)(int);
extern int (*shim_real_fclose)(FILE *);
extern void *(*shim_real_mmap)(void *, size_t, int, int, int, off_t);
extern int (*shim_real_munmap)(void *, size_t);
/* Resolves them all (once; every wrapper calls it first). */
void shim_resolve(void);

#endif

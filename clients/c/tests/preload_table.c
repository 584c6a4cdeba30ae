/* preload_table.c: unit tests of the shim's grant lifetime and mmap arithmetic (src/preload/fds.c,
 * table.c, real.c linked into this program, so its own close/dup/mmap/munmap calls are the shim's),
 * with broker.c replaced by a stub that counts releases. A grant is made by hand on a memfd of 4
 * pages whose page i holds byte 'A' + i, with a non-zero mmap offset (2 pages: what the vfio
 * backend's region offset is to brokerd's device fd) and a BAR of 2 pages: mmap at BAR offset 0
 * must map page 2, offset one page page 3, past the BAR EINVAL; the grant is released exactly once,
 * when its last fd and its last mapping are gone (partial munmaps, a hole punched in a mapping,
 * MAP_FIXED over it, dups, a number closed behind the shim's back and reused). Its own small main; the sim backend's offset is 0, so only this test covers the addition. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"

static int failed, passed, releases;
#define CHECK(c)                                                        \
  do {                                                                  \
    if (c) passed++;                                                    \
    else {                                                              \
      failed++;                                                         \
      fprintf(stderr, "    %s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
    }                                                                   \
  } while (0)

/* broker.c's part, stubbed: no brokerd here. */
void shim_lock(void) {}
void shim_unlock(void) {}
void shim_say_once(const char *fmt, ...) {
  (void)fmt;
}
void shim_release(shim_grant *g) {
  releases++;
  shim_grant_free(g);
}

static long P;

static int grant_fd(void) {
  int fd = memfd_create("bar", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, 5 * P) != 0) return -1;
  for (int i = 0; i < 5; i++) {
    char c = (char)('A' + i);
    if (pwrite(fd, &c, 1, i * P) != 1) return -1;
  }
  struct stat st;
  fstat(fd, &st);
  shim_grant *g = shim_grant_new(NULL, 7, (uint64_t)(2 * P), (uint64_t)(3 * P));
  g->st_dev = st.st_dev;
  g->st_ino = st.st_ino;
  shim_fd_add(fd, g);
  return fd;
}

static char *map(int fd, long pages, long at) {
  void *p = mmap(NULL, (size_t)(pages * P), PROT_READ | PROT_WRITE, MAP_SHARED, fd, at * P);
  return p == MAP_FAILED ? NULL : p;
}

static void t_offsets_and_bound(void) {
  int fd = grant_fd();
  char *a = map(fd, 1, 0), *b = map(fd, 1, 1), *both = map(fd, 2, 0);
  CHECK(a != NULL && a[0] == 'C');
  CHECK(b != NULL && b[0] == 'D');
  CHECK(both != NULL && both[0] == 'C' && both[P] == 'D');
  errno = 0;
  CHECK(map(fd, 1, 3) == NULL && errno == EINVAL);
  errno = 0;
  CHECK(map(fd, 4, 0) == NULL && errno == EINVAL);
  char *last = map(fd, 1, 2);
  CHECK(last != NULL && last[0] == 'E');
  munmap(last, (size_t)P);
  close(fd);
  CHECK(releases == 0);
  munmap(a, (size_t)P);
  munmap(b, (size_t)P);
  CHECK(releases == 0);
  munmap(both, (size_t)P); /* half of it */
  CHECK(releases == 0);
  munmap(both + P, (size_t)P);
  CHECK(releases == 1);
}

static void t_fixed_dups(void) {
  releases = 0;
  int fd = grant_fd();
  char *m = map(fd, 2, 0);
  CHECK(m != NULL);
  int d = dup(fd), d2 = fcntl(fd, F_DUPFD_CLOEXEC, 40), d3 = dup2(fd, 60);
  CHECK(d >= 0 && d2 >= 40 && d3 == 60 && shim_fd_grant(d3) != NULL);
  close(fd);
  close(d);
  close(d2);
  CHECK(releases == 0);
  /* an anonymous MAP_FIXED over the first page ends that part of the mapping */
  CHECK(mmap(m, (size_t)P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == m);
  close(d3);
  CHECK(releases == 0); /* the second page is still mapped */
  CHECK(m[P] == 'D');
  munmap(m, (size_t)(2 * P));
  CHECK(releases == 1);
}

/* a hole punched in the middle: two pieces, released when both are gone */
static void t_hole(void) {
  releases = 0;
  int fd = grant_fd();
  char *m = map(fd, 3, 0);
  CHECK(m != NULL);
  close(fd);
  munmap(m + P, (size_t)P);
  CHECK(releases == 0);
  CHECK(m[0] == 'C' && m[2 * P] == 'E');
  munmap(m, (size_t)P);
  CHECK(releases == 0);
  munmap(m + 2 * P, (size_t)P);
  CHECK(releases == 1);
}

static void t_stale_number(void) {
  releases = 0;
  int fd = grant_fd();
  /* closed behind the shim's back (a raw syscall), the number reused by another file */
  CHECK(shim_real_close(fd) == 0);
  int other = memfd_create("other", MFD_CLOEXEC);
  CHECK(other == fd);
  CHECK(ftruncate(other, P) == 0);
  char *o = map(other, 1, 0); /* not the grant's: no offset added, no bound */
  CHECK(o != NULL);
  CHECK(releases == 1); /* the stale entry was forgotten, and with it the grant */
  munmap(o, (size_t)P);
  close(other);
}

int main(void) {
  P = sysconf(_SC_PAGESIZE);
  t_offsets_and_bound();
  t_fixed_dups();
  t_hole();
  t_stale_number();
  CHECK(atomic_load(&shim_live) == 0);
  printf("preload table: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

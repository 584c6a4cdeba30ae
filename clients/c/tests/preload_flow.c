/* preload_flow.c: the preload probe's scenarios against a real brokerd (tests/preload_probe.c has
 * main and the usage): "flow" opens a sim device's BAR files as an unprivileged program would, and
 * stops at each "await" for test/clib/preload.test.ts to look at brokerd (the bytes through
 * another session, the mappings brokerd holds); "self" opens BAR files that exist. It never links
 * libvfio-broker: only libc calls, which the preloaded shim serves. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "preload_probe.h"

#define RW (PROT_READ | PROT_WRITE)

static char *map(int fd, long pages, long at) {
  void *p = mmap(NULL, (size_t)(pages * PAGE), RW, MAP_SHARED, fd, at * PAGE);
  return p == MAP_FAILED ? NULL : p;
}

static int cloexec(int fd) {
  int f = fcntl(fd, F_GETFD);
  return f >= 0 && (f & FD_CLOEXEC) != 0;
}

/* The refused open comes first: the shim prints one message per process. */
static void refused(const char *denied) {
  paths(denied);
  errno = 0;
  int fd = open(BAR2WC, O_RDWR);
  int e1 = errno;
  errno = 0;
  int fd2 = open(BAR0, O_RDONLY);
  int e2 = errno;
  EXPECT(fd < 0 && e1 == EACCES, "fd %d errno %s", fd, strerror(e1));
  EXPECT(fd2 < 0 && e2 == EACCES, "fd %d errno %s", fd2, strerror(e2));
  errno = 0;
  EXPECT(access(BAR2WC, R_OK | W_OK) == -1 && errno == EACCES, "access: %s", strerror(errno));
  printf("refused errno=%s\n", strerrorname_np(e1));
}

/* open, mmap at offsets, close with the mapping alive, partial munmaps, the last munmap. */
static void open_map_close(void) {
  /* DPDK's question before it opens resourceN_wc; it holds nothing afterwards ("mapped" counts) */
  EXPECT(access(BAR2WC, R_OK | W_OK) == 0 && access(BAR0, F_OK) == 0, "access: %s", strerror(errno));
  errno = 0;
  EXPECT(access(BAR2WC, X_OK) == -1 && errno == ENOENT, "access X_OK: %s", strerror(errno));
  int fd = open(BAR2WC, O_RDWR);
  EXPECT(fd >= 0, "open %s: %s", BAR2WC, strerror(errno));
  if (fd < 0) return;
  struct stat st;
  EXPECT(fstat(fd, &st) == 0, "fstat");
  char *p = map(fd, 2, 3), *q = map(fd, 1, 0);
  EXPECT(p != NULL && q != NULL, "mmap: %s", strerror(errno));
  if (p == NULL || q == NULL) return;
  memcpy(p + 0x100, "\xca\xfe\xf0\x0d\x0b\xad\xc0\xde", 8);
  q[0] = 0x5a;
  printf("mapped cloexec=%d size=%lld\n", cloexec(fd), (long long)st.st_size);
  await("mapped");
  close(fd);
  p[0x108] = 0x11;
  await("closed");
  munmap(q, (size_t)PAGE);
  munmap(p, (size_t)PAGE);
  p[PAGE] = 0x22; /* the second page is still mapped */
  await("partial");
  munmap(p + PAGE, (size_t)PAGE);
  await("released");
}

/* Every dup of a brokered fd keeps the grant; all are close-on-exec. */
static void dups(void) {
  int fd = open(BAR2WC, O_RDWR);
  int d1 = dup(fd), d2 = fcntl(fd, F_DUPFD, 100), d3 = dup2(fd, 200), d4 = dup3(fd, 201, 0);
  EXPECT(fd >= 0 && d1 >= 0 && d2 >= 100 && d3 == 200 && d4 == 201, "%d %d %d %d %d", fd, d1, d2, d3, d4);
  EXPECT(cloexec(d1) && cloexec(d2) && cloexec(d3) && cloexec(d4), "a dup is not close-on-exec");
  errno = 0;
  EXPECT(fcntl(d1, F_SETFD, 0) == -1 && errno == EPERM, "clearing FD_CLOEXEC: %s", strerror(errno));
  close(fd);
  close(d1);
  close(d2);
  close(d3);
  char *r = map(d4, 1, 7);
  EXPECT(r != NULL, "mmap of the last dup: %s", strerror(errno));
  close(d4);
  if (r != NULL) r[0] = 0x42;
  await("dup-mapped");
  if (r != NULL) munmap(r, (size_t)PAGE);
}

/* A second thread opens BAR0 read-only while this one opens BAR2 twice. */
static void *thread_open(void *arg) {
  (void)arg;
  int ok = 1;
  for (int i = 0; i < 16; i++) {
    int fd = open(BAR0, O_RDONLY);
    void *w = mmap(NULL, (size_t)PAGE, RW, MAP_SHARED, fd, 0);
    int we = errno;
    void *r = mmap(NULL, (size_t)PAGE, PROT_READ, MAP_SHARED, fd, PAGE);
    ok &= fd >= 0 && w == MAP_FAILED && we == EACCES && r != MAP_FAILED;
    if (r != MAP_FAILED) munmap(r, (size_t)PAGE);
    close(fd);
  }
  return (void *)(intptr_t)ok;
}

static void threads_and_two_opens(void) {
  pthread_t t;
  EXPECT(pthread_create(&t, NULL, thread_open, NULL) == 0, "pthread_create");
  int a = -1, b = -1;
  for (int i = 0; i < 16; i++) {
    if (a >= 0) close(a);
    if (b >= 0) close(b);
    a = open(BAR2WC, O_RDWR);
    b = open(BAR2WC, O_RDWR);
  }
  void *ok = NULL;
  pthread_join(t, &ok);
  EXPECT(ok == (void *)1, "the second thread's opens (read-only: PROT_WRITE refused, PROT_READ mapped)");
  EXPECT(a >= 0 && b >= 0 && a != b, "two opens of one file: %d %d", a, b);
  printf("two-opens a=%d b=%d\n", a, b);
  await("two");
  close(a);
  close(b);
}

/* The BAR's bound: the last page maps, a page past it does not (EINVAL, as on the real file). */
static void bounds(long pages) {
  int fd = open(BAR2WC, O_RDWR);
  char *last = map(fd, 1, pages - 1);
  errno = 0;
  char *past = map(fd, 2, pages - 1);
  int e = errno;
  EXPECT(last != NULL && past == NULL && e == EINVAL, "last %p past %p errno %s", (void *)last, (void *)past,
         strerror(e));
  if (last != NULL) munmap(last, (size_t)PAGE);
  close(fd);
}

/* fork: the child maps the inherited fd and writes through the inherited mapping; its close, munmap
 * and exit do not release the parent's grant. A BAR file the child opens gets its own session. */
static void forked(void) {
  int fd = open(BAR2WC, O_RDWR);
  char *m = map(fd, 1, 0);
  EXPECT(m != NULL, "mmap: %s", strerror(errno));
  if (m == NULL) return;
  pid_t pid = fork();
  if (pid == 0) {
    char *c = map(fd, 1, 5);
    int ok = c != NULL;
    if (c != NULL) c[0] = 0x77;
    m[1] = 0x66;
    int own = open(BAR0, O_RDONLY);
    void *ownm = mmap(NULL, (size_t)PAGE, PROT_READ, MAP_SHARED, own, 0);
    ok &= own >= 0 && ownm != MAP_FAILED;
    close(own);
    if (ownm != MAP_FAILED) munmap(ownm, (size_t)PAGE); /* released now, not at exit: the test counts */
    close(fd);
    if (c != NULL) munmap(c, (size_t)PAGE);
    munmap(m, (size_t)PAGE);
    _exit(ok ? 0 : 1);
  }
  int status = -1;
  waitpid(pid, &status, 0);
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child: status %#x", status);
  EXPECT(m[1] == 0x66, "the child's write through the inherited mapping");
  printf("forked child=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  await("forked");
  munmap(m, (size_t)PAGE);
  close(fd);
}

/* exec: an fd opened without O_CLOEXEC is close-on-exec anyway; the exec'd program finds it closed. */
static void execd(const char *self) {
  int fd = open(BAR2WC, O_RDWR);
  EXPECT(fd >= 0 && cloexec(fd), "open without O_CLOEXEC: fd %d cloexec %d", fd, cloexec(fd));
  pid_t pid = fork();
  if (pid == 0) {
    char num[16];
    snprintf(num, sizeof num, "%d", fd);
    execl(self, self, "execd", num, (char *)NULL);
    _exit(127);
  }
  int status = -1;
  waitpid(pid, &status, 0);
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the exec'd program saw the fd open: %#x", status);
  printf("exec closed=%d\n", WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(fd);
}

/* fopen, the /sys/devices/pci... spelling, and a relative openat. */
static void other_spellings(const char *bdf) {
  char alt[160];
  snprintf(alt, sizeof alt, "/sys/devices/pci0000:7e/0000:7e:00.0/%s/resource2", bdf);
  FILE *f = fopen(alt, "r+");
  EXPECT(f != NULL, "fopen %s: %s", alt, strerror(errno));
  if (f == NULL) return;
  char *x = map(fileno(f), 1, 9);
  fclose(f);
  if (x != NULL) x[0] = (char)0x99;
  if (x != NULL) munmap(x, (size_t)PAGE);
  int root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  char rel[128];
  snprintf(rel, sizeof rel, ".//sys/bus/pci/devices/%s/./resource2", bdf);
  int fd = openat(root, rel, O_RDONLY);
  EXPECT(fd >= 0, "openat(/, %s): %s", rel, strerror(errno));
  close(fd);
  close(root);
}

int scenario_flow(const char *self, const char *bdf, const char *denied) {
  int before = count_fds();
  refused(denied);
  paths(bdf);
  open_map_close();
  dups();
  threads_and_two_opens();
  bounds((1 << 20) / PAGE);
  forked();
  execd(self);
  other_spellings(bdf);
  await("end");
  printf("fds before=%d after=%d\n", before, count_fds());
  EXPECT(count_fds() == before, "fds %d -> %d", before, count_fds());
  return finish();
}

/* The BAR files exist: resource2 this uid may open (the real file, no brokerd), resource0 it may
 * not (EACCES: brokerd's). */
int scenario_self(const char *bdf) {
  paths(bdf);
  int fd = open(BAR2, O_RDWR);
  EXPECT(fd >= 0, "open %s: %s", BAR2, strerror(errno));
  char link[64], target[256] = "";
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof target - 1);
  target[n > 0 ? n : 0] = '\0';
  EXPECT(strcmp(target, BAR2) == 0, "the real file: %s", target);
  char *p = map(fd, 1, 1);
  EXPECT(p != NULL, "mmap of the real file: %s", strerror(errno));
  if (p != NULL) munmap(p, (size_t)PAGE);
  close(fd);
  printf("self real=%s\n", target);
  fd = open(BAR0, O_RDONLY);
  EXPECT(fd >= 0, "open %s: %s", BAR0, strerror(errno));
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  n = readlink(link, target, sizeof target - 1);
  target[n > 0 ? n : 0] = '\0';
  printf("self brokered=%s\n", target);
  EXPECT(strcmp(target, BAR0) != 0, "brokerd's fd, not the file: %s", target);
  close(fd);
  return finish();
}

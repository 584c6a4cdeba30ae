/* preload_probe.c: a test tool, not an example: an ordinary program that knows nothing of
 * vfio-broker (it calls libc only) run with libvfio-broker-preload.so preloaded. Usage:
 *   vfb-preload-probe local                 no brokerd (make check, make valgrind)
 *   vfb-preload-probe flow BDF BDF_DENIED   against brokerd ($VFIO_BROKER_SOCKET), driven by
 *                                           test/clib/preload.test.ts
 *   vfb-preload-probe self BDF              the BAR files exist (a tmpfs the test mounted over
 *                                           /sys/bus/pci/devices): resource2 this uid may open,
 *                                           resource0 root's only
 *   vfb-preload-probe execd FD              (flow's exec: the fd must be closed here)
 *   vfb-preload-probe bench N               ns per passed-through call (BENCHMARKS.md)
 * It prints one line per step ("key value ..."), waits for a line on stdin where the test looks at
 * brokerd ("await WHAT"), prints each failed check as "FAIL ..." and ends with "N passed, M failed".
 * What it must never do: link libvfio-broker, or know how the shim works inside. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "preload_probe.h"

int failures, passes;
long PAGE;
char BAR2[128], BAR2WC[128], BAR0[128];

int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1;
}

void await(const char *what) {
  printf("await %s\n", what);
  fflush(stdout);
  char line[64];
  if (fgets(line, sizeof line, stdin) == NULL) exit(3);
}

void paths(const char *bdf) {
  snprintf(BAR2, sizeof BAR2, "/sys/bus/pci/devices/%s/resource2", bdf);
  snprintf(BAR2WC, sizeof BAR2WC, "/sys/bus/pci/devices/%s/resource2_wc", bdf);
  snprintf(BAR0, sizeof BAR0, "/sys/bus/pci/devices/%s/resource0", bdf);
}

int finish(void) {
  printf("%d passed, %d failed\n", passes, failures);
  return failures == 0 ? 0 : 1;
}

/* ---- local: no brokerd ---------------------------------------------------------------------- */

/* Paths that must pass through untouched: none is a BAR file, or none is as the shim reads them. */
static const char *const OTHER[] = {
    "/sys/bus/pci/devices/0000:7e:00.1/resource",      "/sys/bus/pci/devices/0000:7e:00.1/resource6",
    "/sys/bus/pci/devices/0000:7E:00.1/resource2",     "/sys/bus/pci/devices/../devices/0000:7e:00.1/resource2",
    "/sys/bus/pci/devices/0000:7e:00.1/resource2/",    "/nonexistent/resource2",
    "/sys/bus/pci/drivers/0000:7e:00.1/resource2",     "/sys/bus/pci/devices/0000:7e:00.1/config",
};

static int scenario_local(void) {
  int before = count_fds();
  char dir[] = "/tmp/vfb-preload-XXXXXX";
  if (mkdtemp(dir) == NULL) return 2;
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s/fd.sock", dir);
  char broker[128];
  snprintf(broker, sizeof broker, "%s/broker.sock", dir);
  setenv("VFIO_BROKER_SOCKET", broker, 1);
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 4) == 0, "listen: %s", strerror(errno));

  /* Passed through: files that open, a non-BAR path that does not, plain fd calls. */
  int fd = open("/dev/zero", O_RDWR);
  EXPECT(fd >= 0, "open /dev/zero: %s", strerror(errno));
  void *p = mmap(NULL, (size_t)PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  EXPECT(p != MAP_FAILED && ((char *)p)[0] == 0, "mmap /dev/zero: %s", strerror(errno));
  if (p != MAP_FAILED) EXPECT(munmap(p, (size_t)PAGE) == 0, "munmap");
  int d1 = dup(fd), d2 = fcntl(fd, F_DUPFD_CLOEXEC, 50), d3 = dup2(fd, 60);
  EXPECT(d1 >= 0 && d2 >= 50 && d3 == 60, "dups %d %d %d", d1, d2, d3);
  close(d1);
  close(d2);
  close(d3);
  close(fd);
  FILE *f = fopen("/proc/self/stat", "r");
  EXPECT(f != NULL, "fopen: %s", strerror(errno));
  if (f != NULL) fclose(f);
  fd = openat(AT_FDCWD, "/proc/self/status", O_RDONLY | O_CLOEXEC);
  EXPECT(fd >= 0, "openat: %s", strerror(errno));
  close(fd);
  for (size_t i = 0; i < sizeof OTHER / sizeof OTHER[0]; i++) {
    errno = 0;
    fd = open(OTHER[i], O_RDWR);
    EXPECT(fd < 0 && (errno == ENOENT || errno == ENOTDIR), "%s: fd %d errno %s", OTHER[i], fd, strerror(errno));
  }
  struct pollfd pl = {.fd = l, .events = POLLIN};
  EXPECT(poll(&pl, 1, 0) == 0, "a passed-through open connected to brokerd's socket");
  printf("passthrough %zu paths, no connection\n", sizeof OTHER / sizeof OTHER[0]);

  /* A BAR file: brokerd is asked. A fake one accepts and hangs up: the open fails as the real one
   * did (ENOENT), with one message. Then nothing listens: the same errno, no second message. */
  pid_t fake = fork();
  if (fake == 0) {
    int c = accept(l, NULL, NULL);
    close(l);
    if (c >= 0) close(c);
    _exit(c >= 0 ? 0 : 1);
  }
  int err[2];
  EXPECT(pipe2(err, O_CLOEXEC) == 0, "pipe");
  int saved = dup(2);
  dup2(err[1], 2);
  paths("0000:7e:00.1");
  errno = 0;
  fd = open(BAR2WC, O_RDWR);
  int e1 = errno;
  int status = -1;
  waitpid(fake, &status, 0);
  unlink(a.sun_path);
  errno = 0;
  int fd2 = open(BAR2, O_RDONLY);
  int e2 = errno;
  FILE *f2 = fopen(BAR0, "r");
  int e3 = errno;
  dup2(saved, 2);
  close(saved);
  close(err[1]);
  char msg[4096] = "";
  ssize_t n = read(err[0], msg, sizeof msg - 1);
  msg[n > 0 ? n : 0] = '\0';
  close(err[0]);
  EXPECT(fd < 0 && e1 == ENOENT, "fd %d errno %s", fd, strerror(e1));
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the BAR file's open did not connect to brokerd's socket");
  EXPECT(fd2 < 0 && e2 == ENOENT && f2 == NULL && e3 == ENOENT, "second open: %d %s, fopen %s", fd2, strerror(e2),
         strerror(e3));
  int lines = 0;
  for (char *c = msg; (c = strstr(c, "libvfio-broker-preload: ")) != NULL; c++) lines++;
  EXPECT(lines == 1, "%d messages: %s", lines, msg);
  EXPECT(strstr(msg, "0000:7e:00.1 BAR2 WC") != NULL, "message: %s", msg);
  printf("refused errno=%s messages=%d\n", strerrorname_np(e1), lines);
  close(l);
  rmdir(dir);
  printf("fds before=%d after=%d\n", before, count_fds());
  EXPECT(count_fds() == before, "fds %d -> %d", before, count_fds());
  return finish();
}

/* ---- bench: what the shim costs calls it passes through ------------------------------------- */

static double ns_per(struct timespec a, struct timespec b, long n) {
  return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / (double)n;
}

/* Prints ns per open+close of /dev/null, per failed open of a missing path whose last component
 * looks like a BAR file's (the shim parses it), and per anonymous mmap+munmap of a page. */
static int scenario_bench(long n) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < n; i++) close(open("/dev/null", O_RDONLY));
  clock_gettime(CLOCK_MONOTONIC, &b);
  double oc = ns_per(a, b, n);
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < n; i++)
    if (open("/nonexistent/resource0", O_RDONLY) >= 0) return 1;
  clock_gettime(CLOCK_MONOTONIC, &b);
  double miss = ns_per(a, b, n);
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < n; i++) munmap(mmap(NULL, (size_t)PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), (size_t)PAGE);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double mm = ns_per(a, b, n);
  printf("%s: open+close %.0f ns, missing resource0 %.0f ns, mmap+munmap %.0f ns (%ld each)\n",
         getenv("LD_PRELOAD") != NULL ? "shim    " : "baseline", oc, miss, mm, n);
  return 0;
}

int main(int argc, char **argv) {
  PAGE = sysconf(_SC_PAGESIZE);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 2 && strcmp(argv[1], "local") == 0) return scenario_local();
  if (argc >= 4 && strcmp(argv[1], "flow") == 0) return scenario_flow(argv[0], argv[2], argv[3]);
  if (argc >= 3 && strcmp(argv[1], "self") == 0) return scenario_self(argv[2]);
  if (argc >= 3 && strcmp(argv[1], "bench") == 0) return scenario_bench(atol(argv[2]));
  if (argc >= 3 && strcmp(argv[1], "execd") == 0) {
    int fd = atoi(argv[2]);
    errno = 0;
    int r = fcntl(fd, F_GETFD);
    return r == -1 && errno == EBADF ? 0 : 1;
  }
  fprintf(stderr, "usage: vfb-preload-probe local | flow BDF BDF_DENIED | self BDF | execd FD | bench N\n");
  return 2;
}

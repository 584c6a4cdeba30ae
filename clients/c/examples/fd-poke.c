/* fd-poke.c: a program that takes a brokered fd, as `vfio-broker exec` hands it over: it maps fd
 * $VFIO_BROKER_FD at $VFIO_BROKER_MMAP_OFFSET for $VFIO_BROKER_LENGTH bytes ($VFIO_BROKER_PROT r or
 * rw) and runs --write/--read through that mmap in the order given. It needs no library and never
 * talks to brokerd: the fd is all it has. --fds lists its open fds (what it inherited), --wait
 * waits for SIGINT/SIGTERM/SIGHUP and says who sent it, --exit N sets its exit status.
 *
 *   vfio-broker exec sim0 BAR2 --attr wc --length 8K -- vfb-fd-poke --write 0x100=cafef00d --read 0x100:4
 *
 * Exit status: N from --exit (default 0); 100+S after --wait caught signal S; 1 an error; 2 usage.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int fail(const char *what) {
  fprintf(stderr, "vfb-fd-poke: %s: %s\n", what, strerror(errno));
  return 1;
}

static int usage(const char *what) {
  fprintf(stderr,
          "vfb-fd-poke: %s\nusage: vfb-fd-poke [--write OFF=HEX] [--read OFF:LEN] [--fds] [--wait] [--exit N]\n"
          "(run it under vfio-broker exec, which sets VFIO_BROKER_FD, _MMAP_OFFSET, _LENGTH and _PROT)\n",
          what);
  return 2;
}

/* A number from the environment (decimal or 0x hex); -1 when unset or not a number. */
static long long env_number(const char *name) {
  const char *s = getenv(name);
  char *end = NULL;
  if (!s || !*s) return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || *end || v > INT64_MAX) return -1;
  return (long long)v;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* --write OFF=HEX: the bytes in memory order. */
static int do_write(unsigned char *mem, size_t len, int writable, const char *spec) {
  char *end = NULL;
  unsigned long long off = strtoull(spec, &end, 0);
  if (*end != '=') return usage("--write needs OFF=HEX");
  const char *hex = end + 1;
  size_t n = strlen(hex);
  if (n == 0 || n % 2) return usage("--write: HEX needs an even number of digits");
  if (!writable) return usage("--write: the mapping is read-only (VFIO_BROKER_PROT=r)");
  if (off > len || n / 2 > len - off) return usage("--write: outside the mapping");
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return usage("--write: HEX is not hex");
    mem[off + i] = (unsigned char)(hi << 4 | lo);
  }
  return 0;
}

/* --read OFF:LEN: prints "OFF: HEX". */
static int do_read(const unsigned char *mem, size_t len, const char *spec) {
  char *end = NULL;
  unsigned long long off = strtoull(spec, &end, 0);
  unsigned long long n = 16;
  if (*end == ':') n = strtoull(end + 1, &end, 0);
  if (*end || n == 0 || off > len || n > len - off) return usage("--read needs OFF:LEN inside the mapping");
  printf("0x%llx: ", off);
  for (size_t i = 0; i < n; i++) printf("%02x", mem[off + i]);
  printf("\n");
  return 0;
}

/* --fds: every open fd and what it is, as the kernel names it. */
static void list_fds(void) {
  for (int fd = 0; fd < 1024; fd++) {
    char path[64], target[256];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0) continue;
    target[n] = 0;
    printf("fd %d %s\n", fd, target);
  }
}

/* --wait: blocks SIGINT/SIGTERM/SIGHUP, says it waits, and reports the first that comes. */
static int wait_signal(void) {
  sigset_t set;
  siginfo_t info;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) return fail("sigprocmask");
  printf("waiting\n");
  fflush(stdout);
  int sig;
  do sig = sigwaitinfo(&set, &info);
  while (sig < 0 && errno == EINTR);
  if (sig < 0) return fail("sigwaitinfo");
  printf("signal %d from pid %ld\n", sig, (long)info.si_pid);
  fflush(stdout);
  return 100 + sig;
}

int main(int argc, char **argv) {
  long long fd = env_number("VFIO_BROKER_FD");
  long long off = env_number("VFIO_BROKER_MMAP_OFFSET");
  long long len = env_number("VFIO_BROKER_LENGTH");
  const char *prot = getenv("VFIO_BROKER_PROT");
  if (fd < 0 || off < 0 || len <= 0 || !prot) return usage("VFIO_BROKER_FD, _MMAP_OFFSET, _LENGTH or _PROT is missing");
  int writable = strcmp(prot, "rw") == 0;
  void *p = mmap(NULL, (size_t)len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, (int)fd, (off_t)off);
  if (p == MAP_FAILED) return fail("mmap");
  unsigned char *mem = p;
  int status = 0;
  for (int i = 1; i < argc; i++) {
    int r = 0;
    if (!strcmp(argv[i], "--write") && i + 1 < argc) r = do_write(mem, (size_t)len, writable, argv[++i]);
    else if (!strcmp(argv[i], "--read") && i + 1 < argc) r = do_read(mem, (size_t)len, argv[++i]);
    else if (!strcmp(argv[i], "--fds")) list_fds();
    else if (!strcmp(argv[i], "--wait")) status = wait_signal();
    else if (!strcmp(argv[i], "--exit") && i + 1 < argc) status = atoi(argv[++i]);
    else r = usage("unknown argument");
    if (r) return r;
  }
  fflush(stdout);
  munmap(p, (size_t)len);
  return status;
}

/* driver-start.c: how a userspace driver starts on libvfio-broker, and what it does while it runs.
 * It connects, opens a device, reads its regions, maps two memory BARs in one exchange (the first
 * prefetchable one WC, taking UC where the host cannot give WC; the first other one UC), touches
 * them (a register read through UC, a write and read-back through WC), then runs its own poll loop
 * over the session's event fd and a signalfd: no thread of its own, none in the library. In the
 * loop it handles a revocation (prints the reason; the library has already made the address
 * inaccessible; it unmaps, which is the release brokerd waits for), a device-health change, and the
 * session's end (after a brokerd restart it takes the session back with vfb_resume, its mappings
 * kept at the same addresses; any other end stops it). SIGTERM or SIGINT: it unmaps, closes,
 * disconnects and exits 0. Its last line counts its open fds at start and at exit.
 * An example: only <vfio-broker.h> and the library (`pkg-config --cflags --libs vfio-broker`).
 *
 * Exit status: 0 stopped by a signal, 1 broker or runtime error (or the session ended), 2 usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <vfio-broker.h>

static const char HELP[] =
    "Usage: vfb-driver-start [--socket PATH] <device>\n"
    "Start as a userspace driver would: connect to brokerd, open <device>, map its first\n"
    "prefetchable memory BAR WC (UC where the host cannot give WC) and its first other memory BAR\n"
    "UC in one exchange, touch them, then poll the session's events until SIGTERM or SIGINT.\n"
    "\n"
    "  --socket PATH   brokerd's socket (default $VFIO_BROKER_SOCKET or\n"
    "                  /run/vfio-broker/broker.sock); the fd channel is fd.sock beside it\n"
    "  -h, --help      this help\n"
    "\n"
    "Exit status: 0 stopped by a signal, 1 broker or runtime error or the session ended, 2 usage.\n";

/* How long it keeps trying to take its session back after brokerd restarted, and how often. */
#define RESUME_TRIES 120
#define RESUME_EVERY_MS 500

enum { WC_BAR, UC_BAR, N_BARS };
static const char *const ROLE[N_BARS] = {"WC", "UC"};

struct driver {
  vfb_session *s;
  vfb_device *d;
  vfb_mapping *m[N_BARS]; /* NULL: not mapped (no such BAR, or revoked and unmapped) */
  vfb_region bar[N_BARS];
  int sigfd;
  int resume_tries; /* > 0 while waiting for brokerd to come back */
};

static int count_fds(void) {
  DIR *dir = opendir("/proc/self/fd");
  int n = 0;
  if (!dir) return -1;
  while (readdir(dir)) n++;
  closedir(dir);
  return n - 3; /* ".", ".." and the directory's own fd */
}

static const char *health_name(int h) {
  static const char *const names[] = {"unknown", "healthy", "draining", "gone"};
  return h >= 0 && h < (int)(sizeof names / sizeof names[0]) ? names[h] : "unknown";
}

static int fail(const struct driver *drv, const char *what, int err) {
  const char *detail = vfb_last_error(drv->s);
  fprintf(stderr, "vfb-driver-start: %s: %s (%s)%s%s\n", what, vfb_strerror(err), vfb_error_name(err),
          detail[0] ? ": " : "", detail);
  return 1;
}

/* The first prefetchable memory BAR for WC, the first other memory BAR for UC. */
static void choose_bars(struct driver *drv, int have[N_BARS]) {
  unsigned n = vfb_region_count(drv->d);
  for (unsigned pos = 0; pos < n; pos++) {
    vfb_region r;
    if (vfb_region_at(drv->d, pos, &r) != 0) continue;
    printf("  %-6s %10llu bytes  %s%s%s\n", r.name, (unsigned long long)r.size, r.mappable ? "mappable" : "not mappable",
           r.prefetchable ? ", prefetchable" : "", r.attributes & VFB_ATTR_WC ? ", UC or WC" : r.mappable ? ", UC" : "");
    if (r.index > 5 || !r.mappable || r.size == 0) continue;
    int role = r.prefetchable ? WC_BAR : UC_BAR;
    if (!have[role]) {
      drv->bar[role] = r;
      have[role] = 1;
    }
  }
}

/* Both BARs (whole) in one exchange: all or nothing. */
static int map_bars(struct driver *drv) {
  int have[N_BARS] = {0, 0};
  choose_bars(drv, have);
  vfb_range ranges[N_BARS];
  int roles[N_BARS];
  size_t n = 0;
  for (int role = 0; role < N_BARS; role++) {
    if (!have[role]) {
      printf("no %s BAR to map\n", ROLE[role]);
      continue;
    }
    int attr = role == WC_BAR ? VFB_ATTR_WC | VFB_ATTR_FALLBACK_UC : VFB_ATTR_UC;
    ranges[n] = (vfb_range){.region = drv->bar[role].index, .offset = 0, .length = drv->bar[role].size,
                            .attr = attr, .prot = VFB_PROT_RW};
    roles[n++] = role;
  }
  if (n == 0) return 0;
  vfb_mapping *got[N_BARS];
  int err = vfb_map_many(drv->d, ranges, n, got);
  if (err != 0) return fail(drv, "map", err);
  for (size_t i = 0; i < n; i++) {
    int role = roles[i];
    drv->m[role] = got[i];
    printf("mapped %s: %llu bytes at %p, asked %s, got %s, cookie 0x%llx\n", drv->bar[role].name,
           (unsigned long long)vfb_mapping_length(got[i]), vfb_mapping_addr(got[i]), ROLE[role],
           vfb_mapping_attr(got[i]) == VFB_ATTR_WC ? "WC" : "UC", (unsigned long long)vfb_mapping_cookie(got[i]));
  }
  return 0;
}

/* A register read through UC; a write, a store fence and a read-back through WC. */
static void touch_bars(const struct driver *drv) {
  if (drv->m[UC_BAR]) {
    volatile uint32_t *reg = vfb_mapping_addr(drv->m[UC_BAR]);
    printf("touched %s: register 0x0 reads 0x%08x\n", drv->bar[UC_BAR].name, reg[0]);
  }
  if (drv->m[WC_BAR]) {
    volatile uint64_t *mem = vfb_mapping_addr(drv->m[WC_BAR]);
    uint64_t pattern = 0x5a5a000000000000ull | (uint64_t)getpid();
    mem[0] = pattern;
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* flushes the write-combining buffer */
    printf("touched %s: wrote 0x%016llx, read back 0x%016llx\n", drv->bar[WC_BAR].name, (unsigned long long)pattern,
           (unsigned long long)mem[0]);
  }
}

/* Unmapping a revoked mapping is its release: brokerd keeps its pages booked until then. */
static void unmap_revoked(struct driver *drv, int role) {
  if (vfb_mapping_status(drv->m[role]) == VFB_E_MAPPING_REVOKED)
    printf("%s: its address is inaccessible now; unmapping it\n", drv->bar[role].name);
  int err = vfb_unmap(drv->m[role]);
  drv->m[role] = NULL;
  printf("unmapped %s: %s\n", drv->bar[role].name, err == 0 ? "released" : vfb_error_name(err));
}

static void on_revoked(struct driver *drv, const vfb_event *ev) {
  for (int role = 0; role < N_BARS; role++) {
    if (!drv->m[role] || ev->mapping != drv->m[role]) continue;
    printf("revoked: %s cookie 0x%llx, reason %s%s%s\n", drv->bar[role].name, (unsigned long long)ev->cookie,
           ev->reason, ev->message[0] ? ": " : "", ev->message);
    unmap_revoked(drv, role);
    return;
  }
  /* Cookie 0: brokerd revoked the whole device file (a drain, the device gone, the session's
   * end); every mapping of it goes. */
  if (ev->cookie == 0 && drv->d && ev->device_file_id == vfb_device_file_id(drv->d)) {
    printf("revoked: device file %llu (all its mappings), reason %s%s%s\n", (unsigned long long)ev->device_file_id,
           ev->reason, ev->message[0] ? ": " : "", ev->message);
    for (int role = 0; role < N_BARS; role++)
      if (drv->m[role]) unmap_revoked(drv, role);
    return;
  }
  printf("revoked: cookie 0x%llx of %s (no mapping of ours), reason %s\n", (unsigned long long)ev->cookie, ev->device_id,
         ev->reason);
}

/* 0: go on polling; 1: stop (the session ended for good). */
static int on_event(struct driver *drv, const vfb_event *ev) {
  switch (ev->kind) {
  case VFB_EVENT_REVOKED: on_revoked(drv, ev); return 0;
  case VFB_EVENT_DEVICE_HEALTH: printf("health: %s %s\n", ev->device_id, health_name(ev->health)); return 0;
  case VFB_EVENT_SESSION_ENDED:
    printf("session ended: %s%s%s\n", ev->reason, ev->message[0] ? ": " : "", ev->message);
    if (strcmp(ev->reason, "restart") == 0 || strcmp(ev->reason, "connection-lost") == 0) {
      printf("waiting for brokerd to take the session back\n");
      drv->resume_tries = RESUME_TRIES;
      return 0;
    }
    return 1;
  default: printf("event of kind %d (newer than this program): ignored\n", ev->kind); return 0;
  }
}

/* One resume attempt: 0 resumed or try again later; 1 give up. */
static int try_resume(struct driver *drv) {
  int err = vfb_resume(drv->s);
  if (err == 0) {
    drv->resume_tries = 0;
    printf("resumed: session %s%s; mappings kept at the same addresses\n", vfb_session_id(drv->s),
           vfb_session_resumed(drv->s) ? "" : " (not resumed?)");
    return 0;
  }
  if ((err == VFB_E_CONNECT || err == VFB_E_TIMEOUT || err == VFB_E_CLOSED) && --drv->resume_tries > 0) return 0;
  drv->resume_tries = 0;
  fail(drv, "resume", err);
  return 1;
}

/* The driver's main loop: returns the exit status. */
static int run(struct driver *drv) {
  struct pollfd fds[2] = {{.fd = drv->sigfd, .events = POLLIN}, {.fd = vfb_event_fd(drv->s), .events = POLLIN}};
  printf("ready: polling the event fd and signals; SIGTERM or SIGINT stops\n");
  fflush(stdout);
  for (;;) {
    int r = poll(fds, drv->resume_tries > 0 ? 1 : 2, drv->resume_tries > 0 ? RESUME_EVERY_MS : -1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      perror("vfb-driver-start: poll");
      return 1;
    }
    if (fds[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(drv->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        printf("stopping (%s)\n", si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
        return 0;
      }
    }
    if (drv->resume_tries > 0) {
      if (r == 0 && try_resume(drv) != 0) return 1;
      fflush(stdout);
      continue;
    }
    vfb_event ev;
    int got, stop = 0;
    while (!stop && (got = vfb_read_event(drv->s, &ev)) == 1) stop = on_event(drv, &ev);
    fflush(stdout);
    if (stop) return 1;
    if (got < 0 && got != VFB_E_PROTOCOL) return fail(drv, "reading events", got);
  }
}

static int start(struct driver *drv, const char *socket, const char *device) {
  char why[512] = "";
  vfb_connect_options opts = {.struct_size = sizeof opts, .broker_socket = socket, .client_name = "vfb-driver-start",
                              .error_message = why, .error_message_size = sizeof why};
  int err = vfb_connect_ex(&opts, &drv->s);
  if (err != 0) {
    fprintf(stderr, "vfb-driver-start: connect: %s (%s)%s%s\n", vfb_strerror(err), vfb_error_name(err),
            why[0] ? ": " : "", why);
    return 1;
  }
  vfb_identity id;
  vfb_session_identity(drv->s, &id);
  printf("connected: session %s, uid %u pid %u, brokerd %s, page size %llu\n", vfb_session_id(drv->s), id.uid, id.pid,
         vfb_server_version(drv->s), (unsigned long long)vfb_page_size(drv->s));
  if ((err = vfb_open_device(drv->s, device, &drv->d)) != 0) return fail(drv, device, err);
  printf("opened %s: device file %llu, health %s, %u regions\n", vfb_device_id(drv->d),
         (unsigned long long)vfb_device_file_id(drv->d), health_name(vfb_device_health(drv->d)), vfb_region_count(drv->d));
  if (map_bars(drv) != 0) return 1;
  touch_bars(drv);
  return run(drv);
}

/* Unmaps what is still mapped, closes the device, ends the session: brokerd releases it all. */
static void stop(struct driver *drv) {
  vfb_mapping *left[N_BARS];
  size_t n = 0;
  for (int role = 0; role < N_BARS; role++)
    if (drv->m[role]) left[n++] = drv->m[role];
  if (n > 0) {
    int err = vfb_unmap_many(left, n);
    printf("unmapped %zu mapping(s): %s\n", n,
           err == 0 ? "released"
           : err == VFB_E_SESSION_ENDED || err == VFB_E_CLOSED ? "released by the session's end"
                                                                : vfb_error_name(err));
  }
  if (drv->d) vfb_close_device(drv->d);
  vfb_disconnect(drv->s);
}

int main(int argc, char **argv) {
  const char *socket = NULL, *device = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(HELP, stdout);
      return 0;
    } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
      socket = argv[++i];
    } else if (argv[i][0] != '-' && !device) {
      device = argv[i];
    } else {
      fprintf(stderr, "vfb-driver-start: unexpected argument %s; see vfb-driver-start --help\n", argv[i]);
      return 2;
    }
  }
  if (!device) {
    fprintf(stderr, "vfb-driver-start: give a device, e.g. sim0; see vfb-driver-start --help\n");
    return 2;
  }
  int fds_at_start = count_fds();
  /* SIGTERM and SIGINT are read from a signalfd in the poll loop: blocked from here on, so one
   * that comes during the start-up waits for the loop instead of killing the process mid-map. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigprocmask(SIG_BLOCK, &sigs, NULL);
  struct driver drv = {.sigfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK)};
  if (drv.sigfd < 0) {
    perror("vfb-driver-start: signalfd");
    return 1;
  }
  int code = start(&drv, socket, device);
  stop(&drv);
  close(drv.sigfd);
  printf("fds: %d at start, %d at exit\n", fds_at_start, count_fds());
  return code;
}

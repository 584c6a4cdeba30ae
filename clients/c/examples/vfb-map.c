/* vfb-map.c: the `vfio-broker map` command of the CLI (clients/node/src/cli.ts), in C on
 * libvfio-broker. It maps a range of a device region, runs --write/--read through the mmap in the
 * order given, prints what brokerd gave, and with --hold/--hold-for keeps the mapping until a
 * signal, the time is up, or brokerd revokes it. An example: it uses only <vfio-broker.h> and the
 * library (built with `pkg-config --cflags --libs vfio-broker`), never the library's insides.
 *
 * Exit status: 0 ok, 1 broker or runtime error, 2 usage error, 3 the held mapping was revoked.
 * Errors are one line on stderr: "vfb-map: <what>: <the library's message>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <vfio-broker.h>

static const char HELP[] =
    "Usage: vfb-map [options] <device> <region>\n"
    "Map a range of a device region through brokerd and access it through the mmap.\n"
    "\n"
    "Options:\n"
    "  --offset N          offset inside the region (page aligned; default 0)\n"
    "  --length N          bytes to map (page aligned; default: the rest of the region)\n"
    "  --attr uc|wc        memory attribute to ask for (default uc)\n"
    "  --prot r|rw         protection (default rw)\n"
    "  --allow-fallback    map UC if the host cannot give WC (the output says which was given)\n"
    "  --write OFF=HEX     write hex bytes (memory order) at OFF in the mapping; repeatable\n"
    "  --read OFF[:LEN]    hexdump LEN bytes (default 16) at OFF in the mapping; repeatable\n"
    "                      (--write and --read run in the order given, at most 64 of them)\n"
    "  --hold              keep the mapping until SIGINT/SIGTERM (exit 0) or a revocation (exit 3)\n"
    "  --hold-for SECONDS  as --hold, and release after SECONDS (exit 0)\n"
    "  --socket PATH       brokerd's socket (default $VFIO_BROKER_SOCKET or\n"
    "                      /run/vfio-broker/broker.sock); the fd channel is fd.sock beside it\n"
    "  -h, --help          this help\n"
    "\n"
    "Regions: BAR0..BAR5 (or 0..5), ROM, VGA. Numbers: 4096, 0x1000, 4K, 1M, 1G (K = 1024).\n"
    "Exit status: 0 ok, 1 broker or runtime error, 2 usage error, 3 the mapping was revoked.\n";

#define MAX_OPS 64
#define MAX_OP_BYTES 4096

struct op {
  int write;       /* 1: --write, 0: --read */
  uint64_t offset; /* in the mapping */
  size_t length;
  unsigned char data[MAX_OP_BYTES];
};

struct args {
  const char *socket, *device, *region;
  uint64_t offset, length;
  int have_length, attr, prot, fallback, hold;
  long hold_seconds; /* -1: until a signal */
  struct op ops[MAX_OPS];
  size_t n_ops;
};

static int usage(const char *fmt, const char *what) {
  fprintf(stderr, "vfb-map: ");
  fprintf(stderr, fmt, what);
  fprintf(stderr, "; see vfb-map --help\n");
  return 2;
}

/* "4096", "0x1000", "4K", "1M", "1G": 0, or -1 if it is not such a number or does not fit. */
static int parse_number(const char *text, uint64_t *out) {
  char *end;
  errno = 0;
  if (text[0] == '-' || text[0] == '\0') return -1;
  unsigned long long v = strtoull(text, &end, 0);
  if (errno || end == text) return -1;
  unsigned shift = 0;
  if (*end == 'k' || *end == 'K') shift = 10;
  else if (*end == 'm' || *end == 'M') shift = 20;
  else if (*end == 'g' || *end == 'G') shift = 30;
  if (shift) end++;
  if (*end != '\0' || (shift && v > (UINT64_MAX >> shift))) return -1;
  *out = (uint64_t)v << shift;
  return 0;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Hex bytes in memory order ("deadbeef", "0xdeadbeef", "de:ad:be:ef"): the count, or -1. */
static long parse_hex(const char *text, unsigned char *out, size_t room) {
  size_t n = 0;
  int hi = -1;
  if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) text += 2;
  for (; *text; text++) {
    if (*text == ':' || *text == '_' || *text == ' ') continue;
    int d = hex_digit(*text);
    if (d < 0) return -1;
    if (hi < 0) {
      hi = d;
      continue;
    }
    if (n == room) return -1;
    out[n++] = (unsigned char)(hi << 4 | d);
    hi = -1;
  }
  return hi >= 0 || n == 0 ? -1 : (long)n;
}

static int add_op(struct args *a, int write, const char *spec) {
  if (a->n_ops == MAX_OPS) return usage("more than %s --write/--read", "64");
  struct op *op = &a->ops[a->n_ops];
  char off[64];
  const char *sep = strchr(spec, write ? '=' : ':');
  size_t len = sep ? (size_t)(sep - spec) : strlen(spec);
  if ((write && !sep) || len == 0 || len >= sizeof off)
    return usage(write ? "--write %s: give OFF=HEX, e.g. --write 0x10=deadbeef" : "--read %s: give OFF or OFF:LEN", spec);
  memcpy(off, spec, len);
  off[len] = '\0';
  if (parse_number(off, &op->offset) != 0) return usage("bad offset in %s", spec);
  op->write = write;
  if (write) {
    long n = parse_hex(sep + 1, op->data, sizeof op->data);
    if (n < 0) return usage("--write %s: give whole hex bytes (at most 4096), e.g. deadbeef", spec);
    op->length = (size_t)n;
  } else {
    uint64_t n = 16;
    if (sep && (parse_number(sep + 1, &n) != 0 || n == 0 || n > MAX_OP_BYTES))
      return usage("--read %s: LEN is 1 to 4096 bytes", spec);
    op->length = (size_t)n;
  }
  a->n_ops++;
  return 0;
}

static int parse_args(int argc, char **argv, struct args *a) {
  enum { O_OFFSET = 256, O_LENGTH, O_ATTR, O_PROT, O_FALLBACK, O_WRITE, O_READ, O_HOLD, O_HOLD_FOR, O_SOCKET };
  static const struct option longopts[] = {
      {"offset", required_argument, 0, O_OFFSET},   {"length", required_argument, 0, O_LENGTH},
      {"attr", required_argument, 0, O_ATTR},       {"prot", required_argument, 0, O_PROT},
      {"allow-fallback", no_argument, 0, O_FALLBACK}, {"write", required_argument, 0, O_WRITE},
      {"read", required_argument, 0, O_READ},       {"hold", no_argument, 0, O_HOLD},
      {"hold-for", required_argument, 0, O_HOLD_FOR}, {"socket", required_argument, 0, O_SOCKET},
      {"help", no_argument, 0, 'h'},                {0, 0, 0, 0}};
  a->attr = VFB_ATTR_UC;
  a->prot = VFB_PROT_RW;
  a->hold_seconds = -1;
  opterr = 0;
  for (;;) {
    int c = getopt_long(argc, argv, "+h", longopts, NULL);
    if (c == -1) break;
    uint64_t n;
    int r = 0;
    switch (c) {
    case 'h': fputs(HELP, stdout); exit(0);
    case O_OFFSET: if (parse_number(optarg, &a->offset) != 0) r = usage("--offset %s is not a number", optarg); break;
    case O_LENGTH:
      if (parse_number(optarg, &a->length) != 0) r = usage("--length %s is not a number", optarg);
      a->have_length = 1;
      break;
    case O_ATTR:
      if (strcasecmp(optarg, "uc") == 0) a->attr = VFB_ATTR_UC;
      else if (strcasecmp(optarg, "wc") == 0) a->attr = VFB_ATTR_WC;
      else r = usage("--attr %s: use uc or wc", optarg);
      break;
    case O_PROT:
      if (strcmp(optarg, "r") == 0) a->prot = VFB_PROT_READ;
      else if (strcmp(optarg, "rw") == 0) a->prot = VFB_PROT_RW;
      else r = usage("--prot %s: use r or rw", optarg);
      break;
    case O_FALLBACK: a->fallback = 1; break;
    case O_WRITE: r = add_op(a, 1, optarg); break;
    case O_READ: r = add_op(a, 0, optarg); break;
    case O_HOLD: a->hold = 1; break;
    case O_HOLD_FOR:
      if (parse_number(optarg, &n) != 0 || n == 0 || n > 86400 * 365) r = usage("--hold-for %s: give 1 or more seconds", optarg);
      a->hold = 1;
      a->hold_seconds = (long)n;
      break;
    case O_SOCKET: a->socket = optarg; break;
    default: return usage("unknown option or missing value: %s", argv[optind - 1]);
    }
    if (r) return r;
  }
  if (argc - optind != 2) return usage("%s", argc - optind < 2 ? "give a device and a region" : "too many arguments");
  for (size_t i = 0; i < a->n_ops; i++)
    if (a->ops[i].write && a->prot != VFB_PROT_RW) return usage("%s needs --prot rw", "--write");
  a->device = argv[optind];
  a->region = argv[optind + 1];
  return 0;
}

/* "BAR2", "bar2", "2", "ROM", "VGA" -> the VFIO region index, or -1. */
static int region_index(const char *name) {
  if (strcasecmp(name, "ROM") == 0) return 6;
  if (strcasecmp(name, "VGA") == 0) return 8;
  if (strncasecmp(name, "BAR", 3) == 0) name += 3;
  if (name[0] >= '0' && name[0] <= '5' && name[1] == '\0') return name[0] - '0';
  return -1;
}

static void hexdump(const unsigned char *p, size_t n, uint64_t base) {
  for (size_t off = 0; off < n; off += 16) {
    printf("0x%08llx ", (unsigned long long)(base + off));
    for (size_t i = 0; i < 16; i++) {
      if (i % 8 == 0) putchar(' ');
      if (off + i < n) printf("%02x ", p[off + i]);
      else fputs("   ", stdout);
    }
    fputs(" |", stdout);
    for (size_t i = 0; i < 16 && off + i < n; i++) putchar(p[off + i] >= 0x20 && p[off + i] < 0x7f ? p[off + i] : '.');
    puts("|");
  }
}

static const char *attr_name(int attr) { return attr == VFB_ATTR_WC ? "WC" : "UC"; }

static const char *health_name(int h) {
  static const char *const names[] = {"unknown", "healthy", "draining", "gone"};
  return h >= 0 && h < (int)(sizeof names / sizeof names[0]) ? names[h] : "unknown";
}

static const char *backing_name(int b) {
  static const char *const names[] = {"unknown", "dmabuf", "sysfs-wc", "sysfs", "vfio-device-fd", "memfd"};
  return b >= 0 && b < (int)(sizeof names / sizeof names[0]) ? names[b] : "unknown";
}

/* Every --write/--read inside a mapping of `length` bytes: 0, or 2 (a usage error). */
static int check_ops(const struct args *a, uint64_t length) {
  for (size_t i = 0; i < a->n_ops; i++) {
    const struct op *op = &a->ops[i];
    if (op->offset > length || op->length > length - op->offset) {
      fprintf(stderr, "vfb-map: %s at 0x%llx (%zu bytes) is outside the mapping (%llu bytes); see vfb-map --help\n",
              op->write ? "--write" : "--read", (unsigned long long)op->offset, op->length, (unsigned long long)length);
      return 2;
    }
  }
  return 0;
}

/* --write/--read in order, through the mapping's address (device memory: volatile byte accesses,
 * then a full fence so that write-combined stores are flushed to the device before we go on). */
static void run_ops(const struct args *a, vfb_mapping *m) {
  volatile unsigned char *base = vfb_mapping_addr(m);
  for (size_t i = 0; i < a->n_ops; i++) {
    const struct op *op = &a->ops[i];
    if (op->write) {
      for (size_t j = 0; j < op->length; j++) base[op->offset + j] = op->data[j];
      __atomic_thread_fence(__ATOMIC_SEQ_CST);
      printf("wrote:      %zu byte(s) at 0x%llx\n", op->length, (unsigned long long)op->offset);
    } else {
      unsigned char buf[MAX_OP_BYTES];
      for (size_t j = 0; j < op->length; j++) buf[j] = base[op->offset + j];
      hexdump(buf, op->length, op->offset);
    }
  }
}

/* Holds m until a signal (0), the time is up (0), a revocation of it (3) or the session's end (1),
 * polling the session's event fd and a signalfd in one poll(2): no thread of our own. */
static int hold(vfb_session *s, vfb_mapping *m, int sigfd, long seconds) {
  puts(seconds < 0 ? "holding the mapping; SIGINT or SIGTERM releases it" : "holding the mapping; SIGINT, SIGTERM or the time releases it");
  fflush(stdout);
  struct pollfd fds[2] = {{.fd = sigfd, .events = POLLIN}, {.fd = vfb_event_fd(s), .events = POLLIN}};
  for (;;) {
    int r = poll(fds, 2, seconds < 0 ? -1 : (int)(seconds * 1000));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      perror("vfb-map: poll");
      return 1;
    }
    if (r == 0) {
      printf("released (after %ld s)\n", seconds);
      return 0;
    }
    if (fds[0].revents) {
      struct signalfd_siginfo si;
      if (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        printf("released (%s)\n", si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
        return 0;
      }
    }
    vfb_event ev;
    int got;
    while ((got = vfb_read_event(s, &ev)) == 1) {
      if (ev.kind == VFB_EVENT_REVOKED && ev.mapping == m) {
        printf("revoked: %s\n", ev.reason);
        if (ev.message[0]) fprintf(stderr, "vfb-map: %s\n", ev.message);
        return 3;
      }
      if (ev.kind == VFB_EVENT_DEVICE_HEALTH) printf("device %s health: %s\n", ev.device_id, health_name(ev.health));
      if (ev.kind == VFB_EVENT_SESSION_ENDED) {
        fprintf(stderr, "vfb-map: lost the lease to brokerd (%s%s%s); the mapping is gone, run the command again once brokerd is back\n",
                ev.reason, ev.message[0] ? ": " : "", ev.message);
        return 1;
      }
    }
    if (got < 0) {
      fprintf(stderr, "vfb-map: reading events: %s\n", vfb_strerror(got));
      return 1;
    }
  }
}

static int fail(vfb_session *s, const char *what, int err) {
  const char *detail = vfb_last_error(s);
  fprintf(stderr, "vfb-map: %s: %s (%s)%s%s\n", what, vfb_strerror(err), vfb_error_name(err), detail[0] ? ": " : "", detail);
  return 1;
}

static int map_and_report(const struct args *a, vfb_session *s, int sigfd) {
  vfb_device *d = NULL;
  vfb_mapping *m = NULL;
  vfb_region ri;
  int region = region_index(a->region), err;
  if (region < 0) return usage("region %s: use BAR0..BAR5, ROM or VGA", a->region);
  if ((err = vfb_open_device(s, a->device, &d)) != 0) return fail(s, a->device, err);
  if ((err = vfb_region_info(d, (unsigned)region, &ri)) != 0) {
    fprintf(stderr, "vfb-map: %s has no region %s (%s)\n", a->device, a->region, vfb_error_name(err));
    return 1;
  }
  if (!a->have_length && a->offset >= ri.size) {
    fprintf(stderr, "vfb-map: --offset 0x%llx is at or past the end of %s (%llu bytes)\n", (unsigned long long)a->offset, ri.name,
            (unsigned long long)ri.size);
    return 2;
  }
  uint64_t length = a->have_length ? a->length : ri.size - a->offset;
  if (check_ops(a, length) != 0) return 2;
  int attr = a->attr | (a->fallback ? VFB_ATTR_FALLBACK_UC : 0);
  if ((err = vfb_map(d, (unsigned)region, a->offset, length, attr, a->prot, &m)) != 0) return fail(s, "map", err);
  printf("session:    %s\n", vfb_session_id(s));
  printf("device:     %s (device file %llu)\n", vfb_device_id(d), (unsigned long long)vfb_device_file_id(d));
  printf("cookie:     0x%llx\n", (unsigned long long)vfb_mapping_cookie(m));
  printf("region:     %s (index %u)\n", ri.name, vfb_mapping_region(m));
  printf("offset:     0x%llx\n", (unsigned long long)vfb_mapping_offset(m));
  printf("length:     %llu\n", (unsigned long long)vfb_mapping_length(m));
  printf("attribute:  requested %s, effective %s\n", attr_name(a->attr), attr_name(vfb_mapping_attr(m)));
  printf("backing:    %s (prot %s)\n", backing_name(vfb_mapping_backing(m)), vfb_mapping_prot(m) == VFB_PROT_RW ? "rw" : "r");
  run_ops(a, m);
  int code = a->hold ? hold(s, m, sigfd, a->hold_seconds) : 0;
  fflush(stdout);
  /* Released in brokerd and munmapped; after a revocation this is the release brokerd waits for. */
  if ((err = vfb_unmap(m)) != 0 && err != VFB_E_SESSION_ENDED && err != VFB_E_CLOSED && code == 0) code = fail(s, "unmap", err);
  return code;
}

int main(int argc, char **argv) {
  struct args *a = calloc(1, sizeof *a);
  if (!a) return 1;
  int code = parse_args(argc, argv, a);
  if (code) {
    free(a);
    return code;
  }
  /* SIGINT/SIGTERM become readable on a signalfd polled with the session's events: blocked from
   * here on, so one that comes while we map is not lost. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigprocmask(SIG_BLOCK, &sigs, NULL);
  int sigfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) {
    perror("vfb-map: signalfd");
    free(a);
    return 1;
  }
  char why[512] = "";
  vfb_connect_options opts = {.struct_size = sizeof opts, .broker_socket = a->socket, .client_name = "vfb-map",
                              .error_message = why, .error_message_size = sizeof why};
  vfb_session *s = NULL;
  int err = vfb_connect_ex(&opts, &s);
  if (err != 0) {
    fprintf(stderr, "vfb-map: connect: %s (%s)%s%s\n", vfb_strerror(err), vfb_error_name(err), why[0] ? ": " : "", why);
    code = 1;
  } else {
    code = map_and_report(a, s, sigfd);
    vfb_disconnect(s); /* frees the device too; brokerd releases whatever is left */
  }
  close(sigfd);
  free(a);
  return code;
}

/* e2e.c: a test tool, not an example: the session API against a real brokerd, driven by
 * test/clib/clib.test.ts (which starts brokerd, runs this as uid 65534, reads its lines and acts on
 * brokerd between steps: a gRPC ReadRegion, an admin RevokeMapping, a restart, a kill). Usage:
 * vfb-e2e SCENARIO BROKER_SOCKET, SCENARIO one of flow, faults, revoke, restart, killed, threads.
 * It prints one line per step ("key value ..."), waits for a line on stdin where the test acts,
 * and exits 0 when every step went as the scenario expects (each failure is printed as "FAIL ...");
 * its last line is "N passed, M failed", counting its checks.
 * Built with the library's sources under ASan + UBSan. */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vfio-broker.h"

static int failures, passes;
#define EXPECT(cond, ...)                          \
  do {                                             \
    if (cond) {                                    \
      passes++;                                    \
    } else {                                       \
      printf("FAIL %d %s: ", __LINE__, #cond);     \
      printf(__VA_ARGS__);                         \
      printf("\n");                                \
      fflush(stdout);                              \
      failures++;                                  \
    }                                              \
  } while (0)

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1;
}

/* Waits for the test's line on stdin (it acted on brokerd). */
static void await(const char *what) {
  printf("await %s\n", what);
  fflush(stdout);
  char line[64];
  if (fgets(line, sizeof line, stdin) == NULL) exit(3);
}

static const char *SOCK;

static vfb_session *connect_or_die(void) {
  vfb_session *s = NULL;
  int rc = vfb_connect(SOCK, &s);
  if (rc != VFB_OK) {
    printf("FAIL connect %s\n", vfb_error_name(rc));
    exit(1);
  }
  printf("session %s\n", vfb_session_id(s));
  return s;
}

/* Waits (up to 30 s) until the event fd polls readable, then reads one event. */
static int next_event(vfb_session *s, vfb_event *ev) {
  for (int i = 0; i < 300; i++) {
    int rc = vfb_read_event(s, ev);
    if (rc != 0) return rc;
    struct pollfd p = {.fd = vfb_event_fd(s), .events = POLLIN, .revents = 0};
    poll(&p, 1, 100);
  }
  return 0;
}

/* 1 if addr is inaccessible: the kernel refuses to read it (EFAULT) instead of faulting us. */
static int inaccessible(const void *addr) {
  int p[2];
  if (pipe(p) < 0) return 0;
  ssize_t n = write(p[1], addr, 1);
  int e = errno;
  close(p[0]);
  close(p[1]);
  return n < 0 && e == EFAULT;
}

/* The permissions /proc/self/maps gives the mapping that starts at addr ("---p"), or "". */
static void perms_of(const void *addr, char out[8]) {
  out[0] = '\0';
  FILE *f = fopen("/proc/self/maps", "re");
  if (f == NULL) return;
  char line[512];
  while (fgets(line, sizeof line, f) != NULL) {
    unsigned long lo, hi;
    char p[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, p) == 3 && lo <= (unsigned long)addr && (unsigned long)addr < hi) {
      strcpy(out, p);
      break;
    }
  }
  fclose(f);
}

static void flow(void) {
  int before = count_fds();
  vfb_session *s = connect_or_die();
  vfb_identity id;
  vfb_session_identity(s, &id);
  printf("hello uid=%u pid=%u page=%llu resumed=%d token=%zu\n", id.uid, id.pid,
         (unsigned long long)vfb_page_size(s), vfb_session_resumed(s), strlen(vfb_resume_token(s)));
  vfb_device_list *l = NULL;
  EXPECT(vfb_list_devices(s, &l) == VFB_OK, "%s", vfb_last_error(s));
  printf("devices");
  for (size_t i = 0; i < vfb_device_list_count(l); i++) printf(" %s", vfb_device_list_id(l, i));
  printf("\n");
  vfb_device_list_free(l);
  vfb_device *d = NULL;
  EXPECT(vfb_open_device(s, "sim0", &d) == VFB_OK, "%s", vfb_last_error(s));
  if (d == NULL) exit(1);
  vfb_region bar2, bar0;
  EXPECT(vfb_region_info(d, 2, &bar2) == VFB_OK, "bar2");
  EXPECT(vfb_region_info(d, 0, &bar0) == VFB_OK, "bar0");
  printf("regions n=%u bar2name=%s bar2size=%llu bar2attrs=%d bar0attrs=%d\n", vfb_region_count(d), bar2.name,
         (unsigned long long)bar2.size, bar2.attributes, bar0.attributes);
  uint64_t page = vfb_page_size(s);
  vfb_mapping *m = NULL;
  EXPECT(vfb_map(d, 2, 3 * page, page, VFB_ATTR_WC, VFB_PROT_RW, &m) == VFB_OK, "%s", vfb_last_error(s));
  if (m == NULL) exit(1);
  static const unsigned char pattern[8] = {0xca, 0xfe, 0xf0, 0x0d, 0x0b, 0xad, 0xc0, 0xde};
  memcpy((unsigned char *)vfb_mapping_addr(m) + 0x100, pattern, sizeof pattern);
  printf("mapped df=%llu cookie=%llu attr=%d backing=%d region=%u offset=%llu length=%llu status=%d\n",
         (unsigned long long)vfb_device_file_id(d), (unsigned long long)vfb_mapping_cookie(m), vfb_mapping_attr(m),
         vfb_mapping_backing(m), vfb_mapping_region(m), (unsigned long long)vfb_mapping_offset(m),
         (unsigned long long)vfb_mapping_length(m), vfb_mapping_status(m));
  await("readback");
  EXPECT(vfb_unmap(m) == VFB_OK, "%s", vfb_last_error(s));
  /* Several ranges in one exchange, and their release in one. */
  vfb_range rs[3] = {{2, 0, page, VFB_ATTR_WC, VFB_PROT_RW},
                     {2, 8 * page, 2 * page, VFB_ATTR_WC, VFB_PROT_READ},
                     {0, 0, page, VFB_ATTR_UC, VFB_PROT_RW}};
  vfb_mapping *ms[3];
  int rc = vfb_map_many(d, rs, 3, ms);
  EXPECT(rc == VFB_OK, "%s %s", vfb_error_name(rc), vfb_last_error(s));
  if (rc == VFB_OK) {
    ((volatile unsigned char *)vfb_mapping_addr(ms[0]))[0] = 0x5a;
    printf("many attrs=%d,%d,%d prots=%d,%d,%d\n", vfb_mapping_attr(ms[0]), vfb_mapping_attr(ms[1]),
           vfb_mapping_attr(ms[2]), vfb_mapping_prot(ms[0]), vfb_mapping_prot(ms[1]), vfb_mapping_prot(ms[2]));
    EXPECT(vfb_unmap_many(ms, 3) == VFB_OK, "%s", vfb_last_error(s));
  }
  await("none-mapped");
  EXPECT(vfb_close_device(d) == VFB_OK, "%s", vfb_last_error(s));
  /* Disconnect with a device open and a page mapped: brokerd must free it at once. */
  EXPECT(vfb_open_device(s, "sim0", &d) == VFB_OK, "%s", vfb_last_error(s));
  m = NULL;
  if (d != NULL) EXPECT(vfb_map(d, 2, 4 * page, page, VFB_ATTR_WC, VFB_PROT_RW, &m) == VFB_OK, "%s", vfb_last_error(s));
  vfb_disconnect(s);
  await("disconnected");
  printf("fds before=%d after=%d\n", before, count_fds());
}

/* One fault: prints "fault NAME CODE FDS_BEFORE FDS_AFTER MESSAGE". */
static void fault(const char *name, int rc, int want, int before, const char *message) {
  EXPECT(rc == want, "%s: %s, not %s", name, vfb_error_name(rc), vfb_error_name(want));
  EXPECT(count_fds() == before, "%s left an fd open", name);
  printf("fault %s %s %d %d %s\n", name, vfb_error_name(rc), before, count_fds(), message);
  fflush(stdout);
}

static void faults(void) {
  int before = count_fds();
  char msg[512] = "";
  vfb_connect_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.broker_socket = "/nonexistent-vfb-test/broker.sock";
  o.error_message = msg;
  o.error_message_size = sizeof msg;
  vfb_session *none = NULL;
  int rc = vfb_connect_ex(&o, &none);
  fault("not-running", rc, VFB_E_CONNECT, before, msg);
  EXPECT(none == NULL, "connect failure leaves *out NULL");

  vfb_session *s = connect_or_die();
  uint64_t page = vfb_page_size(s);
  vfb_device *d = NULL;
  before = count_fds();
  rc = vfb_open_device(s, "nope0", &d);
  fault("unknown-device", rc, VFB_E_UNKNOWN_DEVICE, before, vfb_last_error(s));
  before = count_fds();
  rc = vfb_open_device(s, "sim1", &d);
  fault("permission", rc, VFB_E_PERMISSION, before, vfb_last_error(s));
  if (d != NULL) vfb_close_device(d);
  EXPECT(vfb_open_device(s, "sim0", &d) == VFB_OK, "%s", vfb_last_error(s));
  if (d == NULL) exit(1);
  vfb_mapping *m = NULL;
  struct {
    const char *name;
    unsigned region;
    uint64_t offset, length;
    int attr, want;
  } cases[] = {
      {"unaligned", 2, 100, page, VFB_ATTR_WC, VFB_E_UNALIGNED},
      {"wc-on-uc-only", 0, 0, page, VFB_ATTR_WC, VFB_E_WC_UNAVAILABLE},
      {"no-such-region", 5, 0, page, VFB_ATTR_UC, VFB_E_NO_SUCH_REGION},
      {"unmappable-region", 7, 0, page, VFB_ATTR_UC, VFB_E_NO_SUCH_REGION},
      {"out-of-range", 2, 16 << 20, page, VFB_ATTR_WC, VFB_E_OUT_OF_RANGE},
      {"quota", 2, 0, 16 << 20, VFB_ATTR_WC, VFB_E_QUOTA},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    before = count_fds();
    rc = vfb_map(d, cases[i].region, cases[i].offset, cases[i].length, cases[i].attr, VFB_PROT_RW, &m);
    fault(cases[i].name, rc, cases[i].want, before, vfb_last_error(s));
    EXPECT(m == NULL, "%s leaves *out NULL", cases[i].name);
    if (m != NULL) vfb_unmap(m);
  }
  /* WC on a UC-only region with the fallback flag: granted, UC. */
  rc = vfb_map(d, 0, 0, page, VFB_ATTR_WC | VFB_ATTR_FALLBACK_UC, VFB_PROT_RW, &m);
  EXPECT(rc == VFB_OK && vfb_mapping_attr(m) == VFB_ATTR_UC, "fallback: %s", vfb_last_error(s));
  printf("fallback %s attr=%d\n", vfb_error_name(rc), vfb_mapping_attr(m));
  if (m != NULL) vfb_unmap(m);
  /* A batch with one item over the quota: nothing mapped, the granted one released. */
  vfb_range rs[2] = {{2, 0, page, VFB_ATTR_WC, VFB_PROT_RW}, {2, page, 16 << 20, VFB_ATTR_WC, VFB_PROT_RW}};
  rs[1].length = (16 << 20) - page;
  vfb_mapping *ms[2] = {NULL, NULL};
  before = count_fds();
  rc = vfb_map_many(d, rs, 2, ms);
  fault("batch-quota", rc, VFB_E_QUOTA, before, vfb_last_error(s));
  EXPECT(ms[0] == NULL && ms[1] == NULL, "a refused batch maps nothing");
  await("batch-undone");
  EXPECT(vfb_close_device(d) == VFB_OK, "%s", vfb_last_error(s));
  vfb_disconnect(s);
}

static void revoked(void) {
  int before = count_fds();
  vfb_session *s = connect_or_die();
  vfb_device *d = NULL;
  EXPECT(vfb_open_device(s, "sim0", &d) == VFB_OK, "%s", vfb_last_error(s));
  if (d == NULL) exit(1);
  vfb_mapping *m = NULL;
  EXPECT(vfb_map(d, 2, 0, vfb_page_size(s), VFB_ATTR_WC, VFB_PROT_RW, &m) == VFB_OK, "%s", vfb_last_error(s));
  if (m == NULL) exit(1);
  void *addr = vfb_mapping_addr(m);
  ((volatile char *)addr)[0] = 1;
  char perms[8];
  perms_of(addr, perms);
  printf("mapped df=%llu cookie=%llu perms=%s\n", (unsigned long long)vfb_device_file_id(d),
         (unsigned long long)vfb_mapping_cookie(m), perms);
  fflush(stdout);
  vfb_event ev;
  int rc = next_event(s, &ev);
  EXPECT(rc == 1, "an event within 30 s: %d", rc);
  perms_of(addr, perms);
  printf("event kind=%d reason=%s mine=%d cookie=%llu device=%s status=%s perms=%s inaccessible=%d message=%s\n",
         ev.kind, ev.reason, ev.mapping == m, (unsigned long long)ev.cookie, ev.device_id,
         vfb_error_name(vfb_mapping_status(m)), perms, inaccessible(addr), ev.message);
  EXPECT(vfb_unmap(m) == VFB_OK, "%s", vfb_last_error(s));
  EXPECT(vfb_read_event(s, &ev) == 0, "nothing more");
  vfb_disconnect(s);
  printf("fds before=%d after=%d\n", before, count_fds());
}

static void restarted(void) {
  int before = count_fds();
  vfb_session *s = connect_or_die();
  vfb_device *d = NULL;
  EXPECT(vfb_open_device(s, "sim0", &d) == VFB_OK, "%s", vfb_last_error(s));
  if (d == NULL) exit(1);
  vfb_mapping *m = NULL;
  uint64_t page = vfb_page_size(s);
  EXPECT(vfb_map(d, 2, 5 * page, page, VFB_ATTR_WC, VFB_PROT_RW, &m) == VFB_OK, "%s", vfb_last_error(s));
  if (m == NULL) exit(1);
  unsigned char *p = vfb_mapping_addr(m);
  memcpy(p, "before", 6);
  printf("mapped session=%s\n", vfb_session_id(s));
  await("restarted");
  vfb_event ev;
  int rc = next_event(s, &ev);
  printf("event %d kind=%d reason=%s\n", rc, ev.kind, ev.reason);
  vfb_device_list *l = NULL;
  rc = vfb_list_devices(s, &l);
  printf("call %s %s\n", vfb_error_name(rc), vfb_last_error(s));
  char perms[8];
  perms_of(p, perms);
  printf("status %s %s\n", vfb_error_name(vfb_mapping_status(m)), perms); /* down: said so, left mapped */
  for (int i = 0; i < 300 && (rc = vfb_resume(s)) == VFB_E_CONNECT; i++) usleep(100000);
  printf("resume rc=%s resumed=%d session=%s status=%s\n", vfb_error_name(rc), vfb_session_resumed(s),
         vfb_session_id(s), vfb_error_name(vfb_mapping_status(m)));
  memcpy(p, "resumed", 7);
  EXPECT(vfb_list_devices(s, &l) == VFB_OK, "%s", vfb_last_error(s));
  vfb_device_list_free(l);
  await("readback");
  EXPECT(vfb_unmap(m) == VFB_OK, "%s", vfb_last_error(s));
  vfb_disconnect(s);
  printf("fds before=%d after=%d\n", before, count_fds());
}

static void killed(void) {
  int before = count_fds();
  vfb_session *s = connect_or_die();
  vfb_device *d = NULL;
  EXPECT(vfb_open_device(s, "sim0", &d) == VFB_OK, "%s", vfb_last_error(s));
  vfb_mapping *m = NULL;
  if (d != NULL) vfb_map(d, 2, 0, vfb_page_size(s), VFB_ATTR_WC, VFB_PROT_RW, &m);
  await("killed");
  vfb_device_list *l = NULL;
  int rc = vfb_list_devices(s, &l);
  printf("call %s %s\n", vfb_error_name(rc), vfb_last_error(s));
  vfb_event ev;
  rc = vfb_read_event(s, &ev);
  printf("event %d kind=%d reason=%s\n", rc, ev.kind, ev.reason);
  if (m != NULL) {
    char perms[8];
    perms_of(vfb_mapping_addr(m), perms);
    printf("status %s %s\n", vfb_error_name(vfb_mapping_status(m)), perms);
  }
  rc = vfb_resume(s);
  printf("resume %s\n", vfb_error_name(rc));
  if (m != NULL) printf("unmap %s\n", vfb_error_name(vfb_unmap(m)));
  vfb_disconnect(s);
  printf("fds before=%d after=%d\n", before, count_fds());
}

/* brokerd hung (SIGSTOPped): a call times out and the library closes the connection; once brokerd
 * runs again it has ended the session (its connection closed), and vfb_resume says so truthfully. */
static void hung(void) {
  int before = count_fds();
  vfb_connect_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.broker_socket = SOCK;
  o.timeout_ms = 500;
  vfb_session *s = NULL;
  if (vfb_connect_ex(&o, &s) != VFB_OK) exit(1);
  vfb_device *d = NULL;
  EXPECT(vfb_open_device(s, "sim0", &d) == VFB_OK, "%s", vfb_last_error(s));
  vfb_mapping *m = NULL;
  if (d != NULL) vfb_map(d, 2, 0, vfb_page_size(s), VFB_ATTR_WC, VFB_PROT_RW, &m);
  await("stopped");
  vfb_device_list *l = NULL;
  int rc = vfb_list_devices(s, &l);
  printf("call %s\n", vfb_error_name(rc));
  if (m != NULL) printf("status %s\n", vfb_error_name(vfb_mapping_status(m)));
  await("continued");
  rc = vfb_resume(s);
  for (int i = 0; i < 50 && rc == VFB_E_TIMEOUT; i++) rc = vfb_resume(s); /* until brokerd catches up */
  printf("resume %s %s\n", vfb_error_name(rc), vfb_last_error(s));
  vfb_disconnect(s);
  printf("fds before=%d after=%d\n", before, count_fds());
}

/* Two sessions, one per thread, at once: each maps, writes, reads back and unmaps 50 times. */
static void *worker(void *arg) {
  long n = (long)arg;
  vfb_session *s = NULL;
  if (vfb_connect(SOCK, &s) != VFB_OK) return (void *)1;
  vfb_device *d = NULL;
  long bad = 0;
  if (vfb_open_device(s, "sim0", &d) != VFB_OK) bad++;
  uint64_t page = vfb_page_size(s);
  for (int i = 0; i < 50 && bad == 0; i++) {
    vfb_mapping *m = NULL;
    if (vfb_map(d, 2, (uint64_t)(64 + n) * page, page, VFB_ATTR_WC, VFB_PROT_RW, &m) != VFB_OK) {
      bad++;
      break;
    }
    volatile long *x = vfb_mapping_addr(m);
    *x = n * 1000 + i;
    if (*x != n * 1000 + i) bad++;
    if (vfb_unmap(m) != VFB_OK) bad++;
  }
  vfb_disconnect(s);
  return (void *)bad;
}

static void threads(void) {
  int before = count_fds();
  pthread_t t[2];
  for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, (void *)i);
  long bad = 0;
  for (int i = 0; i < 2; i++) {
    void *r;
    pthread_join(t[i], &r);
    bad += (long)r;
  }
  EXPECT(bad == 0, "%ld failures in the threads", bad);
  printf("threads bad=%ld\nfds before=%d after=%d\n", bad, before, count_fds());
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: vfb-e2e flow|faults|revoke|restart|killed|hung|threads BROKER_SOCKET\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  SOCK = argv[2];
  const char *c = argv[1];
  if (strcmp(c, "flow") == 0) flow();
  else if (strcmp(c, "faults") == 0) faults();
  else if (strcmp(c, "revoke") == 0) revoked();
  else if (strcmp(c, "restart") == 0) restarted();
  else if (strcmp(c, "killed") == 0) killed();
  else if (strcmp(c, "hung") == 0) hung();
  else if (strcmp(c, "threads") == 0) threads();
  else return 2;
  printf("%d passed, %d failed\n", passes, failures);
  return failures == 0 ? 0 : 1;
}

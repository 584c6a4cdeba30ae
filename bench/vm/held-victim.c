/* held-victim.c: the victim of bench/vm/held.sh, on libvfio-broker's public API only (vfio-broker.h):
 * one session (vfb_connect + vfb_open_device), then N grants, each timed: map 4 KiB WC of region 2,
 * write a pattern, read it back through the mapping, unmap (the release awaited). Prints one JSON
 * line: grants done, how many read back what was written, p50/p99/max in µs. Exit 1 on any error.
 * It never starts brokerd or judges a figure.
 *   held-victim SOCKET DEVICE N */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <vfio-broker.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SOCKET DEVICE N\n", argv[0]);
    return 2;
  }
  long n = atol(argv[3]);
  if (n < 1 || n > 100000) return 2;
  vfb_session *s;
  vfb_device *d;
  double t0 = now_us();
  int rc = vfb_connect(argv[1], &s);
  if (rc != 0) {
    fprintf(stderr, "held-victim: vfb_connect: %s\n", vfb_strerror(rc));
    return 1;
  }
  rc = vfb_open_device(s, argv[2], &d);
  if (rc != 0) {
    fprintf(stderr, "held-victim: vfb_open_device: %s: %s\n", vfb_strerror(rc), vfb_last_error(s));
    return 1;
  }
  double open_us = now_us() - t0;
  double *us = malloc(sizeof(double) * (size_t)n);
  if (!us) return 1;
  long verified = 0;
  for (long i = 0; i < n; i++) {
    double a = now_us();
    vfb_mapping *m;
    rc = vfb_map(d, 2, 0, 4096, VFB_ATTR_WC, VFB_PROT_RW, &m);
    if (rc != 0) {
      fprintf(stderr, "held-victim: vfb_map %ld: %s: %s\n", i, vfb_strerror(rc), vfb_last_error(s));
      return 1;
    }
    volatile uint32_t *p = vfb_mapping_addr(m);
    uint32_t want = 0x48454c44u ^ (uint32_t)i; /* "HELD" */
    p[i & 1023] = want;
    if (p[i & 1023] == want) verified++;
    rc = vfb_unmap(m);
    if (rc != 0) {
      fprintf(stderr, "held-victim: vfb_unmap %ld: %s: %s\n", i, vfb_strerror(rc), vfb_last_error(s));
      return 1;
    }
    us[i] = now_us() - a;
  }
  qsort(us, (size_t)n, sizeof *us, cmp);
  printf("{\"grants\":%ld,\"verified\":%ld,\"openUs\":%.0f,\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}\n", n,
         verified, open_us, us[n / 2], us[(long)((double)n * 0.99)], us[n - 1]);
  free(us);
  vfb_close_device(d);
  vfb_disconnect(s);
  return verified == n ? 0 : 1;
}

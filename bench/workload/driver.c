/* driver.c: the workload benchmarks' client programs (bench/workload/workload.ts runs them), over a
 * backend (backend.h): the library's public API or raw frames. It owns timing, the sessions'
 * processes and threads, and printing one JSON line per run; it never starts brokerd or decides a
 * goal.
 *   latency SOCKET N [PID]    one session, N grants timed one by one (after N/10+100 of warm-up);
 *                             PID: the server, whose CPU over the N grants is given
 *   tput SOCKET P T SECONDS [PID]   P processes x T threads, one session each, granting in a loop
 *                             for SECONDS after a common start (a line on stdin once "ready" is
 *                             printed); PID: brokerd, whose CPU (utime+stime) over the run is given
 *   idle SOCKET N             N sessions (hello + one device open, nothing mapped), held until stdin
 *                             closes; prints "ready N" once they are all open */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"

#define DEVICE "sim0"
#define HIST_US 100000 /* 1 µs buckets up to 100 ms, then one overflow bucket */

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void raise_nofile(rlim_t want) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < want) {
    r.rlim_cur = want;
    if (r.rlim_max < want) r.rlim_max = want;
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) perror("setrlimit(RLIMIT_NOFILE)");
  }
}

static double cpu_s(long pid);

static int latency(const char *sock, long n, long pid) {
  bk_session *s;
  if (bk_open(sock, DEVICE, &s) < 0) return 1;
  double *us = malloc(sizeof(double) * (size_t)n);
  if (!us) return 1;
  long warm = n / 10 + 100;
  double t0 = 0, cpu0 = 0;
  for (long i = -warm; i < n; i++) {
    if (i == 0) cpu0 = cpu_s(pid);
    double a = now_us();
    if (i == 0) t0 = a;
    if (bk_grant(s, (unsigned)i) < 0) return 1;
    if (i >= 0) us[i] = now_us() - a;
  }
  double total = now_us() - t0, cpu = cpu_s(pid) - cpu0;
  qsort(us, (size_t)n, sizeof *us, cmp_double);
  printf("{\"client\":\"%s\",\"n\":%ld,\"p50\":%.2f,\"p99\":%.2f,\"mean\":%.2f,\"serverCpuUs\":%.2f}\n",
         bk_name, n, us[n / 2], us[(long)((double)n * 0.99)], total / (double)n, cpu * 1e6 / (double)n);
  bk_close(s);
  free(us);
  return 0;
}

/* Shared between the tput processes (MAP_SHARED before fork). */
struct shared {
  double deadline_us;
  unsigned long grants;
  unsigned long failures;
  unsigned hist[HIST_US + 1];
};
static struct shared *sh;

struct worker {
  bk_session *s;
  int go; /* read end: one byte each to start */
  pthread_t t;
};

static void *run(void *arg) {
  struct worker *w = arg;
  char b;
  if (read(w->go, &b, 1) != 1) return NULL;
  unsigned long n = 0;
  for (unsigned i = 0;; i++) {
    double a = now_us();
    if (a >= sh->deadline_us) break;
    if (bk_grant(w->s, i) < 0) {
      __atomic_fetch_add(&sh->failures, 1, __ATOMIC_RELAXED);
      break;
    }
    double d = now_us() - a;
    unsigned k = d >= HIST_US ? HIST_US : (unsigned)d;
    __atomic_fetch_add(&sh->hist[k], 1, __ATOMIC_RELAXED);
    n++;
  }
  __atomic_fetch_add(&sh->grants, n, __ATOMIC_RELAXED);
  return NULL;
}

/* One process's T sessions: opened, then ready (a byte on `ready`), then run on the go pipe. */
static int child(const char *sock, int threads, int ready, int go) {
  struct worker *ws = calloc((size_t)threads, sizeof *ws);
  if (!ws) return 1;
  for (int i = 0; i < threads; i++) {
    ws[i].go = go;
    if (bk_open(sock, DEVICE, &ws[i].s) < 0) return 1;
  }
  for (int i = 0; i < threads; i++)
    if (pthread_create(&ws[i].t, NULL, run, &ws[i]) != 0) return 1;
  if (write(ready, "r", 1) != 1) return 1;
  for (int i = 0; i < threads; i++) pthread_join(ws[i].t, NULL);
  for (int i = 0; i < threads; i++) bk_close(ws[i].s);
  free(ws);
  return 0;
}

static double cpu_s(long pid) {
  if (pid <= 0) return 0;
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  unsigned long ut = 0, st = 0;
  /* after ") ": state(3) ... utime is field 14, stime 15 */
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double pct(double q, unsigned long total) {
  unsigned long want = (unsigned long)((double)total * q), seen = 0;
  for (unsigned k = 0; k <= HIST_US; k++) {
    seen += sh->hist[k];
    if (seen > want) return (double)k + 0.5;
  }
  return HIST_US;
}

static int tput(const char *sock, int procs, int threads, double seconds, long pid) {
  sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) return 1;
  int ready[2], go[2];
  if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0) return 1;
  for (int p = 0; p < procs; p++) {
    pid_t c = fork();
    if (c < 0) return 1;
    if (c == 0) {
      close(ready[0]);
      close(go[1]);
      _exit(child(sock, threads, ready[1], go[0]));
    }
  }
  close(ready[1]);
  close(go[0]);
  for (int p = 0; p < procs; p++) {
    char b;
    if (read(ready[0], &b, 1) != 1) {
      fprintf(stderr, "tput: a client process failed to open its sessions\n");
      return 1;
    }
  }
  printf("ready\n");
  fflush(stdout);
  char line[16];
  if (!fgets(line, sizeof line, stdin)) return 1;
  double cpu0 = cpu_s(pid), t0 = now_us();
  sh->deadline_us = t0 + seconds * 1e6;
  for (int i = 0; i < procs * threads; i++)
    if (write(go[1], "g", 1) != 1) return 1;
  int failed = 0;
  struct rusage ru = {0};
  double ccpu = 0;
  for (int p = 0; p < procs; p++) {
    int st;
    if (wait4(-1, &st, 0, &ru) < 0) return 1;
    ccpu += (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
            ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
  }
  double wall = (now_us() - t0) / 1e6, cpu = cpu_s(pid) - cpu0;
  unsigned long g = sh->grants;
  printf("{\"client\":\"%s\",\"sessions\":%d,\"seconds\":%.3f,\"grants\":%lu,\"perS\":%.1f,\"p50\":%.1f,"
         "\"p99\":%.1f,\"serverCpuS\":%.3f,\"clientCpuS\":%.3f,\"failures\":%lu,\"failedProcs\":%d}\n",
         bk_name, procs * threads, wall, g, (double)g / wall, pct(0.5, g), pct(0.99, g), cpu, ccpu,
         sh->failures, failed);
  return failed || sh->failures ? 1 : 0;
}

static int idle(const char *sock, long n) {
  raise_nofile((rlim_t)n + 256);
  bk_session **ss = calloc((size_t)n, sizeof *ss);
  if (!ss) return 1;
  double t0 = now_us();
  for (long i = 0; i < n; i++)
    if (bk_open(sock, DEVICE, &ss[i]) < 0) {
      fprintf(stderr, "idle: session %ld of %ld failed\n", i + 1, n);
      return 1;
    }
  printf("ready %ld %.1f\n", n, (now_us() - t0) / 1e3);
  fflush(stdout);
  char line[16];
  while (fgets(line, sizeof line, stdin)) {
  }
  for (long i = 0; i < n; i++) bk_close(ss[i]);
  free(ss);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "latency") == 0)
    return latency(argv[2], atol(argv[3]), argc > 4 ? atol(argv[4]) : 0);
  if (argc >= 6 && strcmp(argv[1], "tput") == 0)
    return tput(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), argc > 6 ? atol(argv[6]) : 0);
  if (argc >= 4 && strcmp(argv[1], "idle") == 0) return idle(argv[2], atol(argv[3]));
  fprintf(stderr, "usage: %s latency SOCKET N [PID] | tput SOCKET P T SECONDS [PID] | idle SOCKET N\n", argv[0]);
  return 2;
}

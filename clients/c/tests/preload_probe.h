/* preload_probe.h: what the preload probe's two files share (tests/preload_probe.c: main and the
 * local scenario; tests/preload_flow.c: the scenarios against brokerd): the check macro, the step
 * helpers and the BAR files' paths. It owns no scenario. */
#ifndef VFB_PRELOAD_PROBE_H
#define VFB_PRELOAD_PROBE_H

#include <stdio.h>

extern int failures, passes;
#define EXPECT(cond, ...)                      \
  do {                                         \
    if (cond) {                                \
      passes++;                                \
    } else {                                   \
      printf("FAIL %d %s: ", __LINE__, #cond); \
      printf(__VA_ARGS__);                     \
      printf("\n");                            \
      fflush(stdout);                          \
      failures++;                              \
    }                                          \
  } while (0)

extern long PAGE;
extern char BAR2[128], BAR2WC[128], BAR0[128];
/* Entries of /proc/self/fd, the directory's own excluded. */
int count_fds(void);
/* Prints "await WHAT" and waits for the test's line on stdin. */
void await(const char *what);
/* Fills BAR2, BAR2WC, BAR0 for device bdf under /sys/bus/pci/devices. */
void paths(const char *bdf);
/* The closing line; the exit status. */
int finish(void);

int scenario_flow(const char *self, const char *bdf, const char *denied);
int scenario_self(const char *bdf);

#endif

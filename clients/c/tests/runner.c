/* runner.c: runs every C test of libvfio-broker and ends with one line, "N passed, M failed" (the
 * Node test test/c-library.test.ts asserts it). Each test runs in this process; a test fails if a
 * CHECK fails or if it leaves more fds open than it found (/proc/self/fd). Usage: vfb-tests [filter]
 * runs the tests whose name contains filter. Exit status 0 only if nothing failed. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "runner.h"

int vfb_test_failed_checks;

int vfb_test_count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the DIR's own fd */
}

static const vfb_test *const suites[] = {vfb_frame_tests, vfb_error_tests, vfb_proto_tests,
                                         vfb_fdchannel_tests, vfb_paths_tests, vfb_session_tests,
                                         vfb_lifecycle_tests};

int main(int argc, char **argv) {
  const char *filter = argc > 1 ? argv[1] : NULL;
  int passed = 0, failed = 0;
  /* SIGPIPE stays at its default: the codec must not raise it (MSG_NOSIGNAL), a test proves it. */
  for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
    for (const vfb_test *t = suites[s]; t->name != NULL; t++) {
      if (filter != NULL && strstr(t->name, filter) == NULL) continue;
      int before = vfb_test_count_fds();
      vfb_test_failed_checks = 0;
      t->fn();
      int after = vfb_test_count_fds();
      if (after != before) {
        fprintf(stderr, "    fd leak: %d fds before, %d after\n", before, after);
        vfb_test_failed_checks++;
      }
      if (vfb_test_failed_checks == 0) {
        passed++;
        printf("ok   %s\n", t->name);
      } else {
        failed++;
        printf("FAIL %s\n", t->name);
      }
      fflush(stdout);
    }
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 && passed > 0 ? 0 : 1;
}

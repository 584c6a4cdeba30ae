/* runner.h: the C tests' little harness (tests/runner.c). A test is a void function registered in
 * runner.c's table; CHECK records a failure and goes on, REQUIRE records it and returns. The runner
 * counts /proc/self/fd around every test and fails one that leaves an fd behind. It owns no test. */
#ifndef VFB_TEST_RUNNER_H
#define VFB_TEST_RUNNER_H

#include <stdio.h>

extern int vfb_test_failed_checks;

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      fprintf(stderr, "    %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
      vfb_test_failed_checks++;                                                       \
    }                                                                                 \
  } while (0)

#define CHECK_EQ(a, b)                                                                        \
  do {                                                                                        \
    long long va_ = (long long)(a), vb_ = (long long)(b);                                     \
    if (va_ != vb_) {                                                                         \
      fprintf(stderr, "    %s:%d: check failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__, \
              #a, #b, va_, vb_);                                                              \
      vfb_test_failed_checks++;                                                               \
    }                                                                                         \
  } while (0)

#define REQUIRE(cond)                                                                 \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      fprintf(stderr, "    %s:%d: required: %s\n", __FILE__, __LINE__, #cond);        \
      vfb_test_failed_checks++;                                                       \
      return;                                                                         \
    }                                                                                 \
  } while (0)

/* How many fds this process holds now (entries of /proc/self/fd, the directory's own excluded). */
int vfb_test_count_fds(void);

/* Each test file's table. */
typedef struct {
  const char *name;
  void (*fn)(void);
} vfb_test;

extern const vfb_test vfb_frame_tests[];
extern const vfb_test vfb_error_tests[];
extern const vfb_test vfb_proto_tests[];
extern const vfb_test vfb_fdchannel_tests[];
extern const vfb_test vfb_paths_tests[];
extern const vfb_test vfb_session_tests[];
extern const vfb_test vfb_lifecycle_tests[];

#endif

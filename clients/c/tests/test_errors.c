/* test_errors.c: every error code has its own name and a message (vfb_strerror, vfb_error_name),
 * and an unknown code gets the generic ones. */
#include <string.h>

#include "runner.h"
#include "vfio-broker.h"

static const int codes[] = {
    VFB_OK, VFB_E_INVALID_ARGUMENT, VFB_E_NO_MEMORY, VFB_E_IO, VFB_E_CONNECT, VFB_E_CLOSED,
    VFB_E_TIMEOUT, VFB_E_FRAME_TOO_LARGE, VFB_E_FRAME_TRUNCATED, VFB_E_UNEXPECTED_FDS,
    VFB_E_FDS_LOST, VFB_E_PROTOCOL, VFB_E_UNKNOWN_TICKET, VFB_E_EXPIRED, VFB_E_ALREADY_USED,
    VFB_E_WRONG_PEER, VFB_E_REVOKED, VFB_E_INTERNAL, VFB_E_BAD_REQUEST, VFB_E_BUSY, VFB_E_REFUSED,
    VFB_E_UNDELIVERABLE, VFB_E_UNKNOWN_DEVICE, VFB_E_UNALIGNED, VFB_E_WC_UNAVAILABLE,
    VFB_E_NO_SUCH_REGION, VFB_E_OUT_OF_RANGE, VFB_E_RESTARTED, VFB_E_MAPPING_REVOKED, VFB_E_QUOTA,
    VFB_E_PERMISSION, VFB_E_NOT_FOUND, VFB_E_CONFLICT, VFB_E_UNAVAILABLE, VFB_E_REJECTED,
    VFB_E_SESSION_ENDED, VFB_E_RESUME_REFUSED, VFB_E_UNSUPPORTED_VERSION,
};
#define NCODES (sizeof codes / sizeof codes[0])

static void t_every_code(void) {
  const char *unknown = vfb_strerror(-9999);
  for (size_t i = 0; i < NCODES; i++) {
    const char *m = vfb_strerror(codes[i]), *n = vfb_error_name(codes[i]);
    CHECK(m != NULL && n != NULL && strlen(m) > 0);
    CHECK(strcmp(m, unknown) != 0);
    CHECK(strcmp(n, "VFB_E_UNKNOWN") != 0);
    CHECK(codes[i] <= 0);
    for (size_t j = 0; j < i; j++) {
      CHECK(codes[i] != codes[j]);
      CHECK(strcmp(n, vfb_error_name(codes[j])) != 0);
      CHECK(strcmp(m, vfb_strerror(codes[j])) != 0);
    }
  }
}

static void t_unknown(void) {
  CHECK(vfb_strerror(-9999) != NULL);
  CHECK(strcmp(vfb_error_name(-9999), "VFB_E_UNKNOWN") == 0);
  CHECK(strcmp(vfb_error_name(1), "VFB_E_UNKNOWN") == 0);
  CHECK(strcmp(vfb_error_name(VFB_E_TIMEOUT), "VFB_E_TIMEOUT") == 0);
}

const vfb_test vfb_error_tests[] = {
    {"errors: every code has its own name and message", t_every_code},
    {"errors: unknown codes", t_unknown},
    {NULL, NULL},
};

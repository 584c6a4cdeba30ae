/* refusal.c: what brokerd's answer to a workload request means as a VFB_E_* code. brokerd says
 * FD_STATUS_REFUSED with the gRPC status name the same call on broker.sock would have returned
 * (grpc_code): each name is its own code, and NOT_FOUND on an open is the unknown device. The
 * other FdStatus values are vfb_fd_status_error's. Pure: no I/O, no state. brokerd gives no
 * finer reason than the gRPC name (an unaligned range, a range past the region's end and WC on a
 * UC-only region are all INVALID_ARGUMENT, an unknown region is NOT_FOUND): the library tells
 * those apart itself before it sends (mappings.c, vfb_grant_args). */
#include <string.h>

#include "fdchannel.h"
#include "session.h"

static const struct {
  const char *grpc;
  int code;
} by_name[] = {
    {"NOT_FOUND", VFB_E_NOT_FOUND},
    {"PERMISSION_DENIED", VFB_E_PERMISSION},
    {"UNAUTHENTICATED", VFB_E_PERMISSION},
    {"RESOURCE_EXHAUSTED", VFB_E_QUOTA},
    {"FAILED_PRECONDITION", VFB_E_CONFLICT},
    {"UNAVAILABLE", VFB_E_UNAVAILABLE},
    {"INVALID_ARGUMENT", VFB_E_REJECTED},
    {"OUT_OF_RANGE", VFB_E_OUT_OF_RANGE},
    {"INTERNAL", VFB_E_INTERNAL},
};

int vfb_refusal_error(int status, const char *grpc_code, int req_kind) {
  if (status != VFIOBROKER__V1__FD_STATUS__FD_STATUS_REFUSED) return vfb_fd_status_error(status);
  if (grpc_code == NULL) return VFB_E_REFUSED;
  if (strcmp(grpc_code, "NOT_FOUND") == 0 && req_kind == VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_OPEN_DEVICE)
    return VFB_E_UNKNOWN_DEVICE;
  for (size_t i = 0; i < sizeof by_name / sizeof by_name[0]; i++)
    if (strcmp(grpc_code, by_name[i].grpc) == 0) return by_name[i].code;
  return VFB_E_REFUSED;
}

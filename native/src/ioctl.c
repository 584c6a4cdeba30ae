// ioctl.c: owns the generic ioctl(fd, request, arg) call that VFIO needs (region info, device info,
// DMABUF export). arg is an in/out byte buffer updated in place, an integer passed by value, or
// absent (0). When the request encodes a size (_IOC_SIZE, as _IOR/_IOW/_IOWR do), a shorter buffer is
// refused; VFIO's _IO requests carry their size inside the struct (argsz), which the caller must get
// right.
#include "common.h"

#include <errno.h>
#include <sys/ioctl.h>

static napi_value js_ioctl(napi_env env, napi_callback_info info) {
  ARGS(3);
  int fd;
  if (!arg_fd(env, argv[0], "ioctl", "fd", &fd)) return NULL;
  uint64_t req;
  if (!arg_u64(env, argv[1], "ioctl", "request", UINT32_MAX, &req)) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  unsigned long arg = 0;
  void* data = NULL;
  size_t len = 0;
  if (t == napi_number || t == napi_bigint) {
    uint64_t v;
    if (!arg_u64(env, argv[2], "ioctl", "arg", UINT64_MAX, &v)) return NULL;
    arg = (unsigned long)v;
  } else if (t != napi_undefined && t != napi_null) {
    if (!arg_bytes(env, argv[2], "ioctl", "arg", &data, &len)) return NULL;
    size_t want = _IOC_SIZE((unsigned long)req);
    if (_IOC_DIR((unsigned long)req) != _IOC_NONE && len < want)
      return throw_inval(env, "ioctl", "request 0x%llx moves %zu bytes but the buffer holds only %zu",
                         (unsigned long long)req, want, len);
    if (len == 0) return throw_inval(env, "ioctl", "arg buffer must not be empty");
    arg = (unsigned long)data;
  }
  int r;
  do r = ioctl(fd, (unsigned long)req, arg);
  while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, errno, "ioctl", "fd %d, request 0x%llx", fd, (unsigned long long)req);
  return make_int(env, r);
}

void register_ioctl(napi_env env, napi_value exports) {
  export_fn(env, exports, "ioctl", js_ioctl);
}

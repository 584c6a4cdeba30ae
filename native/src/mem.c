// mem.c: owns memfd_create + ftruncate and mmap/munmap exposed as an ArrayBuffer whose bytes ARE
// the mapping (external ArrayBuffer, no copy). Each mapping is unmapped exactly once: by unmap()
// (which also detaches the ArrayBuffer so it can never touch the unmapped range again) or by the
// ArrayBuffer's finalizer, whichever comes first. Ranges past the end of a regular file are refused
// up front (touching them would SIGBUS).
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#define MFD_ALLOW_SEALING 0x0002U
#endif

// Shared by the ArrayBuffer finalizer and the handle (napi external) finalizer; freed when both
// are gone.
typedef struct {
  void* addr;
  size_t length;
  bool unmapped;
  int owners;
} mapping;

static void mapping_release(mapping* m) {
  if (--m->owners == 0) free(m);
}

static void unmap_once(mapping* m) {
  if (!m->unmapped) {
    m->unmapped = true;
    munmap(m->addr, m->length);
  }
}

static void on_buffer_finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)data;
  mapping* m = hint;
  unmap_once(m);
  mapping_release(m);
}

static void on_handle_finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  mapping_release(data);
}

static napi_value js_memfd_create(napi_env env, napi_callback_info info) {
  ARGS(2);
  char name[250];
  if (!arg_string(env, argv[0], "memfdCreate", "name", name, sizeof name, NULL)) return NULL;
  uint64_t size;
  if (!arg_u64(env, argv[1], "memfdCreate", "size", INT64_MAX, &size)) return NULL;
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return throw_errno(env, errno, "memfd_create", "%s", name);
  int r;
  do r = ftruncate(fd, (off_t)size);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "ftruncate", "memfd %s, %llu bytes", name, (unsigned long long)size);
  }
  return make_int(env, fd);
}

// mmap(fd, offset, length, writable) -> [handle, ArrayBuffer]. MAP_SHARED.
static napi_value js_mmap(napi_env env, napi_callback_info info) {
  ARGS(4);
  int fd;
  if (!arg_fd(env, argv[0], "mmap", "fd", &fd)) return NULL;
  uint64_t offset;
  if (!arg_u64(env, argv[1], "mmap", "offset", INT64_MAX, &offset)) return NULL;
  int64_t length;
  if (!arg_int(env, argv[2], "mmap", "length", 0, 9007199254740991LL, &length)) return NULL;
  bool writable;
  if (!arg_bool(env, argv[3], "mmap", "writable", &writable)) return NULL;
  long page = sysconf(_SC_PAGESIZE);
  if (length == 0) return throw_inval(env, "mmap", "length must be at least 1 byte, got 0");
  if (offset % (uint64_t)page != 0)
    return throw_inval(env, "mmap", "offset %llu is not a multiple of the %ld-byte page; use %llu or %llu",
                       (unsigned long long)offset, page, (unsigned long long)(offset / page * page),
                       (unsigned long long)((offset / page + 1) * page));
  struct stat st;
  if (fstat(fd, &st) < 0) return throw_errno(env, errno, "fstat", "fd %d", fd);
  if (S_ISREG(st.st_mode)) {
    uint64_t end = offset + (uint64_t)length;
    if (end < offset || end > (uint64_t)st.st_size)
      return throw_code(env, "EINVAL", EINVAL, "mmap",
                        "mmap(fd %d): range [%llu, %llu) ends past the end of the file (%lld bytes); "
                        "mapping it would fault with SIGBUS",
                        fd, (unsigned long long)offset, (unsigned long long)end, (long long)st.st_size);
  }
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* addr = mmap(NULL, (size_t)length, prot, MAP_SHARED, fd, (off_t)offset);
  if (addr == MAP_FAILED)
    return throw_errno(env, errno, "mmap", "fd %d, offset %llu, length %lld", fd, (unsigned long long)offset,
                       (long long)length);
  mapping* m = calloc(1, sizeof *m);
  if (!m) {
    munmap(addr, (size_t)length);
    return throw_errno(env, ENOMEM, "mmap", "fd %d", fd);
  }
  m->addr = addr;
  m->length = (size_t)length;
  m->owners = 1; // the ArrayBuffer
  napi_value ab;
  if (napi_create_external_arraybuffer(env, addr, (size_t)length, on_buffer_finalize, m, &ab) != napi_ok) {
    munmap(addr, (size_t)length);
    free(m);
    return throw_code(env, "ENOTSUP", ENOTSUP, "mmap", "mmap: this runtime refuses external ArrayBuffers");
  }
  napi_value handle;
  m->owners++;
  if (napi_create_external(env, m, on_handle_finalize, NULL, &handle) != napi_ok) {
    m->owners--; // the ArrayBuffer's finalizer unmaps and frees
    return throw_code(env, "ENOMEM", ENOMEM, "mmap", "mmap: could not create the mapping handle");
  }
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, handle);
  napi_set_element(env, arr, 1, ab);
  return arr;
}

// munmap(handle, arrayBuffer) -> true if this call unmapped it, false if it already was.
static napi_value js_munmap(napi_env env, napi_callback_info info) {
  ARGS(2);
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (t != napi_external) return throw_inval(env, "munmap", "expected a mapping handle from mmap()");
  mapping* m;
  napi_get_value_external(env, argv[0], (void**)&m);
  if (m->unmapped) return make_bool(env, false);
  bool is_ab = false;
  napi_is_arraybuffer(env, argv[1], &is_ab);
  void* data = NULL;
  size_t blen = 0;
  if (is_ab) napi_get_arraybuffer_info(env, argv[1], &data, &blen);
  if (!is_ab || data != m->addr || blen != m->length)
    return throw_inval(env, "munmap", "expected the mapping's own ArrayBuffer");
  // Unmap first and mark it, so a finalizer triggered by the detach cannot unmap a second time.
  unmap_once(m);
  if (napi_detach_arraybuffer(env, argv[1]) != napi_ok) {
    // The range is already unmapped; a still-attached buffer would fault on access, so fail loudly.
    napi_fatal_error("vfio_native.munmap", NAPI_AUTO_LENGTH, "could not detach an unmapped ArrayBuffer",
                     NAPI_AUTO_LENGTH);
  }
  return make_bool(env, true);
}

void register_mem(napi_env env, napi_value exports) {
  export_fn(env, exports, "memfdCreate", js_memfd_create);
  export_fn(env, exports, "mmap", js_mmap);
  export_fn(env, exports, "munmap", js_munmap);
  napi_value v;
  napi_create_int64(env, sysconf(_SC_PAGESIZE), &v);
  napi_set_named_property(env, exports, "PAGE_SIZE", v);
}

// common.h: what every C file of the vfio_native addon shares: the per-env instance data, the
// error helpers that turn errno into a NativeError (errno, code, syscall, readable message), and
// the argument validators. Validators never trust JS: every number is checked for type, integrality
// and range before it reaches a syscall. Nothing here performs I/O.
#ifndef VFIO_NATIVE_COMMON_H
#define VFIO_NATIVE_COMMON_H

#define _GNU_SOURCE
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "fdmsg.h" /* MAX_FDS_PER_MESSAGE, rights_buffer, attach_rights, fdrecv: the Node-free part */

typedef struct poller poller;

// One per napi_env (main thread or worker).
typedef struct {
  napi_ref error_ctor; // the NativeError class registered by index.ts, or NULL before that
  bool tearing_down;   // env cleanup started: no more napi calls from libuv callbacks
  poller* pollers;     // live pollers, closed by the env cleanup hook
  int diag_fd;         // NETLINK_SOCK_DIAG socket + 1 (0: not open yet), sockdiag.c
  int epoll_fd;        // the readiness set + 1 (0: not made yet), epoll.c
} addon_state;

addon_state* state_of(napi_env env);

// Throws NativeError(message, code, errno, syscall). fmt describes the object, e.g. "fd 12";
// the message becomes "<syscall>(<what>): <strerror>". Always returns NULL for `return throw_...`.
napi_value throw_errno(napi_env env, int err, const char* syscall, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));
// Throws NativeError with a given code and errno and a free-form message.
napi_value throw_code(napi_env env, const char* code, int err, const char* syscall, const char* fmt, ...)
    __attribute__((format(printf, 5, 6)));
// Invalid argument: NativeError code EINVAL, message "<fn>: <text>".
napi_value throw_inval(napi_env env, const char* fn, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
// Builds (does not throw) a NativeError, for rejecting promises from C if ever needed.
napi_value make_error(napi_env env, const char* code, int err, const char* syscall, const char* message);

// Argument helpers. Each returns false after throwing a NativeError EINVAL naming fn and what.
bool arg_fd(napi_env env, napi_value v, const char* fn, const char* what, int* out);
bool arg_int(napi_env env, napi_value v, const char* fn, const char* what, int64_t min, int64_t max, int64_t* out);
// number or bigint, 0 <= x <= max
bool arg_u64(napi_env env, napi_value v, const char* fn, const char* what, uint64_t max, uint64_t* out);
bool arg_bool(napi_env env, napi_value v, const char* fn, const char* what, bool* out);
// string into a caller buffer; fails if longer than cap-1 bytes
bool arg_string(napi_env env, napi_value v, const char* fn, const char* what, char* buf, size_t cap, size_t* len);
// Uint8Array / any TypedArray / DataView: pointer to its bytes and byte length
bool arg_bytes(napi_env env, napi_value v, const char* fn, const char* what, void** data, size_t* len);
// array of fds (length <= max)
bool arg_fd_array(napi_env env, napi_value v, const char* fn, int* fds, uint32_t max, uint32_t* count);

bool fd_is_open(int fd);
napi_value make_int(napi_env env, int64_t v);
napi_value make_bool(napi_env env, bool v);
napi_value make_undefined(napi_env env);
void set_named(napi_env env, napi_value obj, const char* name, napi_value v);
void export_fn(napi_env env, napi_value exports, const char* name, napi_callback cb);

// Get up to n args; missing ones are undefined.
#define ARGS(n)                                                     \
  size_t argc = (n);                                                \
  napi_value argv[(n) > 0 ? (n) : 1];                               \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) \
    return NULL;                                                    \
  for (size_t i_ = argc; i_ < (n); i_++) napi_get_undefined(env, &argv[i_]);

// Registration functions, one per concept file.
void register_errors(napi_env env, napi_value exports);
void register_fdpass(napi_env env, napi_value exports);
void register_sock(napi_env env, napi_value exports);
void register_peer(napi_env env, napi_value exports);
void register_pidfd(napi_env env, napi_value exports);
void register_mem(napi_env env, napi_value exports);
void register_ioctl(napi_env env, napi_value exports);
void register_notify(napi_env env, napi_value exports);
void register_poll(napi_env env, napi_value exports);
void register_epoll(napi_env env, napi_value exports);
void register_lock(napi_env env, napi_value exports);
void register_sockdiag(napi_env env, napi_value exports);
void poll_env_cleanup(addon_state* st);
void sockdiag_env_cleanup(addon_state* st);
void epoll_env_cleanup(addon_state* st);

#endif

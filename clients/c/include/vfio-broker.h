/* vfio-broker.h: the public C API of libvfio-broker, the C client of vfio-broker (clients/c/README.md).
 *
 * This header is the whole contract: every type, constant and function a program may use, with its
 * errors, ownership and thread rules. Nothing else under clients/c/src is public, and nothing here
 * exposes protobuf-c or any other dependency. It must never declare a function the library does not
 * implement.
 *
 * State of this version (0.1): the error vocabulary, the attribute and access constants and
 * vfb_strerror. The session API (vfb_connect, vfb_open_device, vfb_map, ...) comes with the
 * workload protocol on fd.sock and is added here as it is implemented; the opaque types are
 * declared now so that their names are fixed.
 *
 * Conventions (every function, now and later):
 *  - A function that can fail returns int: 0 on success, a negative VFB_E_* code on failure. Codes
 *    are stable: new ones are appended, none is ever renumbered or reused.
 *  - Strings returned as const char * are owned by the library (static or owned by the object
 *    named); the caller never frees them.
 *  - Objects returned through an `out` parameter are owned by the caller until the matching
 *    close/free call; on failure *out is set to NULL and nothing needs freeing.
 *  - Every fd the library opens is close-on-exec, and fds it receives are received with
 *    MSG_CMSG_CLOEXEC. On failure the library leaves no fd open behind it.
 *  - Threads: functions without an object argument (vfb_strerror) may be called from any thread at
 *    any time. A session and everything opened through it is used by one thread at a time; different
 *    sessions may be used by different threads at once.
 */
#ifndef VFIO_BROKER_H
#define VFIO_BROKER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define VFB_API __attribute__((visibility("default")))
#else
#define VFB_API
#endif

/* The library's version: major changes break the ABI (the soname is libvfio-broker.so.MAJOR). */
#define VFB_VERSION_MAJOR 0
#define VFB_VERSION_MINOR 1
#define VFB_VERSION_PATCH 0

/* A connection to brokerd (one workload-protocol session). Not yet implemented. */
typedef struct vfb_session vfb_session;
/* An open device of a session. Not yet implemented. */
typedef struct vfb_device vfb_device;
/* A mapped range of a device region. Not yet implemented. */
typedef struct vfb_mapping vfb_mapping;

/* Memory type of a mapping (fdchannel.proto's Attribute). brokerd reports the effective one. */
enum { VFB_ATTR_UC = 1, VFB_ATTR_WC = 2 };
/* Access asked for on a mapping. */
enum { VFB_PROT_READ = 1, VFB_PROT_RW = 3 };

/* Error codes: 0 is success, every error is negative. vfb_strerror says what each means and what
 * to do. Codes from -100 down mirror brokerd's fd-channel statuses (FdStatus in fdchannel.proto). */
enum {
  VFB_OK = 0,
  /* A NULL pointer, an unknown flag, or a value over its stated limit; nothing was sent. */
  VFB_E_INVALID_ARGUMENT = -1,
  /* malloc failed. */
  VFB_E_NO_MEMORY = -2,
  /* A system call failed; errno says which error (it is left as the call set it). */
  VFB_E_IO = -3,
  /* brokerd's socket could not be reached (not running, wrong path, permission denied). */
  VFB_E_CONNECT = -4,
  /* brokerd closed the connection. */
  VFB_E_CLOSED = -5,
  /* brokerd did not answer in time. */
  VFB_E_TIMEOUT = -6,
  /* A frame's length is over the limit for its direction (requests 3072 bytes, replies 64 KiB). */
  VFB_E_FRAME_TOO_LARGE = -7,
  /* The connection ended in the middle of a frame (its length or its body). */
  VFB_E_FRAME_TRUNCATED = -8,
  /* fds arrived where the protocol allows none (or more than allowed); they were closed. */
  VFB_E_UNEXPECTED_FDS = -9,
  /* The kernel could not deliver all of a message's fds (RLIMIT_NOFILE reached, or more than
   * the message may carry); those that arrived were closed. */
  VFB_E_FDS_LOST = -10,
  /* brokerd's reply is not what the protocol says (not a valid message, wrong fd count). */
  VFB_E_PROTOCOL = -11,

  /* brokerd's FdStatus values. */
  VFB_E_UNKNOWN_TICKET = -102,
  VFB_E_EXPIRED = -103,
  VFB_E_ALREADY_USED = -104,
  VFB_E_WRONG_PEER = -105,
  VFB_E_REVOKED = -106,
  VFB_E_INTERNAL = -107,
  VFB_E_BAD_REQUEST = -108,
  VFB_E_BUSY = -109,
  VFB_E_REFUSED = -110,
  VFB_E_UNDELIVERABLE = -111,
};

/* What `err` (a value returned by this library) means and what to do about it, as one English
 * sentence. Never NULL; an unknown code gets a generic message. The string is static: never free
 * it. Thread-safe. */
VFB_API const char *vfb_strerror(int err);

/* The symbolic name of `err` ("VFB_E_TIMEOUT"), or "VFB_E_UNKNOWN" for a code this version does
 * not know. Static, thread-safe. */
VFB_API const char *vfb_error_name(int err);

#ifdef __cplusplus
}
#endif

#endif /* VFIO_BROKER_H */

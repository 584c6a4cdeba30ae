/* vfio-broker.h: the public C API of libvfio-broker, the C client of vfio-broker (clients/c/README.md).
 *
 * This header is the whole contract: every type, constant and function a program may use, with its
 * errors, ownership and thread rules. Nothing else under clients/c/src is public, and nothing here
 * exposes protobuf-c or any other dependency. It must never declare a function the library does not
 * implement.
 *
 * A session is one connection to brokerd's fd.sock speaking the workload protocol
 * (proto/vfiobroker/v1/workload.proto): the connection plus this process is the lease, so
 * vfb_disconnect or exiting releases everything the session holds.
 *
 * Conventions (every function):
 *  - A function that can fail returns int: 0 on success, a negative VFB_E_* code on failure. Codes
 *    are stable: new ones are appended, none is ever renumbered or reused. vfb_strerror(code) says
 *    what the code means and what to do; vfb_last_error(s) gives the session's last failure in
 *    detail (brokerd's own message when brokerd refused).
 *  - Strings returned as const char * are owned by the library (static, or owned by the object
 *    named, valid until that object is freed); the caller never frees them.
 *  - Objects returned through an `out` parameter are owned by the caller until the matching
 *    close/free call; on failure *out is set to NULL and nothing needs freeing.
 *  - Every fd the library opens is close-on-exec, and fds it receives are received with
 *    MSG_CMSG_CLOEXEC. On failure the library leaves no fd open behind it. A mapping's fd is
 *    closed as soon as it is mmapped: the mapping outlives it.
 *  - Threads: functions without an object argument (vfb_strerror, vfb_error_name, vfb_connect,
 *    vfb_connect_ex) may be called from any thread at any time. A session and everything opened
 *    through it (devices, mappings, the event fd) is used by one thread at a time; the caller
 *    serialises (a mutex, or one thread per session). Different sessions may be used by different
 *    threads at once: the library has no global mutable state. The exceptions: any thread may
 *    poll(2) the fd vfb_event_fd returned while another uses the session, and a device list
 *    (vfb_list_devices) is a copy that shares nothing with its session: any thread may read it,
 *    also while the session is in use, as long as nobody frees it meanwhile.
 *  - Feature-test macros: the header needs none, but a program built with -std=c11 gets no POSIX
 *    declarations from libc's headers (clock_gettime, MAP_ANONYMOUS, ...) unless it defines
 *    _POSIX_C_SOURCE 200809L (or _DEFAULT_SOURCE / _GNU_SOURCE) before its first #include.
 *  - fork(2): a child must not use its parent's sessions (the connection is the parent's lease);
 *    exec closes the library's fds.
 */
#ifndef VFIO_BROKER_H
#define VFIO_BROKER_H

#include <stddef.h>
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
#define VFB_VERSION_MINOR 2
#define VFB_VERSION_PATCH 0

/* A connection to brokerd (one workload-protocol session). */
typedef struct vfb_session vfb_session;
/* An open device of a session (brokerd's device file). */
typedef struct vfb_device vfb_device;
/* A mapped range of a device region, mmapped in this process. */
typedef struct vfb_mapping vfb_mapping;
/* A snapshot of the devices this session may open (vfb_list_devices). */
typedef struct vfb_device_list vfb_device_list;

/* Memory type of a mapping (fdchannel.proto's Attribute). brokerd reports the effective one. */
enum { VFB_ATTR_UC = 1, VFB_ATTR_WC = 2 };
/* OR-ed into vfb_map's attr with VFB_ATTR_WC: take UC where this host cannot give WC for the
 * region (vfb_mapping_attr says which was given). Without it, WC on a region that cannot be WC
 * fails with VFB_E_WC_UNAVAILABLE. */
enum { VFB_ATTR_FALLBACK_UC = 0x100 };
/* Access asked for on a mapping (the mmap's prot: PROT_READ, or PROT_READ | PROT_WRITE). */
enum { VFB_PROT_READ = 1, VFB_PROT_RW = 3 };

/* A device's health (types.proto's DeviceHealth), as brokerd reports it: UNKNOWN brokerd has not
 * said; HEALTHY serving; DRAINING an operator or the backend is taking it away (its mappings are
 * being revoked, new maps are refused VFB_E_UNAVAILABLE); GONE removed (hot-unplug, unbound). */
enum { VFB_HEALTH_UNKNOWN = 0, VFB_HEALTH_HEALTHY = 1, VFB_HEALTH_DRAINING = 2, VFB_HEALTH_GONE = 3 };

/* What the mapping's fd was (types.proto's BackingKind). */
enum {
  VFB_BACKING_UNKNOWN = 0,
  VFB_BACKING_DMABUF = 1,
  VFB_BACKING_SYSFS_WC = 2,
  VFB_BACKING_SYSFS = 3,
  VFB_BACKING_VFIO_DEVICE_FD = 4,
  VFB_BACKING_MEMFD = 5, /* the simulated backend's memory */
};

/* Limits the library states and enforces (brokerd enforces the same ones on its side). */
#define VFB_MAX_BATCH 32              /* ranges per vfb_map_many / mappings per vfb_unmap_many */
#define VFB_MAX_CLIENT_NAME 128       /* bytes of vfb_connect_options.client_name */
#define VFB_MAX_DEVICE_ID 64          /* characters of a device id: letters, digits and . _ : - */
#define VFB_DEFAULT_TIMEOUT_MS 5000   /* bound of the connect and of each exchange */
#define VFB_MAX_QUEUED_HEALTH 256     /* device-health events the library holds unread (see events) */
#define VFB_MAX_QUEUED_UNKNOWN 256    /* unread revocations of cookies no mapping object holds (see events) */

/* Error codes: 0 is success, every error is negative. vfb_strerror says what each means and what
 * to do. Codes from -100 down mirror brokerd's fd-channel statuses (FdStatus in fdchannel.proto). */
enum {
  VFB_OK = 0,
  /* A NULL pointer, an unknown flag, or a value over its stated limit; nothing was sent. */
  VFB_E_INVALID_ARGUMENT = -1,
  /* malloc failed. */
  VFB_E_NO_MEMORY = -2,
  /* A system call failed (mmap, epoll, ...); errno says which error, vfb_last_error which call. */
  VFB_E_IO = -3,
  /* brokerd's socket could not be reached (not running, wrong path, permission denied). */
  VFB_E_CONNECT = -4,
  /* The connection to brokerd is gone without brokerd saying why: brokerd was killed or crashed,
   * or the library closed it itself after a timeout or a broken frame (vfb_last_error says which).
   * The session is down. Call vfb_resume: 0 if brokerd (restarted and restored) still holds the
   * session, VFB_E_CONNECT while nothing listens, VFB_E_RESUME_REFUSED if the session is gone
   * (brokerd ends a session whose connection closes, unless it is restarting). */
  VFB_E_CLOSED = -5,
  /* brokerd did not answer in time (hung, SIGSTOPped, overloaded); the library closed the connection
   * (its position in the stream is lost), so the session is down as after VFB_E_CLOSED. */
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
  /* vfb_open_device: brokerd has no device of that id (brokerd's NOT_FOUND). */
  VFB_E_UNKNOWN_DEVICE = -12,
  /* vfb_map: offset or length is not a multiple of the page size (vfb_page_size), or length is 0. */
  VFB_E_UNALIGNED = -13,
  /* vfb_map: WC asked for a region this host can map UC only, without VFB_ATTR_FALLBACK_UC. */
  VFB_E_WC_UNAVAILABLE = -14,
  /* vfb_map / vfb_region_info: the device has no region of that index, or it cannot be mmapped. */
  VFB_E_NO_SUCH_REGION = -15,
  /* vfb_map: offset + length passes the end of the region. */
  VFB_E_OUT_OF_RANGE = -16,
  /* brokerd said it is stopping with the session's grants kept for a next brokerd (lease_ended
   * "restart": its default on SIGTERM, --on-stop keep). brokerd cannot know whether a next brokerd
   * will start (a restart and a plain stop look alike to it): call vfb_resume while it returns
   * VFB_E_CONNECT or VFB_E_TIMEOUT, for a bound of your choosing (brokerd's resume grace,
   * --resume-grace-ms, is 30 s by default), then give the session up (README: "Resuming"). */
  VFB_E_RESTARTED = -17,
  /* vfb_mapping_status: brokerd revoked the mapping; its address is now inaccessible. vfb_unmap it. */
  VFB_E_MAPPING_REVOKED = -18,
  /* brokerd refused: a quota (sessions, mappings, bytes, fds) of this identity is used up
   * (RESOURCE_EXHAUSTED); release something first. vfb_last_error names the quota. */
  VFB_E_QUOTA = -19,
  /* brokerd's policy does not allow this identity that device, region, attribute or access
   * (PERMISSION_DENIED). vfb_last_error says which rule. */
  VFB_E_PERMISSION = -20,
  /* brokerd does not know the device file or mapping named (NOT_FOUND other than a device):
   * it was closed, or lost when brokerd restarted without keeping it. */
  VFB_E_NOT_FOUND = -21,
  /* brokerd refused because of the state of what is held (FAILED_PRECONDITION): pages already
   * mapped with the other memory type, or still held by a revoked mapping not yet released. */
  VFB_E_CONFLICT = -22,
  /* brokerd cannot do it now (UNAVAILABLE): the device is draining or gone, brokerd is handing
   * over or cannot record to its state store. Try again later; vfb_last_error says which. */
  VFB_E_UNAVAILABLE = -23,
  /* brokerd found an argument invalid that the library did not check (INVALID_ARGUMENT): e.g. a
   * range outside the region's mmap-able areas, RW on a read-only region. */
  VFB_E_REJECTED = -24,
  /* brokerd ended the session and said why (lease_ended: an operator, a reader that stopped
   * reading its events, a shutdown with --on-stop release): everything it held is released.
   * vfb_resume cannot take it back (it returns this code without connecting). vfb_disconnect and
   * connect again. */
  VFB_E_SESSION_ENDED = -25,
  /* vfb_resume: brokerd answers but does not hold this session: it ended the session when the
   * connection closed (after a kill -9 without restored state, or after the library's own timeout),
   * or a restarted brokerd did not keep it (vfb_last_error says which the library can tell).
   * vfb_disconnect and connect again. */
  VFB_E_RESUME_REFUSED = -26,

  /* brokerd's FdStatus values, -102 to -111: the statuses of brokerd's fd channel, which this
   * library speaks (the workload protocol is built on it). -102 to -105 belong to its tickets
   * (a gRPC client's CreateMapping hands out a ticket, redeemed on the fd channel for the
   * mapping's fd); this library never uses tickets, so it never returns them unless a brokerd
   * breaks the protocol. They are listed so that every FdStatus has a code. */
  /* brokerd knows no such ticket. */
  VFB_E_UNKNOWN_TICKET = -102,
  /* The ticket expired before it was redeemed. */
  VFB_E_EXPIRED = -103,
  /* The ticket was redeemed already (tickets are single use). */
  VFB_E_ALREADY_USED = -104,
  /* The ticket was issued to another process than the one redeeming it. */
  VFB_E_WRONG_PEER = -105,
  /* The mapping was released or revoked before its fd was delivered: map again if still wanted. */
  VFB_E_REVOKED = -106,
  /* brokerd failed internally (a bug); brokerd's log says why. */
  VFB_E_INTERNAL = -107,
  /* brokerd could not read the request (vfb_last_error names the field): a library bug or a
   * brokerd of another protocol version. */
  VFB_E_BAD_REQUEST = -108,
  /* When connecting (vfb_connect, vfb_connect_ex, vfb_resume): this identity, or brokerd as a
   * whole, is at its cap of fd-channel connections (each session is one; vfb_last_error names
   * the cap). End sessions you do not need, or ask the operator to raise the cap. */
  VFB_E_BUSY = -109,
  /* brokerd refused for a reason none of the codes above names (vfb_last_error has its gRPC
   * status name and message). */
  VFB_E_REFUSED = -110,
  /* vfb_map, vfb_map_many: brokerd granted the mapping but the kernel would not pass its fd
   * (ETOOMANYREFS: the fds brokerd's uid has in flight are over its RLIMIT_NOFILE, and brokerd
   * runs without CAP_SYS_RESOURCE); brokerd released the grant again, nothing is held. A host problem for the operator (vfb_last_error has brokerd's message);
   * retrying later may work. */
  VFB_E_UNDELIVERABLE = -111,
  /* brokerd does not speak this library's protocol version (1); upgrade one of them. */
  VFB_E_UNSUPPORTED_VERSION = -112,
};

/* What `err` (a value returned by this library) means and what to do about it, as one English
 * sentence. Never NULL; an unknown code gets a generic message. The string is static: never free
 * it. Thread-safe. */
VFB_API const char *vfb_strerror(int err);

/* The symbolic name of `err` ("VFB_E_TIMEOUT"), or "VFB_E_UNKNOWN" for a code this version does
 * not know. Static, thread-safe. */
VFB_API const char *vfb_error_name(int err);

/* ---- sessions ------------------------------------------------------------------------------ */

/* Options of vfb_connect_ex. Zero it, set struct_size = sizeof(vfb_connect_options), then the
 * fields wanted; a zero/NULL field takes its default. struct_size lets later versions append
 * fields: a smaller struct_size (an older caller) is accepted, fields past it are defaults. */
typedef struct vfb_connect_options {
  size_t struct_size;
  /* brokerd's socket path (as vfb_connect's broker_socket): NULL means $VFIO_BROKER_SOCKET, then
   * /run/vfio-broker/broker.sock. The library connects to the fd channel beside it, fd.sock in the
   * same directory ($VFIO_BROKER_FD_SOCKET overrides). At most 107 bytes. */
  const char *broker_socket;
  /* Shown in brokerd's admin listings. At most VFB_MAX_CLIENT_NAME bytes; NULL: "". */
  const char *client_name;
  /* Bounds the connect and each exchange with brokerd, ms; 0: VFB_DEFAULT_TIMEOUT_MS. */
  int timeout_ms;
  /* A resume token (32 lower-case hex digits) from vfb_resume_token of a session of THIS process,
   * to take it back after a brokerd restart; NULL: a new session. The devices and mappings of the
   * old vfb_session object are not carried over (use vfb_resume on it for that); what brokerd
   * still holds is released when this session ends. */
  const char *resume_token;
  /* If not NULL, a failed connect writes what went wrong and what to do here (NUL-terminated, cut
   * to error_message_size bytes): there is no session for vfb_last_error yet. */
  char *error_message;
  size_t error_message_size;
} vfb_connect_options;

/* Opens a session: connects to brokerd's fd.sock (found beside broker_socket, see
 * vfb_connect_options) and says hello. Each session costs 3 fds in this process (its socket, the
 * epoll fd of vfb_event_fd, an eventfd) and 2 in brokerd (the socket and the process's pidfd),
 * and counts as one of this identity's sessions and fd-channel connections (brokerd's
 * policy quotas `sessions` and `fdConnections`, 64 by default) and of brokerd's cap on fd-channel
 * connections of all identities (--max-fd-connections, 1024 by default, lowered to fit its
 * RLIMIT_NOFILE): over a connection cap VFB_E_BUSY, over the sessions quota VFB_E_QUOTA. Share
 * one session between threads (with a mutex) rather than open one per thread when there are many
 * threads. The library trusts whatever listens at the socket's path (README: "Trust").
 * broker_socket NULL: $VFIO_BROKER_SOCKET, then the default. Returns 0 and *out (the caller's: vfb_disconnect), or VFB_E_INVALID_ARGUMENT (out NULL, a path
 * too long), VFB_E_NO_MEMORY, VFB_E_IO, VFB_E_CONNECT (brokerd not running, permission denied on
 * its directory), VFB_E_TIMEOUT, VFB_E_BUSY (this identity's, or brokerd's, cap of fd-channel
 * connections, above), VFB_E_QUOTA (this identity's sessions quota is used up), VFB_E_PERMISSION,
 * VFB_E_UNSUPPORTED_VERSION, VFB_E_CLOSED, VFB_E_PROTOCOL. Uses VFB_DEFAULT_TIMEOUT_MS. The
 * message (vfb_connect_options.error_message) names the fd.sock path, where it came from (the
 * argument, $VFIO_BROKER_SOCKET, the default, $VFIO_BROKER_FD_SOCKET), and a missing directory. */
VFB_API int vfb_connect(const char *broker_socket, vfb_session **out);

/* vfb_connect with options (see vfb_connect_options). opts NULL: the defaults. Also
 * VFB_E_INVALID_ARGUMENT for a struct_size below the first version's, a client_name too long, a
 * resume_token that is not 32 lower-case hex digits. A resume_token that brokerd does not know
 * gives a new session (vfb_session_resumed says 0). */
VFB_API int vfb_connect_ex(const vfb_connect_options *opts, vfb_session **out);

/* Ends the session: munmaps every mapping, closes each open device in brokerd (one exchange per
 * device, while the connection is up: brokerd frees their pages at once), closes the connection
 * (brokerd ends the session), frees every device and mapping of the session (their pointers are
 * invalid from now on) and closes the event fd. Device lists stay the caller's
 * (vfb_device_list_free). If the connection is already down, what brokerd still held of the
 * session's delivered mappings stays booked until this process exits (brokerd cannot know they
 * were unmapped). NULL is fine. Never fails. */
VFB_API void vfb_disconnect(vfb_session *s);

/* Takes a down session back (after VFB_E_RESTARTED, VFB_E_CLOSED or VFB_E_TIMEOUT, or a
 * VFB_EVENT_SESSION_ENDED of reason "restart" or "connection-lost"): connects again and says hello
 * with the session's resume token, so that brokerd gives the session back (the same kernel identity
 * checks as a gRPC Hello: same uid, pid and process start time). On success the same vfb_device
 * and vfb_mapping objects stay valid and mapped at the same addresses; a mapping brokerd no longer
 * holds is treated as revoked (its address made inaccessible, a VFB_EVENT_REVOKED event with
 * reason "lost-at-restart"), a device it no longer holds fails its calls with VFB_E_NOT_FOUND;
 * releases and closes made while the connection was down are sent now. A vfb_map, vfb_map_many or
 * vfb_open_device that failed because the connection went down may have been recorded by brokerd
 * before its reply was lost: each is asked for again with its request id (every grant and open
 * carries one) and what brokerd answers is given back (released, closed), so nothing the caller
 * never received stays held. One of these that a brokerd killed again interrupts stays owed, past
 * what brokerd already answered, to the next vfb_resume (never asked for twice). The failed call
 * itself is not redone: make it again if you want it. The event fd stays the same fd. A live session: 0, nothing done. Errors, all of them:
 *  - VFB_E_CONNECT: brokerd is not back yet: nothing listens, or a brokerd accepted the connection
 *    and closed it before answering (the stopping one's backlog). Try again later.
 *  - VFB_E_TIMEOUT: a brokerd accepted but did not answer in time (hung, stopped). Try again later.
 *  - VFB_E_RESUME_REFUSED: brokerd answers without this session (see the code). Give up.
 *  - VFB_E_SESSION_ENDED: brokerd ended the session itself (not a restart): nothing to resume, no
 *    connection attempted. Give up.
 *  - VFB_E_QUOTA, VFB_E_BUSY (a cap: as vfb_connect), VFB_E_PERMISSION, VFB_E_UNSUPPORTED_VERSION
 *    (a different brokerd came back), VFB_E_PROTOCOL, VFB_E_IO, VFB_E_NO_MEMORY, and the
 *    frame errors VFB_E_FRAME_TOO_LARGE, VFB_E_UNEXPECTED_FDS, VFB_E_FDS_LOST.
 * It never returns VFB_E_RESTARTED or VFB_E_CLOSED. The session stays down on any error and
 * vfb_resume may be called again; retry only VFB_E_CONNECT and VFB_E_TIMEOUT, with a bound (the
 * README's loop). Giving up: vfb_disconnect (brokerd releases what it still holds of the session
 * when this process exits, or at once if it restored it and the resume grace ends). */
VFB_API int vfb_resume(vfb_session *s);

/* brokerd's id of the session (for its admin listings and journal). Owned by s. */
VFB_API const char *vfb_session_id(const vfb_session *s);
/* The session's resume token (32 hex digits): a secret of this process; give it only to
 * vfb_connect_options.resume_token in this same process. Owned by s. */
VFB_API const char *vfb_resume_token(const vfb_session *s);
/* 1 if the hello (of vfb_connect_ex with a resume token, or of vfb_resume) took a restored
 * session back, else 0. */
VFB_API int vfb_session_resumed(const vfb_session *s);

/* Who the kernel says this session's process is (SO_PEERCRED, as brokerd saw it). */
typedef struct vfb_identity {
  uint32_t uid;
  uint32_t gid;
  uint32_t pid;
} vfb_identity;
/* Fills *out with the session's identity. 0, or VFB_E_INVALID_ARGUMENT for a NULL argument. */
VFB_API int vfb_session_identity(const vfb_session *s, vfb_identity *out);

/* The page size every mapping's offset and length must be a multiple of (brokerd's welcome). */
VFB_API uint64_t vfb_page_size(const vfb_session *s);
/* brokerd's version (its package's), as its welcome said: unrelated to this library's
 * VFB_VERSION_* (they talk workload protocol version 1 whatever their versions). Owned by s. */
VFB_API const char *vfb_server_version(const vfb_session *s);

/* The message of the session's last failed call: brokerd's message (prefixed by its gRPC status
 * name when brokerd refused) or what the library saw, and what to do. Every call that fails and
 * reaches the session (a call on the session, or on a device, mapping or batch of it) sets it;
 * a call given no object of a session (a NULL session, device or mapping) cannot.
 * vfb_mapping_status reports a state and leaves it alone. "" before any failure; a
 * successful call does not clear it. Never NULL (NULL s: ""). Owned by s, valid until its next
 * call. At most 511 bytes. */
VFB_API const char *vfb_last_error(const vfb_session *s);

/* ---- devices -------------------------------------------------------------------------------- */

/* One region of a device. name is owned by the device or list it came from. */
typedef struct vfb_region {
  unsigned index;       /* VFIO region index: 0-5 BAR0-BAR5, 6 ROM, 7 CONFIG, 8 VGA */
  const char *name;     /* "BAR0".."BAR5", "ROM", "CONFIG", "VGA" */
  uint64_t size;        /* bytes */
  int readable;         /* 1 or 0, as each of the next three */
  int writable;
  int mappable;         /* can be mmapped at all (config space cannot) */
  int prefetchable;     /* a prefetchable memory BAR (the only kind that may be WC) */
  int attributes;       /* VFB_ATTR_UC | VFB_ATTR_WC: what this host can give a mapping of it */
} vfb_region;

/* The devices brokerd's policy lets this session's identity open, with their regions and health,
 * in one exchange. Returns 0 and *out (the caller's: vfb_device_list_free; a copy, valid until that
 * call, also after vfb_disconnect), or VFB_E_INVALID_ARGUMENT, VFB_E_NO_MEMORY,
 * VFB_E_PERMISSION, VFB_E_RESTARTED, VFB_E_SESSION_ENDED, VFB_E_CLOSED, VFB_E_TIMEOUT,
 * VFB_E_PROTOCOL. */
VFB_API int vfb_list_devices(vfb_session *s, vfb_device_list **out);
/* How many devices the list holds. */
VFB_API size_t vfb_device_list_count(const vfb_device_list *l);
/* 1 if brokerd cut the list to fit its 64 KiB reply (devices past it left out), else 0. */
VFB_API int vfb_device_list_truncated(const vfb_device_list *l);
/* Device i's id (NULL if i >= count). Owned by l. */
VFB_API const char *vfb_device_list_id(const vfb_device_list *l, size_t i);
/* Device i's health (VFB_HEALTH_*; VFB_HEALTH_UNKNOWN if i >= count). */
VFB_API int vfb_device_list_health(const vfb_device_list *l, size_t i);
/* How many regions device i lists (0 if i >= count). */
VFB_API unsigned vfb_device_list_region_count(const vfb_device_list *l, size_t i);
/* Region number `pos` (0 .. region count - 1, in brokerd's order) of device i. 0, or
 * VFB_E_INVALID_ARGUMENT (NULL, i or pos out of range). */
VFB_API int vfb_device_list_region(const vfb_device_list *l, size_t i, unsigned pos, vfb_region *out);
/* Frees the list. NULL is fine. */
VFB_API void vfb_device_list_free(vfb_device_list *l);

/* Opens a device (brokerd's OpenDevice, compact layout) in the session. Returns 0 and *out (the
 * caller's: vfb_close_device, or vfb_disconnect), or VFB_E_INVALID_ARGUMENT (NULL, an id over
 * VFB_MAX_DEVICE_ID characters or with other characters), VFB_E_UNKNOWN_DEVICE,
 * VFB_E_PERMISSION, VFB_E_QUOTA, VFB_E_UNAVAILABLE (device draining or gone), VFB_E_RESTARTED,
 * VFB_E_SESSION_ENDED, VFB_E_CLOSED, VFB_E_TIMEOUT, VFB_E_NO_MEMORY, VFB_E_PROTOCOL. */
VFB_API int vfb_open_device(vfb_session *s, const char *device_id, vfb_device **out);
/* The device's id ("sim0", "0000:00:01.0"). Owned by d. */
VFB_API const char *vfb_device_id(const vfb_device *d);
/* brokerd's id of the device file (what admin RevokeMapping and the journal name). */
VFB_API uint64_t vfb_device_file_id(const vfb_device *d);
/* The device's health as last heard (open, or a VFB_EVENT_DEVICE_HEALTH event read). */
VFB_API int vfb_device_health(const vfb_device *d);
/* How many regions the device has. */
VFB_API unsigned vfb_region_count(const vfb_device *d);
/* Region number `pos` (0 .. vfb_region_count - 1, in brokerd's order). 0, or VFB_E_INVALID_ARGUMENT. */
VFB_API int vfb_region_at(const vfb_device *d, unsigned pos, vfb_region *out);
/* The region of VFIO index `region`. 0, VFB_E_INVALID_ARGUMENT (NULL), or VFB_E_NO_SUCH_REGION.
 * Local, as vfb_region_at: it reads what the open's reply said, no exchange with brokerd. */
VFB_API int vfb_region_info(const vfb_device *d, unsigned region, vfb_region *out);

/* Closes the device: every mapping still open on it is munmapped and freed (its pointer invalid
 * from now on), and brokerd closes the device file and releases them. d is freed whatever the
 * outcome. Returns 0, or brokerd's refusal, or VFB_E_RESTARTED / VFB_E_CLOSED (the session is
 * down: the close is sent by a successful vfb_resume; without one, brokerd releases it when this
 * process exits), VFB_E_SESSION_ENDED (brokerd released it already), VFB_E_TIMEOUT. NULL: VFB_E_INVALID_ARGUMENT. */
VFB_API int vfb_close_device(vfb_device *d);

/* ---- mappings ------------------------------------------------------------------------------- */

/* Maps [offset, offset + length) of region `region` (a VFIO index) of d: brokerd grants it and
 * passes its fd in the same exchange; the library mmaps it (MAP_SHARED, at brokerd's mmap offset,
 * with the prot brokerd gave) and closes the fd. attr: VFB_ATTR_UC or VFB_ATTR_WC, optionally
 * | VFB_ATTR_FALLBACK_UC. prot: VFB_PROT_READ or VFB_PROT_RW. Returns 0 and *out (the caller's:
 * vfb_unmap, or vfb_close_device, or vfb_disconnect), or: VFB_E_INVALID_ARGUMENT (NULL, an unknown
 * attr or prot), VFB_E_NO_SUCH_REGION, VFB_E_UNALIGNED, VFB_E_OUT_OF_RANGE, VFB_E_WC_UNAVAILABLE
 * (these four checked by the library against what brokerd said of the region, before anything is
 * sent), VFB_E_PERMISSION, VFB_E_QUOTA, VFB_E_CONFLICT, VFB_E_UNAVAILABLE, VFB_E_REJECTED,
 * VFB_E_NOT_FOUND, VFB_E_UNDELIVERABLE, VFB_E_IO (mmap failed: the grant is released again),
 * VFB_E_RESTARTED, VFB_E_SESSION_ENDED, VFB_E_CLOSED, VFB_E_TIMEOUT, VFB_E_NO_MEMORY,
 * VFB_E_PROTOCOL. */
VFB_API int vfb_map(vfb_device *d, unsigned region, uint64_t offset, uint64_t length, int attr, int prot,
                    vfb_mapping **out);

/* One range of vfb_map_many: vfb_map's arguments. */
typedef struct vfb_range {
  unsigned region;
  uint64_t offset;
  uint64_t length;
  int attr;
  int prot;
} vfb_range;

/* Maps n (1 .. VFB_MAX_BATCH) ranges of d in one exchange (brokerd's batch). All or nothing:
 * brokerd does each item on its own, so when any is refused the library releases the others it
 * got (one more exchange) and returns the first refused item's error (vfb_last_error says which
 * item and why), with every out[i] NULL. On 0, out[i] is range i's mapping (out has room for n).
 * Errors: vfb_map's, checked for every range before anything is sent. */
VFB_API int vfb_map_many(vfb_device *d, const vfb_range *ranges, size_t n, vfb_mapping **out);

/* Releases the mapping in brokerd and munmaps it; m is freed whatever the outcome (its address
 * is unmapped: touching it faults). A revoked mapping is released the same way. Returns 0, or
 * brokerd's refusal of the release (VFB_E_NOT_FOUND, ...), VFB_E_RESTARTED / VFB_E_CLOSED (the
 * session is down: the release is sent by a successful vfb_resume; without one, brokerd releases
 * it when this process exits), VFB_E_SESSION_ENDED (brokerd released it already), VFB_E_TIMEOUT. NULL: VFB_E_INVALID_ARGUMENT. */
VFB_API int vfb_unmap(vfb_mapping *m);

/* vfb_unmap of n (1 .. VFB_MAX_BATCH) mappings of one session in one exchange. Every ms[i] is
 * munmapped and freed whatever the outcome; returns 0 or the first release's error. NULL entries,
 * mappings of different sessions or n out of range: VFB_E_INVALID_ARGUMENT, nothing freed. */
VFB_API int vfb_unmap_many(vfb_mapping **ms, size_t n);

/* The address the mapping is mmapped at (vfb_mapping_length bytes). */
VFB_API void *vfb_mapping_addr(const vfb_mapping *m);
/* Its length, bytes. */
VFB_API uint64_t vfb_mapping_length(const vfb_mapping *m);
/* The effective memory type brokerd gave (VFB_ATTR_UC or VFB_ATTR_WC; UC after a fallback). */
VFB_API int vfb_mapping_attr(const vfb_mapping *m);
/* The access it was mmapped with (VFB_PROT_READ or VFB_PROT_RW). */
VFB_API int vfb_mapping_prot(const vfb_mapping *m);
/* brokerd's cookie of the mapping (its offset in the device file's space; admin RevokeMapping
 * names it). */
VFB_API uint64_t vfb_mapping_cookie(const vfb_mapping *m);
/* What the fd was (VFB_BACKING_*). */
VFB_API int vfb_mapping_backing(const vfb_mapping *m);
/* The region (VFIO index) and offset inside it that the mapping starts at. */
VFB_API unsigned vfb_mapping_region(const vfb_mapping *m);
VFB_API uint64_t vfb_mapping_offset(const vfb_mapping *m);
/* The device it was mapped from. */
VFB_API vfb_device *vfb_mapping_device(const vfb_mapping *m);
/* Whether the mapping is still held, without an exchange (check it before writing, e.g. each
 * loop):
 *  - VFB_OK: the session is live and no revocation of the mapping was read.
 *  - VFB_E_MAPPING_REVOKED: a revocation of it was read (vfb_read_event), or vfb_resume found
 *    brokerd no longer holds it; its address is mapped PROT_NONE. vfb_unmap it. (Said before the
 *    two codes of a down session below, after VFB_E_SESSION_ENDED.)
 *  - VFB_E_RESTARTED / VFB_E_CLOSED (also after a VFB_E_TIMEOUT): the session is down (brokerd
 *    restarting, the connection lost). The address is LEFT MAPPED as it was: the kernel keeps the
 *    mapping, brokerd keeps its pages booked for this process until it exits (or, once resumed,
 *    the session holds them again), and a driver in the middle of I/O is not cut off. Writes through it
 *    reach the device while brokerd is down; stop them if that matters, and vfb_resume (which
 *    revokes it if brokerd no longer holds it).
 *  - VFB_E_SESSION_ENDED: brokerd ended the session and released its pages. Once the
 *    VFB_EVENT_SESSION_ENDED event is read the address is PROT_NONE, as after a revocation.
 * The state is what the library has read off the connection: a call or vfb_read_event notices an
 * end, this accessor does not read. NULL: VFB_E_INVALID_ARGUMENT. */
VFB_API int vfb_mapping_status(const vfb_mapping *m);

/* ---- events --------------------------------------------------------------------------------- */

enum {
  /* brokerd revoked a mapping (an operator, a policy reload, a device drained or gone, ...). By
   * the time vfb_read_event returns it, the library has replaced the mapping AT THE SAME ADDRESS
   * by an inaccessible one (mmap MAP_FIXED, PROT_NONE, anonymous): an access faults (SIGSEGV)
   * instead of reaching memory the session no longer holds. vfb_unmap it (brokerd keeps the pages
   * booked until then). */
  VFB_EVENT_REVOKED = 1,
  /* A device's health changed (health, device_id). */
  VFB_EVENT_DEVICE_HEALTH = 2,
  /* The session is down: reason is brokerd's ("restart": vfb_resume; "operator", "lease-stalled",
   * "shutdown", ...: brokerd released everything) or the library's "connection-lost" (the
   * connection closed without a word, or the library closed it: vfb_resume). Delivered once; calls
   * fail from now on (vfb_mapping_status says what that means for a mapping). For a reason of
   * brokerd's other than "restart", every live mapping is made PROT_NONE as this event is read.
   * Afterwards: vfb_resume, or vfb_disconnect (it munmaps and frees every device and mapping; no
   * vfb_unmap or vfb_close_device needed first, though both are allowed and free their object). */
  VFB_EVENT_SESSION_ENDED = 3,
};

typedef struct vfb_event {
  int kind; /* VFB_EVENT_* */
  /* REVOKED: the mapping concerned (the caller's still: vfb_unmap it), or NULL when no mapping
   * object of the session holds the cookie (already unmapped). Several objects of one cookie (the
   * same range mapped twice) get one event each. */
  vfb_mapping *mapping;
  uint64_t device_file_id; /* REVOKED */
  uint64_t cookie;         /* REVOKED */
  int health;              /* DEVICE_HEALTH: VFB_HEALTH_* */
  char device_id[VFB_MAX_DEVICE_ID + 1]; /* REVOKED, DEVICE_HEALTH */
  /* REVOKED: brokerd's reason ("operator", "policy-reload", "device-drain", "device-gone",
   * "shutdown", "lost-at-restart"); SESSION_ENDED: see above. Cut to fit. */
  char reason[64];
  char message[512]; /* brokerd's message (REVOKED, SESSION_ENDED), cut to fit */
} vfb_event;

/* An fd that polls readable (POLLIN) whenever vfb_read_event has something to return: events
 * brokerd pushed on the connection, INCLUDING those the library already took off the connection
 * while it waited for the reply to another call. It is an epoll fd the library owns, holding the
 * connection's socket and an eventfd the library sets while it holds unread events. Poll it
 * (poll, select, epoll, an event loop), never read or close it; it stays the same fd for the
 * session's life (vfb_resume included) and is closed by vfb_disconnect. It polls readable also
 * when the connection is closed (an end to read). -1 for a NULL s. */
VFB_API int vfb_event_fd(const vfb_session *s);

/* Takes the next event without blocking. 1: *ev is an event; 0: none now; < 0: VFB_E_INVALID_ARGUMENT
 * (NULL), VFB_E_PROTOCOL (brokerd sent something that is no event: the connection is closed,
 * and a SESSION_ENDED event follows), VFB_E_IO. Events come in brokerd's order; a
 * revocation is applied (the address made inaccessible) as it is returned. At most
 * VFB_MAX_QUEUED_HEALTH device-health events are held unread: a newer one for a device replaces
 * the one held for it (the latest health of each device is kept), and one for a device past that
 * many is dropped. Revocations: one is held per (device file, cookie) (a repeat while one is
 * unread is dropped), so those of the session's mappings are never dropped; those of cookies no
 * mapping object holds (already unmapped, or never mapped: a misbehaving peer) are held up to
 * VFB_MAX_QUEUED_UNKNOWN, then dropped. The session's end: one. Whatever the peer sends, the queue
 * holds at most (mappings of the session) + VFB_MAX_QUEUED_UNKNOWN + VFB_MAX_QUEUED_HEALTH + 1
 * events. */
VFB_API int vfb_read_event(vfb_session *s, vfb_event *ev);

#ifdef __cplusplus
}
#endif

#endif /* VFIO_BROKER_H */

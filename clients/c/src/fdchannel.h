/* fdchannel.h (private): one connection to brokerd's fd channel (fd.sock, fdchannel.proto) and its
 * request/reply exchange. It owns the socket (close-on-exec, non-blocking, closed on any error that
 * loses the stream position), the deadline of each exchange, the reply's protobuf decoding, the
 * check that a reply carries exactly the fds its status says, the translation of FdStatus into
 * VFB_E_* codes and the connection's last error message. It never decides what to request or what
 * a granted fd is for; it never keeps a received fd past the call that hands it over.
 *
 * Limits (fdchannel.proto): a request frame at most 3072 bytes; a reply frame at most 64 KiB with at
 * most 1 fd (32 for a batch); brokerd's message kept to VFB_FDCHANNEL_MESSAGE_MAX bytes. */
#ifndef VFB_FDCHANNEL_H
#define VFB_FDCHANNEL_H

#include <stddef.h>

#include "frame.h"
#include "paths.h"
#include "vfiobroker/v1/fdchannel.pb-c.h"

#define VFB_FDCHANNEL_REQUEST_MAX_BYTES 3072
#define VFB_FDCHANNEL_REPLY_MAX_BYTES (64 * 1024)
#define VFB_FDCHANNEL_BATCH_MAX_ITEMS 32
#define VFB_FDCHANNEL_TICKET_MAX 32
#define VFB_FDCHANNEL_MESSAGE_MAX 512
#define VFB_FDCHANNEL_PATH_MAX VFB_SOCKET_PATH_MAX

typedef enum {
  VFB_EXPECT_NO_FD,  /* a release: the reply carries none */
  VFB_EXPECT_ONE_FD, /* a ticket or a grant: an OK reply carries exactly one */
  VFB_EXPECT_BATCH,  /* a batch: one per granted item (status OK, length > 0), in order */
} vfb_expect;

typedef struct vfb_fdchannel {
  int sock; /* -1 once closed (by an error or by brokerd) */
  int timeout_ms;
  char path[VFB_FDCHANNEL_PATH_MAX + 1];
  /* What went wrong last and what to do (brokerd's message, or the library's), NUL-terminated. */
  char message[VFB_FDCHANNEL_MESSAGE_MAX + 1];
  vfb_frame_reader reader;
  uint8_t reply[VFB_FDCHANNEL_REPLY_MAX_BYTES];
} vfb_fdchannel;

/* A connection object for the fd channel at `path` (an AF_UNIX stream socket), not connected yet.
 * timeout_ms (> 0) bounds the connect and each exchange. Returns 0 and *out (free it with
 * vfb_fdchannel_close), VFB_E_INVALID_ARGUMENT (path empty or longer than a sun_path, timeout_ms
 * <= 0) or VFB_E_NO_MEMORY. */
int vfb_fdchannel_new(const char *path, int timeout_ms, vfb_fdchannel **out);

/* Connects (again, if an earlier error or brokerd closed it; a live connection is kept). Returns 0,
 * VFB_E_CONNECT (nothing listens, permission denied, ...: the message says which and what to do) or
 * VFB_E_TIMEOUT (brokerd's backlog stayed full). */
int vfb_fdchannel_connect(vfb_fdchannel *c);

/* Closes the connection and frees the object. NULL is fine. */
void vfb_fdchannel_close(vfb_fdchannel *c);

/* The last error's message (never NULL; "" before any error). Owned by c, valid until its next call. */
const char *vfb_fdchannel_message(const vfb_fdchannel *c);

/* One FdRequest -> FdReply exchange. On 0: *reply is the decoded reply (free it with
 * vfiobroker__v1__fd_reply__free_unpacked(*reply, NULL)) and fds[0..*nfds) its fds, the caller's
 * (fds has room for VFB_FDCHANNEL_BATCH_MAX_ITEMS). On error *reply is NULL, *nfds 0, and no fd is
 * left open: VFB_E_* of the status for a refusal (the message is brokerd's), VFB_E_TIMEOUT,
 * VFB_E_CLOSED, VFB_E_PROTOCOL (an undecodable reply, an OK reply with the wrong number of fds), or
 * a frame error; after any of these but a refusal, the connection is closed and later calls get
 * VFB_E_CLOSED. */
int vfb_fdchannel_exchange(vfb_fdchannel *c, const Vfiobroker__V1__FdRequest *req, vfb_expect expect,
                           Vfiobroker__V1__FdReply **reply, int *fds, size_t *nfds);

/* Redeems a ticket from CreateMapping: the mapping's fd (*fd, the caller's, close-on-exec) and the
 * reply (as in vfb_fdchannel_exchange). VFB_E_INVALID_ARGUMENT, with nothing sent, for a ticket
 * that is not 1..32 lower-case hex digits. */
int vfb_fdchannel_fetch_fd(vfb_fdchannel *c, const char *ticket, Vfiobroker__V1__FdReply **reply, int *fd);

/* The VFB_E_* code of an FdStatus (VFB_OK for FD_STATUS_OK, VFB_E_PROTOCOL for one this version
 * does not know). Pure. */
int vfb_fd_status_error(int status);

#endif

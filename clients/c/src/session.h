/* session.h (private): the objects behind the public handles (vfb_session, vfb_device,
 * vfb_mapping, vfb_device_list) and the functions the library's files share. It owns their layout
 * and who links to whom: a session owns its devices, a device its mappings, each in a doubly
 * linked list, so that freeing one frees what hangs under it. It never declares anything public
 * (vfio-broker.h does), and nothing in it is global: every piece of state hangs off a session.
 *
 * Files: workload.c the exchange (connection, request, reply, events taken off on the way);
 * refusal.c brokerd's statuses as VFB_E_* codes; session.c connect, hello, accessors, disconnect;
 * resume.c vfb_resume; devices.c devices, regions, device lists; mappings.c single grants and
 * releases and the mmap; batch.c vfb_map_many / vfb_unmap_many; events.c the event fd, the queue
 * and the revocation's PROT_NONE. */
#ifndef VFB_SESSION_H
#define VFB_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "paths.h"
#include "vfio-broker.h"
#include "vfiobroker/v1/workload.pb-c.h"

#define VFB_WL_PROTOCOL_VERSION 1
#define VFB_WL_REQUEST_MAX_BYTES 3072
#define VFB_WL_REPLY_MAX_BYTES (64 * 1024)
#define VFB_MESSAGE_MAX 511
#define VFB_TOKEN_LEN 32
#define VFB_SESSION_ID_MAX 64
#define VFB_SERVER_VERSION_MAX 64

/* Where a session stands. Every state but LIVE has no connection (sock -1). */
typedef enum {
  VFB_LIVE = 0,
  VFB_DOWN_RESTART, /* brokerd said lease_ended "restart": it keeps the grants, vfb_resume */
  VFB_DOWN_LOST,    /* the connection closed without a word (or the library closed it) */
  VFB_DOWN_ENDED,   /* brokerd ended the session (lease_ended, another reason): all released */
} vfb_state;

/* Down in a way vfb_resume may take back (a restart, a lost connection; not brokerd's end): what
 * the caller could not send is owed to the resume. */
#define VFB_RESUMABLE(s) ((s)->state == VFB_DOWN_RESTART || (s)->state == VFB_DOWN_LOST)

typedef struct vfb_region_rec {
  vfb_region info; /* info.name points at name below */
  char name[16];
} vfb_region_rec;

struct vfb_mapping {
  vfb_device *d;
  vfb_mapping *prev, *next;
  void *addr;
  uint64_t length;
  uint64_t cookie;
  uint64_t offset;
  unsigned region;
  int attr, prot, backing;
  int revoked; /* replaced by PROT_NONE */
};

struct vfb_device {
  vfb_session *s;
  vfb_device *prev, *next;
  char id[VFB_MAX_DEVICE_ID + 1];
  uint64_t df_id;
  int health;
  int gone; /* brokerd did not hold it after a resume */
  unsigned nregions;
  vfb_region_rec *regions;
  vfb_mapping *maps;
};

struct vfb_device_list {
  size_t n;
  int truncated;
  struct vfb_listed {
    char id[VFB_MAX_DEVICE_ID + 1];
    int health;
    unsigned nregions;
    vfb_region_rec *regions;
  } *devices;
};

/* One event waiting for vfb_read_event. */
typedef struct vfb_queued {
  struct vfb_queued *next;
  int kind;
  uint64_t df_id, cookie;
  int health;
  int delivered; /* REVOKED: objects of the cookie already returned */
  int unknown;   /* REVOKED: no mapping object held the cookie when it was queued */
  char device_id[VFB_MAX_DEVICE_ID + 1];
  char reason[64];
  char message[512];
} vfb_queued;

/* A request id: "vfb-" and the session's request number (brokerd allows 64 characters). */
#define VFB_REQUEST_ID_SIZE 32

/* A release or close made while the connection was down, sent by vfb_resume; or a grant or an
 * open whose connection went down before its reply (regrant, reopen): vfb_resume asks for it again
 * with its request id and gives back what brokerd answers, which is the lost one if brokerd had
 * recorded it (it records before it replies), else one made now. */
typedef struct vfb_owed {
  struct vfb_owed *next;
  int close; /* 1: close device file df_id; 0: release cookie (or regrant) */
  uint64_t df_id, cookie;
  int regrant;
  Vfiobroker__V1__FdGrant grant; /* regrant: the grant as sent; request_id points at rid */
  int reopen;
  char device_id[VFB_MAX_DEVICE_ID + 1]; /* reopen: the device opened */
  char rid[VFB_REQUEST_ID_SIZE];
} vfb_owed;

struct vfb_session {
  int sock; /* -1 when down */
  int epfd; /* vfb_event_fd */
  int evfd; /* set while queue is not empty */
  int ev_set;
  vfb_state state;
  int end_queued; /* the SESSION_ENDED event was queued */
  int timeout_ms;
  char fd_path[VFB_SOCKET_PATH_MAX + 1];
  char path_from[VFB_SOCKET_PATH_MAX + 64]; /* where fd_path came from, for connect's messages */
  int lib_closed;          /* the library closed the connection (timeout, protocol error) */
  char down_why[160];      /* why the library closed it */
  char end_reason[64];     /* brokerd's lease_ended reason, or "connection-lost" */
  char client_name[VFB_MAX_CLIENT_NAME + 1];
  char session_id[VFB_SESSION_ID_MAX + 1];
  char token[VFB_TOKEN_LEN + 1];
  char server_version[VFB_SERVER_VERSION_MAX + 1];
  int resumed;
  vfb_identity identity;
  uint64_t page_size;
  char message[VFB_MESSAGE_MAX + 1];
  vfb_device *devices;
  vfb_queued *q_head, *q_tail;
  size_t q_health;
  size_t q_unknown; /* queued revocations of cookies no mapping object held */
  vfb_owed *owed;
  uint64_t requests_sent; /* numbers the grants' and opens' request ids */
  vfb_frame_reader reader;
  uint8_t *rbuf; /* VFB_WL_REPLY_MAX_BYTES */
};

/* ---- workload.c ---- */
/* Records the session's last error (bounded, cut at a UTF-8 boundary) and returns err. */
int vfb_say(vfb_session *s, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The code a call gets while the session is down (VFB_E_RESTARTED, VFB_E_CLOSED,
 * VFB_E_SESSION_ENDED), with its message recorded. */
int vfb_down_error(vfb_session *s);
/* Connects a fresh socket to s->fd_path (close-on-exec, then non-blocking): the fd or a VFB_E_*. */
int vfb_wl_connect(vfb_session *s);
/* The connection is gone: closes the socket and moves to `state` (LOST queues the end event). */
void vfb_wl_down(vfb_session *s, vfb_state state, const char *reason, const char *message);
/* What a reply's status means as a VFB_E_* code, for a request of kind `req_kind`
 * (VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_*): refusal.c. Pure. */
int vfb_refusal_error(int status, const char *grpc_code, int req_kind);
/* One request, its reply: sends req, then reads frames until the reply (events on the way are
 * queued). On 0: *reply (free with vfiobroker__v1__workload_reply__free_unpacked) has status OK
 * and fds[0..*nfds) are its fds (at most max_fds). On error nothing is left open, the message is
 * recorded; brokerd's refusal leaves the connection usable. */
int vfb_wl_call(vfb_session *s, const Vfiobroker__V1__WorkloadRequest *req, size_t max_fds,
                Vfiobroker__V1__WorkloadReply **reply, int *fds, size_t *nfds);
/* Reads what the socket has now without blocking, queueing events; 0, or an error (the session is
 * then down). */
int vfb_wl_poll(vfb_session *s);

/* ---- session.c ---- */
/* The hello on s's fresh connection: fills the session from the welcome. *held (if not NULL) gets
 * the decoded reply for the caller to read `held` from (free it). */
int vfb_hello(vfb_session *s, const char *resume_token, Vfiobroker__V1__WorkloadReply **held);
/* Copies at most cap-1 bytes of src into dst, NUL-terminated, not cutting a UTF-8 sequence. */
void vfb_copy(char *dst, size_t cap, const char *src);

/* ---- devices.c ---- */
/* Fills rec[0..n) from brokerd's regions; VFB_E_NO_MEMORY. */
int vfb_regions_from(vfb_region_rec **rec, unsigned *n, Vfiobroker__V1__Region **regions, size_t nregions);
int vfb_health_of(int pb_health);
/* Frees a device object and every mapping object under it (munmapping them). */
void vfb_device_free(vfb_device *d);
/* Owes brokerd a release or a close (sent by vfb_resume) if the session is VFB_RESUMABLE; best
 * effort: on ENOMEM it is not owed (brokerd releases it when the session ends). */
void vfb_owe(vfb_session *s, int close, uint64_t df_id, uint64_t cookie);
/* Sends an open of device_id (compact layout) with request id rid and reads brokerd's reply. */
int vfb_open_send(vfb_session *s, const char *device_id, const char *rid, Vfiobroker__V1__WorkloadReply **r);
/* The session's next request id, in rid (VFB_REQUEST_ID_SIZE bytes). */
void vfb_request_id(vfb_session *s, char *rid);
/* Gives grant g a request id of its own, in rid (VFB_REQUEST_ID_SIZE bytes, which must outlive g). */
void vfb_grant_request_id(vfb_session *s, Vfiobroker__V1__FdGrant *g, char *rid);
/* After a grant exchange failed: if the connection is down, g is owed as a regrant (best effort). */
void vfb_owe_grant(vfb_session *s, const Vfiobroker__V1__FdGrant *g);
/* After an open exchange failed: if the connection is down, the open (device, request id) is
 * owed as a reopen whose device file vfb_resume closes (best effort). */
void vfb_owe_open(vfb_session *s, const char *device_id, const char *rid);

/* ---- mappings.c ---- */
/* The checks vfb_map makes before it sends: 0, or the code with the message recorded; fills g. */
int vfb_grant_args(vfb_device *d, unsigned region, uint64_t offset, uint64_t length, int attr, int prot,
                   Vfiobroker__V1__FdGrant *g);
/* Sends grant g as it is (its request id set) and reads brokerd's reply: 0 with *r and its fds. */
int vfb_grant_send(vfb_session *s, Vfiobroker__V1__FdGrant *g, Vfiobroker__V1__WorkloadReply **r, int *fds,
                   size_t *nfds);
/* vfb_grant_args' checks, then one grant exchange: 0 with *reply (the caller's to free; its grant
 * is set) and *fd (the caller's), or a code with nothing left: a reply without its one fd is given
 * back to brokerd, VFB_E_PROTOCOL. Shared by vfb_map and the preload shim's vfb_grant_fd. */
int vfb_grant_call(vfb_device *d, unsigned region, uint64_t offset, uint64_t length, int attr, int prot,
                   Vfiobroker__V1__WorkloadReply **reply, int *fd);
/* A mapping object for a granted FdReply and its fd (mmapped, fd closed in all cases). */
int vfb_mapping_from(vfb_device *d, const Vfiobroker__V1__FdReply *r, int fd, vfb_mapping **out);
/* munmaps m and frees it (unlinked from its device). */
void vfb_mapping_free(vfb_mapping *m);

/* ---- events.c ---- */
/* The epoll fd and eventfd of a new session; VFB_E_IO. */
int vfb_events_open(vfb_session *s);
void vfb_events_close(vfb_session *s);
/* Adds or removes the session's socket in the epoll set. */
int vfb_events_watch(vfb_session *s, int sock);
/* An event frame from brokerd: queued (bounded as vfio-broker.h says). */
void vfb_events_take(vfb_session *s, const Vfiobroker__V1__WorkloadEvent *e);
/* Queues a revocation of (df, cookie) or the session's end. */
void vfb_events_revoke(vfb_session *s, uint64_t df_id, uint64_t cookie, const char *device_id,
                       const char *reason, const char *message);
void vfb_events_end(vfb_session *s, const char *reason, const char *message);
/* Makes m inaccessible at its address (MAP_FIXED PROT_NONE); 0 or VFB_E_IO. */
int vfb_revoke_mapping(vfb_mapping *m);

#endif

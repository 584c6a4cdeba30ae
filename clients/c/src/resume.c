/* resume.c: vfb_resume: after brokerd restarted, a fresh connection and a hello with the session's
 * resume token take the session back (brokerd checks the kernel identity: same uid, pid and start
 * time). It owns the reconciliation with what the welcome says brokerd holds: a device file not
 * held makes its device object "gone", a mapping not held is revoked (an event with reason
 * "lost-at-restart", applied as any revocation when read), the releases and closes made while
 * the connection was down are sent, and grants and opens whose reply the connection's end lost
 * are asked for again by request id and given back. It never creates device or mapping objects. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "session.h"

static const Vfiobroker__V1__WorkloadHeldDevice *held_device(const Vfiobroker__V1__WorkloadWelcome *w, uint64_t id) {
  for (size_t i = 0; i < w->n_held; i++)
    if (w->held[i]->device_file_id == id) return w->held[i];
  return NULL;
}

static int holds_cookie(const Vfiobroker__V1__WorkloadHeldDevice *h, uint64_t cookie) {
  for (size_t i = 0; i < h->n_cookies; i++)
    if (h->cookies[i] == cookie) return 1;
  return 0;
}

/* Objects brokerd no longer holds: devices marked gone, mappings revoked (as events). */
static void reconcile(vfb_session *s, const Vfiobroker__V1__WorkloadWelcome *w) {
  for (vfb_device *d = s->devices; d != NULL; d = d->next) {
    const Vfiobroker__V1__WorkloadHeldDevice *h = held_device(w, d->df_id);
    if (h == NULL) d->gone = 1;
    for (vfb_mapping *m = d->maps; m != NULL; m = m->next)
      if (!m->revoked && (h == NULL || !holds_cookie(h, m->cookie)))
        vfb_events_revoke(s, d->df_id, m->cookie, d->id, "lost-at-restart",
                          "brokerd did not hold this mapping when the session resumed; vfb_unmap it");
  }
}

/* An owed regrant: the lost grant asked for again with its request id (brokerd answers the grant
 * it recorded, with a fresh fd, or makes it now), its fd closed; the cookie is then released. */
static uint64_t regrant(vfb_session *s, const vfb_owed *o) {
  Vfiobroker__V1__FdGrant g = o->grant;
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fds[1];
  size_t nfds = 0;
  if (vfb_grant_send(s, &g, &r, fds, &nfds) != VFB_OK) return 0;
  for (size_t i = 0; i < nfds; i++) close(fds[i]);
  uint64_t cookie = r->grant != NULL ? r->grant->cookie : 0;
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return cookie;
}

/* An owed reopen: the lost open asked for again with its request id; the device file brokerd
 * answers (the lost one if it had recorded it), to be closed. 0 if none. */
static uint64_t reopen(vfb_session *s, const vfb_owed *o) {
  Vfiobroker__V1__WorkloadReply *r = NULL;
  if (vfb_open_send(s, o->device_id, o->rid, &r) != VFB_OK) return 0;
  uint64_t id = r->device_opened != NULL ? r->device_opened->device_file_id : 0;
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  for (const vfb_device *d = s->devices; d != NULL; d = d->next)
    if (d->df_id == id) return 0; /* never one of ours; if brokerd says so, it stays */
  return id;
}

/* Releases cookie of device file df_id, or closes df_id (close); the outcome is not the caller's. */
static void give_back(vfb_session *s, int close, uint64_t df_id, uint64_t cookie) {
  Vfiobroker__V1__WorkloadRequest req = VFIOBROKER__V1__WORKLOAD_REQUEST__INIT;
  Vfiobroker__V1__FdRelease rel = VFIOBROKER__V1__FD_RELEASE__INIT;
  Vfiobroker__V1__WorkloadCloseDevice c = VFIOBROKER__V1__WORKLOAD_CLOSE_DEVICE__INIT;
  if (close) {
    c.device_file_id = df_id;
    req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_CLOSE_DEVICE;
    req.close_device = &c;
  } else {
    rel.device_file_id = df_id;
    rel.cookie = cookie;
    req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_RELEASE;
    req.release = &rel;
  }
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fds[1];
  size_t nfds = 0;
  if (vfb_wl_call(s, &req, 0, &r, fds, &nfds) == VFB_OK) vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
}

/* One owed entry: a release or close if brokerd still holds what it names, or a lost open or
 * grant asked for again and given back. Returns 1 when the entry is settled (paid, or nothing is
 * left to pay), 0 when the connection went down first: the entry then stays owed for the next
 * vfb_resume, advanced past what brokerd answered (a lost grant it answered is now the release of
 * that cookie, a lost open the close of that device file), so a brokerd killed again in the middle
 * of this resume loses nothing and is never asked twice for one grant. */
static int pay(vfb_session *s, const Vfiobroker__V1__WorkloadWelcome *w, vfb_owed *o) {
  if (o->reopen) {
    uint64_t id = reopen(s, o);
    if (s->state != VFB_LIVE) return 0;
    if (id == 0) return 1;
    o->reopen = 0;
    o->close = 1;
    o->df_id = id;
  } else {
    const Vfiobroker__V1__WorkloadHeldDevice *h = held_device(w, o->df_id);
    if (h == NULL) return 1; /* the device file is gone, with whatever was granted on it */
    if (o->regrant) {
      uint64_t cookie = regrant(s, o);
      if (s->state != VFB_LIVE) return 0;
      if (cookie == 0) return 1;
      o->regrant = 0;
      o->cookie = cookie;
    } else if (!o->close && !holds_cookie(h, o->cookie)) {
      return 1;
    }
  }
  give_back(s, o->close, o->df_id, o->cookie);
  return s->state == VFB_LIVE;
}

/* Why brokerd is back without the session, as far as the library can tell. */
static int refused(vfb_session *s, vfb_state was) {
  if (was == VFB_DOWN_RESTART)
    return vfb_say(s, VFB_E_RESUME_REFUSED,
                   "brokerd is back but did not restore session %s (its state was not kept, or the session ended "
                   "when its resume grace ran out); vfb_disconnect and connect again",
                   s->session_id);
  if (s->lib_closed)
    return vfb_say(s, VFB_E_RESUME_REFUSED,
                   "brokerd answers but no longer holds session %s: the library closed its connection (%s) and "
                   "brokerd ends a session whose connection closes; vfb_disconnect and connect again",
                   s->session_id, s->down_why);
  return vfb_say(s, VFB_E_RESUME_REFUSED,
                 "brokerd answers but does not hold session %s: it ended the session when the connection closed, "
                 "or it restarted without its state; vfb_disconnect and connect again",
                 s->session_id);
}

/* A failed hello of vfb_resume as the caller should see it: a connection brokerd closed before
 * answering (the stopping brokerd's backlog, a new one not ready) is "not back yet". */
static int hello_failed(vfb_session *s, int rc) {
  if (rc == VFB_E_RESTARTED || rc == VFB_E_CLOSED || rc == VFB_E_SESSION_ENDED || rc == VFB_E_FRAME_TRUNCATED)
    return vfb_say(s, VFB_E_CONNECT,
                   "brokerd at %s accepted the connection but closed it before answering the hello (a stopping "
                   "brokerd, or a new one not ready); try vfb_resume again later",
                   s->fd_path);
  if (rc == VFB_E_TIMEOUT)
    return vfb_say(s, VFB_E_TIMEOUT,
                   "brokerd at %s accepted the connection but did not answer the hello within %d ms (hung, stopped "
                   "or overloaded); try vfb_resume again later",
                   s->fd_path, s->timeout_ms);
  return rc;
}

VFB_API int vfb_resume(vfb_session *s) {
  if (s == NULL) return VFB_E_INVALID_ARGUMENT;
  if (s->state == VFB_LIVE) return VFB_OK;
  if (s->state == VFB_DOWN_ENDED)
    return vfb_say(s, VFB_E_SESSION_ENDED,
                   "brokerd ended session %s (reason \"%s\") and released what it held: there is nothing to resume; "
                   "vfb_disconnect and connect again",
                   s->session_id, s->end_reason);
  if (s->sock >= 0) { /* the old connection, when its EOF was not read yet (a "restart" event read first) */
    close(s->sock);   /* also leaves the epoll set */
    s->sock = -1;
    vfb_frame_reader_next(&s->reader);
  }
  int fd = vfb_wl_connect(s);
  if (fd < 0) return fd;
  s->sock = fd;
  vfb_frame_reader_next(&s->reader);
  int rc = vfb_events_watch(s, fd);
  if (rc < 0) {
    close(fd);
    s->sock = -1;
    return rc;
  }
  vfb_state was = s->state;
  int lib_closed = s->lib_closed;
  char why[sizeof s->down_why];
  memcpy(why, s->down_why, sizeof why);
  Vfiobroker__V1__WorkloadReply *r = NULL;
  char token[VFB_TOKEN_LEN + 1], id[VFB_SESSION_ID_MAX + 1];
  memcpy(token, s->token, sizeof token);
  memcpy(id, s->session_id, sizeof id);
  rc = vfb_hello(s, token, &r);
  if (rc < 0) {
    s->state = was; /* a failed hello leaves the session as it was, down, for the same reason */
    s->lib_closed = lib_closed;
    memcpy(s->down_why, why, sizeof why);
    return hello_failed(s, rc);
  }
  if (!s->resumed) {
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    /* A fresh session that we do not want: closing the connection ends it in brokerd. */
    memcpy(s->token, token, sizeof token);
    memcpy(s->session_id, id, sizeof id);
    close(s->sock);
    s->sock = -1;
    vfb_frame_reader_next(&s->reader);
    return refused(s, was);
  }
  s->state = VFB_LIVE;
  s->end_queued = 0;
  s->lib_closed = 0;
  s->end_reason[0] = '\0';
  reconcile(s, r->hello);
  /* Each entry leaves the list only once settled: one the connection's end interrupts stays, with
   * those after it, for the next vfb_resume. */
  while (s->owed != NULL && s->state == VFB_LIVE) {
    vfb_owed *o = s->owed;
    if (!pay(s, r->hello, o)) break;
    s->owed = o->next;
    free(o);
  }
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  if (s->state != VFB_LIVE) return vfb_down_error(s);
  return VFB_OK;
}

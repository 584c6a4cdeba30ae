/* events.c: a session's events for the caller: the event fd (an epoll fd holding the connection's
 * socket and an eventfd that is set while events wait in the library), the queue of events taken
 * off the socket, vfb_read_event, and what a revocation does to the mapping it names (replaced at
 * the same address by an inaccessible anonymous mapping, before the event is returned). It owns
 * the queue's bound, whatever the peer sends: one revocation queued per (device file, cookie) (a
 * repeat is dropped), at most VFB_MAX_QUEUED_UNKNOWN of cookies no mapping object holds, one end,
 * device health coalesced per device and held for at most VFB_MAX_QUEUED_HEALTH devices. It never
 * sends anything to brokerd and never frees a mapping (the caller does, with vfb_unmap). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "session.h"

int vfb_events_open(vfb_session *s) {
  s->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (s->epfd < 0) return vfb_say(s, VFB_E_IO, "epoll_create1: %s", strerror(errno));
  s->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->evfd < 0) {
    int e = errno;
    close(s->epfd);
    s->epfd = -1;
    errno = e;
    return vfb_say(s, VFB_E_IO, "eventfd: %s", strerror(e));
  }
  struct epoll_event ev = {.events = EPOLLIN, .data = {.fd = s->evfd}};
  if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->evfd, &ev) < 0) {
    int e = errno;
    vfb_events_close(s);
    errno = e;
    return vfb_say(s, VFB_E_IO, "epoll_ctl: %s", strerror(e));
  }
  return VFB_OK;
}

void vfb_events_close(vfb_session *s) {
  if (s->epfd >= 0) close(s->epfd);
  if (s->evfd >= 0) close(s->evfd);
  s->epfd = s->evfd = -1;
  while (s->q_head != NULL) {
    vfb_queued *q = s->q_head;
    s->q_head = q->next;
    free(q);
  }
  s->q_tail = NULL;
  s->q_health = 0;
  s->q_unknown = 0;
}

int vfb_events_watch(vfb_session *s, int sock) {
  struct epoll_event ev = {.events = EPOLLIN, .data = {.fd = sock}};
  if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, sock, &ev) < 0)
    return vfb_say(s, VFB_E_IO, "epoll_ctl(ADD): %s", strerror(errno));
  return VFB_OK;
}

/* The eventfd follows the queue: set while it holds something, clear when empty. */
static void signal_queue(vfb_session *s) {
  int want = s->q_head != NULL;
  if (want == s->ev_set) return;
  if (want) {
    uint64_t one = 1;
    if (write(s->evfd, &one, sizeof one) == (ssize_t)sizeof one) s->ev_set = 1;
  } else {
    uint64_t v;
    if (read(s->evfd, &v, sizeof v) >= 0 || errno == EAGAIN) s->ev_set = 0;
  }
}

static vfb_queued *push(vfb_session *s, int kind) {
  vfb_queued *q = calloc(1, sizeof *q);
  if (q == NULL) return NULL; /* out of memory: the event is lost, the state it reports is not */
  q->kind = kind;
  if (s->q_tail != NULL) s->q_tail->next = q;
  else s->q_head = q;
  s->q_tail = q;
  signal_queue(s);
  return q;
}

/* The first live mapping object of (df, cookie), or NULL. */
static vfb_mapping *holder(vfb_session *s, uint64_t df_id, uint64_t cookie) {
  for (vfb_device *d = s->devices; d != NULL; d = d->next) {
    if (d->df_id != df_id) continue;
    for (vfb_mapping *m = d->maps; m != NULL; m = m->next)
      if (m->cookie == cookie && !m->revoked) return m;
  }
  return NULL;
}

void vfb_events_revoke(vfb_session *s, uint64_t df_id, uint64_t cookie, const char *device_id, const char *reason,
                       const char *message) {
  for (vfb_queued *q = s->q_head; q != NULL; q = q->next)
    if (q->kind == VFB_EVENT_REVOKED && q->df_id == df_id && q->cookie == cookie) return; /* already queued */
  int unknown = holder(s, df_id, cookie) == NULL;
  if (unknown && s->q_unknown >= VFB_MAX_QUEUED_UNKNOWN) return; /* a peer's flood of cookies never held */
  vfb_queued *q = push(s, VFB_EVENT_REVOKED);
  if (q == NULL) return;
  q->unknown = unknown;
  if (unknown) s->q_unknown++;
  q->df_id = df_id;
  q->cookie = cookie;
  vfb_copy(q->device_id, sizeof q->device_id, device_id);
  vfb_copy(q->reason, sizeof q->reason, reason);
  vfb_copy(q->message, sizeof q->message, message);
}

void vfb_events_end(vfb_session *s, const char *reason, const char *message) {
  if (s->end_queued) return;
  s->end_queued = 1;
  vfb_queued *q = push(s, VFB_EVENT_SESSION_ENDED);
  if (q == NULL) return;
  vfb_copy(q->reason, sizeof q->reason, reason);
  vfb_copy(q->message, sizeof q->message, message);
}

static void health(vfb_session *s, const char *device_id, int h) {
  for (vfb_queued *q = s->q_head; q != NULL; q = q->next)
    if (q->kind == VFB_EVENT_DEVICE_HEALTH && strcmp(q->device_id, device_id) == 0) {
      q->health = h;
      return;
    }
  if (s->q_health >= VFB_MAX_QUEUED_HEALTH) return;
  vfb_queued *q = push(s, VFB_EVENT_DEVICE_HEALTH);
  if (q == NULL) return;
  s->q_health++;
  q->health = h;
  vfb_copy(q->device_id, sizeof q->device_id, device_id);
}

void vfb_events_take(vfb_session *s, const Vfiobroker__V1__WorkloadEvent *e) {
  switch (e->kind_case) {
    case VFIOBROKER__V1__WORKLOAD_EVENT__KIND_REVOCATION: {
      const Vfiobroker__V1__WorkloadRevocation *r = e->revocation;
      if (r != NULL) vfb_events_revoke(s, r->device_file_id, r->cookie, r->device_id, r->reason, r->message);
      return;
    }
    case VFIOBROKER__V1__WORKLOAD_EVENT__KIND_DEVICE_HEALTH:
      if (e->device_health != NULL) health(s, e->device_health->device_id, vfb_health_of(e->device_health->health));
      return;
    case VFIOBROKER__V1__WORKLOAD_EVENT__KIND_LEASE_ENDED:
      if (e->lease_ended != NULL) vfb_events_end(s, e->lease_ended->reason, e->lease_ended->message);
      return;
    default:
      return; /* an event kind of a newer brokerd: ignored, as workload.proto allows */
  }
}

int vfb_revoke_mapping(vfb_mapping *m) {
  if (m->revoked) return VFB_OK;
  void *p = mmap(m->addr, (size_t)m->length, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return VFB_E_IO;
  m->revoked = 1;
  return VFB_OK;
}

static void pop(vfb_session *s) {
  vfb_queued *q = s->q_head;
  s->q_head = q->next;
  if (s->q_head == NULL) s->q_tail = NULL;
  if (q->kind == VFB_EVENT_DEVICE_HEALTH) s->q_health--;
  if (q->kind == VFB_EVENT_REVOKED && q->unknown) s->q_unknown--;
  free(q);
  signal_queue(s);
}

static void fill(vfb_event *ev, const vfb_queued *q) {
  memset(ev, 0, sizeof *ev);
  ev->kind = q->kind;
  ev->device_file_id = q->df_id;
  ev->cookie = q->cookie;
  ev->health = q->health;
  memcpy(ev->device_id, q->device_id, sizeof ev->device_id);
  memcpy(ev->reason, q->reason, sizeof ev->reason);
  memcpy(ev->message, q->message, sizeof ev->message);
}

VFB_API int vfb_event_fd(const vfb_session *s) {
  return s == NULL ? -1 : s->epfd;
}

VFB_API int vfb_read_event(vfb_session *s, vfb_event *ev) {
  if (s == NULL) return VFB_E_INVALID_ARGUMENT;
  if (ev == NULL) return vfb_say(s, VFB_E_INVALID_ARGUMENT, "vfb_read_event: ev is NULL");
  int rc = VFB_OK;
  if (s->q_head == NULL) rc = vfb_wl_poll(s);
  while (s->q_head != NULL) {
    vfb_queued *q = s->q_head;
    if (q->kind == VFB_EVENT_DEVICE_HEALTH) {
      for (vfb_device *d = s->devices; d != NULL; d = d->next)
        if (strcmp(d->id, q->device_id) == 0) d->health = q->health;
    }
    if (q->kind == VFB_EVENT_SESSION_ENDED && s->state == VFB_DOWN_ENDED) {
      /* brokerd ended the session and released every grant: as a revocation of each mapping. */
      for (vfb_device *d = s->devices; d != NULL; d = d->next)
        for (vfb_mapping *m = d->maps; m != NULL; m = m->next)
          if (vfb_revoke_mapping(m) < 0)
            return vfb_say(s, VFB_E_IO, "mmap(MAP_FIXED, PROT_NONE) over the mapping at %p: %s", m->addr,
                           strerror(errno));
    }
    if (q->kind != VFB_EVENT_REVOKED) {
      fill(ev, q);
      pop(s);
      return 1;
    }
    vfb_mapping *m = holder(s, q->df_id, q->cookie);
    if (m == NULL && q->delivered > 0) {
      pop(s); /* every object of the cookie had its event */
      continue;
    }
    fill(ev, q);
    if (m == NULL) {
      pop(s);
      return 1;
    }
    if (vfb_revoke_mapping(m) < 0)
      return vfb_say(s, VFB_E_IO, "mmap(MAP_FIXED, PROT_NONE) over the revoked mapping at %p: %s", m->addr,
                     strerror(errno));
    ev->mapping = m;
    q->delivered++;
    if (holder(s, q->df_id, q->cookie) == NULL) pop(s);
    return 1;
  }
  return rc < 0 ? rc : 0;
}

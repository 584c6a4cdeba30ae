/* mappings.c: single mappings: the checks made before a grant is sent (the region exists and can
 * be mmapped, the range is page aligned and inside it, WC is possible or fallback allowed, the
 * flags are known), the grant and its fd mmapped as brokerd's reply says (offset, length, prot),
 * the release, and the mapping's accessors. It owns vfb_mapping objects and their mmaps: the fd
 * received is closed as soon as it is mmapped (or refused), and a mapping object's address is
 * munmapped exactly once, when the object is freed. It never decides policy (brokerd does). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "grantfd.h"
#include "session.h"

static const vfb_region_rec *region_of(const vfb_device *d, unsigned index) {
  for (unsigned i = 0; i < d->nregions; i++)
    if (d->regions[i].info.index == index) return &d->regions[i];
  return NULL;
}

int vfb_grant_args(vfb_device *d, unsigned region, uint64_t offset, uint64_t length, int attr, int prot,
                   Vfiobroker__V1__FdGrant *g) {
  vfb_session *s = d->s;
  int base = attr & ~VFB_ATTR_FALLBACK_UC;
  if (base != VFB_ATTR_UC && base != VFB_ATTR_WC)
    return vfb_say(s, VFB_E_INVALID_ARGUMENT, "attr %#x: use VFB_ATTR_UC or VFB_ATTR_WC, optionally | VFB_ATTR_FALLBACK_UC",
                   (unsigned)attr);
  if (prot != VFB_PROT_READ && prot != VFB_PROT_RW)
    return vfb_say(s, VFB_E_INVALID_ARGUMENT, "prot %d: use VFB_PROT_READ or VFB_PROT_RW", prot);
  if (d->gone)
    return vfb_say(s, VFB_E_NOT_FOUND, "brokerd no longer held device file %llu of %s after its restart; open it again",
                   (unsigned long long)d->df_id, d->id);
  const vfb_region_rec *r = region_of(d, region);
  if (r == NULL || !r->info.mappable)
    return vfb_say(s, VFB_E_NO_SUCH_REGION, "%s has no %sregion %u; vfb_region_at lists its regions", d->id,
                   r == NULL ? "" : "mappable ", region);
  uint64_t page = s->page_size;
  if (length == 0 || offset % page != 0 || length % page != 0)
    return vfb_say(s, VFB_E_UNALIGNED,
                   "offset %#llx and length %#llx must be multiples of the %llu-byte page, length at least one page",
                   (unsigned long long)offset, (unsigned long long)length, (unsigned long long)page);
  if (offset > r->info.size || length > r->info.size - offset)
    return vfb_say(s, VFB_E_OUT_OF_RANGE, "%#llx+%#llx passes the end of %s %s (%llu bytes)",
                   (unsigned long long)offset, (unsigned long long)length, d->id, r->name,
                   (unsigned long long)r->info.size);
  int fallback = (attr & VFB_ATTR_FALLBACK_UC) != 0;
  if (base == VFB_ATTR_WC && !(r->info.attributes & VFB_ATTR_WC) && !(fallback && (r->info.attributes & VFB_ATTR_UC)))
    return vfb_say(s, VFB_E_WC_UNAVAILABLE,
                   "this host cannot map %s %s write-combining (it allows %s%s); ask for VFB_ATTR_UC, or OR "
                   "VFB_ATTR_FALLBACK_UC into attr",
                   d->id, r->name, r->info.attributes & VFB_ATTR_UC ? "UC" : "nothing",
                   r->info.prefetchable ? "" : ", not a prefetchable BAR");
  g->device_file_id = d->df_id;
  g->region_index = region;
  g->offset = offset;
  g->length = length;
  g->attribute = base == VFB_ATTR_WC ? VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC : VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_UC;
  g->prot = prot == VFB_PROT_RW ? VFIOBROKER__V1__PROT__PROT_READ_WRITE : VFIOBROKER__V1__PROT__PROT_READ;
  g->allow_fallback = fallback;
  return VFB_OK;
}

int vfb_mapping_from(vfb_device *d, const Vfiobroker__V1__FdReply *r, int fd, vfb_mapping **out) {
  vfb_session *s = d->s;
  *out = NULL;
  int prot = r->prot == VFIOBROKER__V1__PROT__PROT_READ_WRITE ? VFB_PROT_RW : VFB_PROT_READ;
  if (r->length == 0 || r->length > SIZE_MAX || (r->mmap_offset & (s->page_size - 1)) != 0 ||
      r->mmap_offset > (uint64_t)INT64_MAX) {
    close(fd);
    return vfb_say(s, VFB_E_PROTOCOL, "brokerd's grant says length %llu at mmap offset %#llx, which cannot be mmapped",
                   (unsigned long long)r->length, (unsigned long long)r->mmap_offset);
  }
  vfb_mapping *m = calloc(1, sizeof *m);
  if (m == NULL) {
    close(fd);
    return vfb_say(s, VFB_E_NO_MEMORY, "out of memory for a mapping");
  }
  void *p = mmap(NULL, (size_t)r->length, prot == VFB_PROT_RW ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd,
                 (off_t)r->mmap_offset);
  int e = errno;
  close(fd);
  if (p == MAP_FAILED) {
    free(m);
    errno = e;
    return vfb_say(s, VFB_E_IO, "mmap of the granted fd (%llu bytes at %#llx): %s", (unsigned long long)r->length,
                   (unsigned long long)r->mmap_offset, strerror(e));
  }
  m->d = d;
  m->addr = p;
  m->length = r->length;
  m->cookie = r->cookie;
  m->offset = r->region_offset;
  m->region = r->region_index;
  m->attr = r->effective_attribute == VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC ? VFB_ATTR_WC : VFB_ATTR_UC;
  m->prot = prot;
  m->backing = (int)r->backing;
  m->next = d->maps;
  if (d->maps != NULL) d->maps->prev = m;
  d->maps = m;
  *out = m;
  return VFB_OK;
}

void vfb_mapping_free(vfb_mapping *m) {
  vfb_device *d = m->d;
  munmap(m->addr, (size_t)m->length);
  if (m->prev != NULL) m->prev->next = m->next;
  else d->maps = m->next;
  if (m->next != NULL) m->next->prev = m->prev;
  free(m);
}

/* One release exchange of (df, cookie); a release owed if the connection is down. */
static int release(vfb_session *s, uint64_t df_id, uint64_t cookie) {
  if (VFB_RESUMABLE(s)) {
    vfb_owe(s, 0, df_id, cookie);
    return vfb_down_error(s);
  }
  Vfiobroker__V1__FdRelease rel = VFIOBROKER__V1__FD_RELEASE__INIT;
  rel.device_file_id = df_id;
  rel.cookie = cookie;
  Vfiobroker__V1__WorkloadRequest req = VFIOBROKER__V1__WORKLOAD_REQUEST__INIT;
  req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_RELEASE;
  req.release = &rel;
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fds[1];
  size_t nfds = 0;
  int rc = vfb_wl_call(s, &req, 0, &r, fds, &nfds);
  if (rc < 0) {
    vfb_owe(s, 0, df_id, cookie);
    return rc;
  }
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return VFB_OK;
}

int vfb_grant_send(vfb_session *s, Vfiobroker__V1__FdGrant *g, Vfiobroker__V1__WorkloadReply **r, int *fds,
                   size_t *nfds) {
  Vfiobroker__V1__WorkloadRequest req = VFIOBROKER__V1__WORKLOAD_REQUEST__INIT;
  req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT;
  req.grant = g;
  return vfb_wl_call(s, &req, 1, r, fds, nfds);
}

/* One grant exchange: vfb_grant_args' checks, the request, and brokerd's reply with its one fd. */
int vfb_grant_call(vfb_device *d, unsigned region, uint64_t offset, uint64_t length, int attr, int prot,
                   Vfiobroker__V1__WorkloadReply **reply, int *fd) {
  vfb_session *s = d->s;
  Vfiobroker__V1__FdGrant g = VFIOBROKER__V1__FD_GRANT__INIT;
  int rc = vfb_grant_args(d, region, offset, length, attr, prot, &g);
  if (rc < 0) return rc;
  char rid[VFB_REQUEST_ID_SIZE];
  vfb_grant_request_id(s, &g, rid);
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fds[1];
  size_t nfds = 0;
  rc = vfb_grant_send(s, &g, &r, fds, &nfds);
  if (rc < 0) {
    /* brokerd may have recorded it before the connection went down: vfb_resume gives it back. */
    vfb_owe_grant(s, &g);
    return rc;
  }
  if (r->grant == NULL || nfds != 1) {
    for (size_t i = 0; i < nfds; i++) close(fds[i]);
    uint64_t cookie = r->grant != NULL ? r->grant->cookie : 0;
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    if (cookie != 0) release(s, d->df_id, cookie);
    return vfb_say(s, VFB_E_PROTOCOL, "brokerd's grant came with %zu fds instead of 1", nfds);
  }
  *reply = r;
  *fd = fds[0];
  return VFB_OK;
}

VFB_API int vfb_map(vfb_device *d, unsigned region, uint64_t offset, uint64_t length, int attr, int prot,
                    vfb_mapping **out) {
  if (out != NULL) *out = NULL;
  if (d == NULL) return VFB_E_INVALID_ARGUMENT;
  vfb_session *s = d->s;
  if (out == NULL) return vfb_say(s, VFB_E_INVALID_ARGUMENT, "vfb_map: out is NULL");
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fd = -1;
  int rc = vfb_grant_call(d, region, offset, length, attr, prot, &r, &fd);
  if (rc < 0) return rc;
  rc = vfb_mapping_from(d, r->grant, fd, out);
  uint64_t cookie = r->grant->cookie;
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  if (rc < 0) {
    char why[VFB_MESSAGE_MAX + 1];
    memcpy(why, s->message, sizeof why);
    release(s, d->df_id, cookie); /* the grant is given back; its outcome does not change ours */
    vfb_say(s, rc, "%s; the grant was released", why);
  }
  return rc;
}

VFB_API int vfb_unmap(vfb_mapping *m) {
  if (m == NULL) return VFB_E_INVALID_ARGUMENT;
  vfb_device *d = m->d;
  vfb_session *s = d->s;
  uint64_t cookie = m->cookie;
  vfb_mapping_free(m);
  if (d->gone) return VFB_OK; /* brokerd lost it in its restart: nothing to release */
  if (s->state == VFB_DOWN_ENDED) return vfb_down_error(s);
  return release(s, d->df_id, cookie);
}

/* The preload shim's release (grantfd.h): vfb_unmap's, for a grant no mapping object holds. */
int vfb_release_grant(vfb_device *d, uint64_t cookie) {
  if (d->gone) return VFB_OK;
  if (d->s->state == VFB_DOWN_ENDED) return vfb_down_error(d->s);
  return release(d->s, d->df_id, cookie);
}

VFB_API void *vfb_mapping_addr(const vfb_mapping *m) {
  return m == NULL ? NULL : m->addr;
}
VFB_API uint64_t vfb_mapping_length(const vfb_mapping *m) {
  return m == NULL ? 0 : m->length;
}
VFB_API int vfb_mapping_attr(const vfb_mapping *m) {
  return m == NULL ? 0 : m->attr;
}
VFB_API int vfb_mapping_prot(const vfb_mapping *m) {
  return m == NULL ? 0 : m->prot;
}
VFB_API uint64_t vfb_mapping_cookie(const vfb_mapping *m) {
  return m == NULL ? 0 : m->cookie;
}
VFB_API int vfb_mapping_backing(const vfb_mapping *m) {
  return m == NULL ? VFB_BACKING_UNKNOWN : m->backing;
}
VFB_API unsigned vfb_mapping_region(const vfb_mapping *m) {
  return m == NULL ? 0 : m->region;
}
VFB_API uint64_t vfb_mapping_offset(const vfb_mapping *m) {
  return m == NULL ? 0 : m->offset;
}
VFB_API vfb_device *vfb_mapping_device(const vfb_mapping *m) {
  return m == NULL ? NULL : m->d;
}
VFB_API int vfb_mapping_status(const vfb_mapping *m) {
  if (m == NULL) return VFB_E_INVALID_ARGUMENT;
  /* brokerd's end first (it released everything), then the mapping's own revocation, then a
   * session merely down. */
  vfb_state st = m->d->s->state;
  if (st == VFB_DOWN_ENDED) return VFB_E_SESSION_ENDED;
  if (m->revoked) return VFB_E_MAPPING_REVOKED;
  if (st == VFB_DOWN_RESTART) return VFB_E_RESTARTED;
  if (st == VFB_DOWN_LOST) return VFB_E_CLOSED;
  return VFB_OK;
}

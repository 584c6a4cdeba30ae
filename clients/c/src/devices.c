/* devices.c: devices of a session: the device list (vfb_list_devices and its accessors), opening
 * and closing a device file, its regions as brokerd described them (index, name, size, flags, the
 * attributes this host can give), and the releases and closes owed to brokerd while the
 * connection is down. It owns the vfb_device and vfb_device_list objects; it never mmaps
 * (mappings.c does) and keeps brokerd's region description as given, without deciding anything
 * from it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"

int vfb_health_of(int pb) {
  switch (pb) {
    case VFIOBROKER__V1__DEVICE_HEALTH__DEVICE_HEALTH_HEALTHY: return VFB_HEALTH_HEALTHY;
    case VFIOBROKER__V1__DEVICE_HEALTH__DEVICE_HEALTH_DRAINING: return VFB_HEALTH_DRAINING;
    case VFIOBROKER__V1__DEVICE_HEALTH__DEVICE_HEALTH_GONE: return VFB_HEALTH_GONE;
    default: return VFB_HEALTH_UNKNOWN;
  }
}

int vfb_regions_from(vfb_region_rec **rec, unsigned *n, Vfiobroker__V1__Region **regions, size_t nregions) {
  *rec = NULL;
  *n = 0;
  if (nregions == 0) return VFB_OK;
  vfb_region_rec *r = calloc(nregions, sizeof *r);
  if (r == NULL) return VFB_E_NO_MEMORY;
  for (size_t i = 0; i < nregions; i++) {
    const Vfiobroker__V1__Region *g = regions[i];
    vfb_copy(r[i].name, sizeof r[i].name, g->name);
    r[i].info.index = g->index;
    r[i].info.size = g->size;
    r[i].info.readable = g->readable;
    r[i].info.writable = g->writable;
    r[i].info.mappable = g->mappable;
    r[i].info.prefetchable = g->prefetchable;
    for (size_t a = 0; a < g->n_attributes; a++) {
      if (g->attributes[a] == VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_UC) r[i].info.attributes |= VFB_ATTR_UC;
      if (g->attributes[a] == VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC) r[i].info.attributes |= VFB_ATTR_WC;
    }
  }
  *rec = r;
  *n = (unsigned)nregions;
  return VFB_OK;
}

static int region_out(const vfb_region_rec *r, vfb_region *out) {
  *out = r->info;
  out->name = r->name;
  return VFB_OK;
}

static int valid_id(const char *id) {
  size_t n = 0;
  for (; id[n] != '\0'; n++) {
    if (n >= VFB_MAX_DEVICE_ID) return 0;
    char c = id[n];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == ':' || c == '-'))
      return 0;
  }
  return n > 0;
}

/* ---- the device list ---- */

VFB_API void vfb_device_list_free(vfb_device_list *l) {
  if (l == NULL) return;
  for (size_t i = 0; i < l->n; i++) free(l->devices[i].regions);
  free(l->devices);
  free(l);
}

VFB_API int vfb_list_devices(vfb_session *s, vfb_device_list **out) {
  if (out != NULL) *out = NULL;
  if (s == NULL) return VFB_E_INVALID_ARGUMENT;
  if (out == NULL) return vfb_say(s, VFB_E_INVALID_ARGUMENT, "vfb_list_devices: out is NULL");
  Vfiobroker__V1__WorkloadListDevices ld = VFIOBROKER__V1__WORKLOAD_LIST_DEVICES__INIT;
  Vfiobroker__V1__WorkloadRequest req = VFIOBROKER__V1__WORKLOAD_REQUEST__INIT;
  req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_LIST_DEVICES;
  req.list_devices = &ld;
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fds[1];
  size_t nfds = 0;
  int rc = vfb_wl_call(s, &req, 0, &r, fds, &nfds);
  if (rc < 0) return rc;
  const Vfiobroker__V1__WorkloadDevices *ds = r->devices;
  vfb_device_list *l = calloc(1, sizeof *l);
  size_t n = ds != NULL ? ds->n_devices : 0;
  if (l != NULL && n > 0) l->devices = calloc(n, sizeof *l->devices);
  if (l == NULL || (n > 0 && l->devices == NULL)) {
    free(l);
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    return vfb_say(s, VFB_E_NO_MEMORY, "out of memory for a list of %zu devices", n);
  }
  l->truncated = ds != NULL && ds->truncated;
  for (size_t i = 0; i < n; i++) {
    const Vfiobroker__V1__Device *d = ds->devices[i];
    struct vfb_listed *x = &l->devices[i];
    vfb_copy(x->id, sizeof x->id, d->id);
    x->health = vfb_health_of(d->health);
    if (vfb_regions_from(&x->regions, &x->nregions, d->regions, d->n_regions) < 0) {
      l->n = i;
      vfb_device_list_free(l);
      vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
      return vfb_say(s, VFB_E_NO_MEMORY, "out of memory for the regions of %zu devices", n);
    }
    l->n = i + 1;
  }
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  *out = l;
  return VFB_OK;
}

VFB_API size_t vfb_device_list_count(const vfb_device_list *l) {
  return l == NULL ? 0 : l->n;
}

VFB_API int vfb_device_list_truncated(const vfb_device_list *l) {
  return l != NULL && l->truncated;
}

VFB_API const char *vfb_device_list_id(const vfb_device_list *l, size_t i) {
  return l == NULL || i >= l->n ? NULL : l->devices[i].id;
}

VFB_API int vfb_device_list_health(const vfb_device_list *l, size_t i) {
  return l == NULL || i >= l->n ? VFB_HEALTH_UNKNOWN : l->devices[i].health;
}

VFB_API unsigned vfb_device_list_region_count(const vfb_device_list *l, size_t i) {
  return l == NULL || i >= l->n ? 0 : l->devices[i].nregions;
}

VFB_API int vfb_device_list_region(const vfb_device_list *l, size_t i, unsigned pos, vfb_region *out) {
  if (l == NULL || out == NULL || i >= l->n || pos >= l->devices[i].nregions) return VFB_E_INVALID_ARGUMENT;
  return region_out(&l->devices[i].regions[pos], out);
}

/* ---- device files ---- */

VFB_API int vfb_open_device(vfb_session *s, const char *device_id, vfb_device **out) {
  if (out != NULL) *out = NULL;
  if (s == NULL) return VFB_E_INVALID_ARGUMENT;
  if (out == NULL || device_id == NULL)
    return vfb_say(s, VFB_E_INVALID_ARGUMENT, "vfb_open_device: %s is NULL", out == NULL ? "out" : "device_id");
  if (!valid_id(device_id))
    return vfb_say(s, VFB_E_INVALID_ARGUMENT,
                   "a device id is 1 to %d characters: letters, digits and . _ : -", VFB_MAX_DEVICE_ID);
  char rid[VFB_REQUEST_ID_SIZE];
  vfb_request_id(s, rid);
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int rc = vfb_open_send(s, device_id, rid, &r);
  if (rc < 0) {
    /* brokerd may have recorded it before the connection went down: vfb_resume closes it. */
    vfb_owe_open(s, device_id, rid);
    return rc;
  }
  const Vfiobroker__V1__WorkloadDeviceOpened *op = r->device_opened;
  vfb_device *d = calloc(1, sizeof *d);
  if (d == NULL || op == NULL || op->device == NULL ||
      vfb_regions_from(&d->regions, &d->nregions, op->device->regions, op->device->n_regions) < 0) {
    int err = op == NULL || op->device == NULL ? VFB_E_PROTOCOL : VFB_E_NO_MEMORY;
    uint64_t id = op != NULL ? op->device_file_id : 0;
    free(d);
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    /* brokerd opened it: give it back (its close is this session's, so nothing leaks either way). */
    if (id != 0) vfb_owe(s, 1, id, 0);
    return vfb_say(s, err, err == VFB_E_NO_MEMORY ? "out of memory for the device" : "the open's reply names no device");
  }
  d->s = s;
  d->df_id = op->device_file_id;
  d->health = vfb_health_of(op->device->health);
  vfb_copy(d->id, sizeof d->id, device_id);
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  d->next = s->devices;
  if (s->devices != NULL) s->devices->prev = d;
  s->devices = d;
  *out = d;
  return VFB_OK;
}

VFB_API const char *vfb_device_id(const vfb_device *d) {
  return d == NULL ? "" : d->id;
}

VFB_API uint64_t vfb_device_file_id(const vfb_device *d) {
  return d == NULL ? 0 : d->df_id;
}

VFB_API int vfb_device_health(const vfb_device *d) {
  return d == NULL ? VFB_HEALTH_UNKNOWN : d->health;
}

VFB_API unsigned vfb_region_count(const vfb_device *d) {
  return d == NULL ? 0 : d->nregions;
}

VFB_API int vfb_region_at(const vfb_device *d, unsigned pos, vfb_region *out) {
  if (d == NULL) return VFB_E_INVALID_ARGUMENT;
  if (out == NULL) return vfb_say(d->s, VFB_E_INVALID_ARGUMENT, "vfb_region_at: out is NULL");
  if (pos >= d->nregions)
    return vfb_say(d->s, VFB_E_INVALID_ARGUMENT, "vfb_region_at: position %u, but %s has %u regions (0 to %u)", pos,
                   d->id, d->nregions, d->nregions == 0 ? 0 : d->nregions - 1);
  return region_out(&d->regions[pos], out);
}

VFB_API int vfb_region_info(const vfb_device *d, unsigned region, vfb_region *out) {
  if (d == NULL) return VFB_E_INVALID_ARGUMENT;
  if (out == NULL) return vfb_say(d->s, VFB_E_INVALID_ARGUMENT, "vfb_region_info: out is NULL");
  for (unsigned i = 0; i < d->nregions; i++)
    if (d->regions[i].info.index == region) return region_out(&d->regions[i], out);
  return vfb_say(d->s, VFB_E_NO_SUCH_REGION, "%s has no region %u; vfb_region_at lists its regions", d->id, region);
}

void vfb_device_free(vfb_device *d) {
  while (d->maps != NULL) vfb_mapping_free(d->maps);
  vfb_session *s = d->s;
  if (d->prev != NULL) d->prev->next = d->next;
  else s->devices = d->next;
  if (d->next != NULL) d->next->prev = d->prev;
  free(d->regions);
  free(d);
}

int vfb_open_send(vfb_session *s, const char *device_id, const char *rid, Vfiobroker__V1__WorkloadReply **r) {
  Vfiobroker__V1__WorkloadOpenDevice o = VFIOBROKER__V1__WORKLOAD_OPEN_DEVICE__INIT;
  o.device_id = (char *)device_id;
  o.layout = VFIOBROKER__V1__LAYOUT__LAYOUT_COMPACT;
  o.request_id = (char *)rid;
  Vfiobroker__V1__WorkloadRequest req = VFIOBROKER__V1__WORKLOAD_REQUEST__INIT;
  req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_OPEN_DEVICE;
  req.open_device = &o;
  int fds[1];
  size_t nfds = 0;
  return vfb_wl_call(s, &req, 0, r, fds, &nfds);
}

/* A new owed entry at the head of s's list, or NULL: the session is not VFB_RESUMABLE (nothing
 * can be owed to a resume), or ENOMEM (nothing is owed, see vfb_owe). */
static vfb_owed *owed_push(vfb_session *s) {
  if (!VFB_RESUMABLE(s)) return NULL;
  vfb_owed *o = calloc(1, sizeof *o);
  if (o == NULL) return NULL;
  o->next = s->owed;
  s->owed = o;
  return o;
}

void vfb_owe(vfb_session *s, int close, uint64_t df_id, uint64_t cookie) {
  vfb_owed *o = owed_push(s);
  if (o == NULL) return;
  o->close = close;
  o->df_id = df_id;
  o->cookie = cookie;
}

void vfb_request_id(vfb_session *s, char *rid) {
  snprintf(rid, VFB_REQUEST_ID_SIZE, "vfb-%llu", (unsigned long long)++s->requests_sent);
}

void vfb_grant_request_id(vfb_session *s, Vfiobroker__V1__FdGrant *g, char *rid) {
  vfb_request_id(s, rid);
  g->request_id = rid;
}

void vfb_owe_open(vfb_session *s, const char *device_id, const char *rid) {
  vfb_owed *o = owed_push(s);
  if (o == NULL) return;
  o->reopen = 1;
  vfb_copy(o->device_id, sizeof o->device_id, device_id);
  vfb_copy(o->rid, sizeof o->rid, rid);
}

void vfb_owe_grant(vfb_session *s, const Vfiobroker__V1__FdGrant *g) {
  vfb_owed *o = owed_push(s);
  if (o == NULL) return;
  o->regrant = 1;
  o->df_id = g->device_file_id;
  o->grant = *g;
  vfb_copy(o->rid, sizeof o->rid, g->request_id);
  o->grant.request_id = o->rid;
}

VFB_API int vfb_close_device(vfb_device *d) {
  if (d == NULL) return VFB_E_INVALID_ARGUMENT;
  vfb_session *s = d->s;
  uint64_t id = d->df_id;
  int gone = d->gone;
  vfb_device_free(d);
  if (gone) return vfb_say(s, VFB_E_NOT_FOUND, "brokerd no longer held device file %llu after the restart",
                           (unsigned long long)id);
  if (VFB_RESUMABLE(s)) {
    vfb_owe(s, 1, id, 0);
    return vfb_down_error(s);
  }
  Vfiobroker__V1__WorkloadCloseDevice c = VFIOBROKER__V1__WORKLOAD_CLOSE_DEVICE__INIT;
  c.device_file_id = id;
  Vfiobroker__V1__WorkloadRequest req = VFIOBROKER__V1__WORKLOAD_REQUEST__INIT;
  req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_CLOSE_DEVICE;
  req.close_device = &c;
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fds[1];
  size_t nfds = 0;
  int rc = vfb_wl_call(s, &req, 0, &r, fds, &nfds);
  if (rc < 0) {
    /* The connection went down on the way (a restart): the close is sent by vfb_resume. */
    vfb_owe(s, 1, id, 0);
    return rc;
  }
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return VFB_OK;
}

/* batch.c: several ranges in one exchange (vfb_map_many) and several releases in one
 * (vfb_unmap_many), over brokerd's batch (FdBatch: releases then grants, each item done on its own,
 * one FdReply per item, the fds of the granted items in item order). brokerd does not undo the
 * other items when one is refused; vfb_map_many is all or nothing for its caller: it gives back
 * what was granted (one more batch of releases) and closes every fd. It owns that undo and the
 * check that the reply's items and fds match the request; the mmaps are mappings.c's. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "session.h"

static void close_fds(int *fds, size_t n) {
  for (size_t i = 0; i < n; i++) close(fds[i]);
}

/* One batch exchange; on 0 *r has n_items == nreleases + ngrants. */
static int exchange(vfb_session *s, Vfiobroker__V1__FdBatch *b, Vfiobroker__V1__WorkloadReply **r, int *fds,
                    size_t *nfds) {
  Vfiobroker__V1__WorkloadRequest req = VFIOBROKER__V1__WORKLOAD_REQUEST__INIT;
  req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_BATCH;
  req.batch = b;
  int rc = vfb_wl_call(s, &req, b->n_grants, r, fds, nfds);
  if (rc < 0) return rc;
  if ((*r)->batch == NULL || (*r)->batch->n_items != b->n_releases + b->n_grants) {
    close_fds(fds, *nfds);
    vfiobroker__v1__workload_reply__free_unpacked(*r, NULL);
    *r = NULL;
    *nfds = 0;
    return vfb_say(s, VFB_E_PROTOCOL, "brokerd's batch reply does not have one item per request item");
  }
  return VFB_OK;
}

/* Releases (df, cookies[0..n)) in one batch; the first item's error, or 0. */
static int release_all(vfb_session *s, uint64_t df_id, const uint64_t *cookies, size_t n) {
  if (n == 0) return VFB_OK;
  if (VFB_RESUMABLE(s)) {
    for (size_t i = 0; i < n; i++) vfb_owe(s, 0, df_id, cookies[i]);
    return vfb_down_error(s);
  }
  Vfiobroker__V1__FdRelease items[VFB_MAX_BATCH];
  Vfiobroker__V1__FdRelease *ptrs[VFB_MAX_BATCH];
  for (size_t i = 0; i < n; i++) {
    vfiobroker__v1__fd_release__init(&items[i]);
    items[i].device_file_id = df_id;
    items[i].cookie = cookies[i];
    ptrs[i] = &items[i];
  }
  Vfiobroker__V1__FdBatch b = VFIOBROKER__V1__FD_BATCH__INIT;
  b.n_releases = n;
  b.releases = ptrs;
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fds[1];
  size_t nfds = 0;
  int rc = exchange(s, &b, &r, fds, &nfds);
  if (rc < 0) {
    for (size_t i = 0; i < n; i++) vfb_owe(s, 0, df_id, cookies[i]);
    return rc;
  }
  close_fds(fds, nfds);
  for (size_t i = 0; i < n && rc == VFB_OK; i++) {
    const Vfiobroker__V1__FdReply *it = r->batch->items[i];
    if (it->status != VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK) {
      rc = vfb_refusal_error((int)it->status, it->grpc_code, VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_RELEASE);
      vfb_say(s, rc, "release of mapping %llu: %s: %s", (unsigned long long)cookies[i], it->grpc_code, it->message);
    }
  }
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return rc;
}

/* A refused batch: the granted items given back, the first refusal returned. */
static int undo(vfb_device *d, const Vfiobroker__V1__FdReply *const *items, size_t n, int *fds, size_t nfds,
                int err, size_t bad) {
  vfb_session *s = d->s;
  close_fds(fds, nfds);
  uint64_t granted[VFB_MAX_BATCH];
  size_t ng = 0;
  for (size_t i = 0; i < n; i++)
    if (items[i]->status == VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK) granted[ng++] = items[i]->cookie;
  char why[VFB_MESSAGE_MAX + 1];
  memcpy(why, s->message, sizeof why);
  release_all(s, d->df_id, granted, ng);
  return vfb_say(s, err, "range %zu: %s; nothing was mapped (the %zu granted were released)", bad, why, ng);
}

VFB_API int vfb_map_many(vfb_device *d, const vfb_range *ranges, size_t n, vfb_mapping **out) {
  if (out != NULL && n <= VFB_MAX_BATCH)
    for (size_t i = 0; i < n; i++) out[i] = NULL;
  if (d == NULL) return VFB_E_INVALID_ARGUMENT;
  if (ranges == NULL || out == NULL)
    return vfb_say(d->s, VFB_E_INVALID_ARGUMENT, "vfb_map_many: %s is NULL", ranges == NULL ? "ranges" : "out");
  if (n == 0 || n > VFB_MAX_BATCH)
    return vfb_say(d->s, VFB_E_INVALID_ARGUMENT, "%zu ranges: a batch holds 1 to %d", n, VFB_MAX_BATCH);
  vfb_session *s = d->s;
  Vfiobroker__V1__FdGrant grants[VFB_MAX_BATCH];
  Vfiobroker__V1__FdGrant *ptrs[VFB_MAX_BATCH];
  char rids[VFB_MAX_BATCH][VFB_REQUEST_ID_SIZE];
  for (size_t i = 0; i < n; i++) {
    vfiobroker__v1__fd_grant__init(&grants[i]);
    const vfb_range *x = &ranges[i];
    int rc = vfb_grant_args(d, x->region, x->offset, x->length, x->attr, x->prot, &grants[i]);
    if (rc < 0) {
      char why[VFB_MESSAGE_MAX + 1];
      memcpy(why, s->message, sizeof why);
      return vfb_say(s, rc, "range %zu: %s; nothing was sent", i, why);
    }
    ptrs[i] = &grants[i];
  }
  for (size_t i = 0; i < n; i++) vfb_grant_request_id(s, &grants[i], rids[i]);
  Vfiobroker__V1__FdBatch b = VFIOBROKER__V1__FD_BATCH__INIT;
  b.n_grants = n;
  b.grants = ptrs;
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fds[VFB_MAX_BATCH];
  size_t nfds = 0;
  int rc = exchange(s, &b, &r, fds, &nfds);
  if (rc < 0) {
    /* As vfb_map's: what brokerd may have recorded is given back by vfb_resume. */
    for (size_t i = 0; i < n; i++) vfb_owe_grant(s, &grants[i]);
    return rc;
  }
  const Vfiobroker__V1__FdReply *const *items = (const Vfiobroker__V1__FdReply *const *)r->batch->items;
  size_t ok = 0;
  int err = VFB_OK;
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    if (items[i]->status == VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK) ok++;
    else if (err == VFB_OK) {
      err = vfb_refusal_error((int)items[i]->status, items[i]->grpc_code, VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_GRANT);
      bad = i;
      vfb_say(s, err, "%s: %s", items[i]->grpc_code, items[i]->message);
    }
  }
  if (err == VFB_OK && ok != nfds) {
    err = VFB_E_PROTOCOL;
    vfb_say(s, err, "brokerd's batch reply granted %zu items with %zu fds", ok, nfds);
  }
  if (err != VFB_OK) {
    rc = undo(d, items, n, fds, nfds, err, bad);
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    return rc;
  }
  for (size_t i = 0; i < n; i++) {
    rc = vfb_mapping_from(d, items[i], fds[i], &out[i]);
    if (rc < 0) {
      /* fds[0..i] are closed (mapped, or refused by mmap); close the rest, give every grant back. */
      for (size_t j = 0; j < i; j++) {
        vfb_mapping_free(out[j]);
        out[j] = NULL;
      }
      rc = undo(d, items, n, fds + i + 1, n - i - 1, rc, i);
      vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
      return rc;
    }
  }
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return VFB_OK;
}

VFB_API int vfb_unmap_many(vfb_mapping **ms, size_t n) {
  if (ms == NULL || n == 0 || ms[0] == NULL) return VFB_E_INVALID_ARGUMENT; /* no session to tell */
  if (n > VFB_MAX_BATCH)
    return vfb_say(ms[0]->d->s, VFB_E_INVALID_ARGUMENT, "%zu mappings: a batch holds 1 to %d", n, VFB_MAX_BATCH);
  for (size_t i = 0; i < n; i++)
    if (ms[i] == NULL || ms[i]->d->s != ms[0]->d->s)
      return vfb_say(ms[0]->d->s, VFB_E_INVALID_ARGUMENT, "vfb_unmap_many: mapping %zu is %s", i,
                     ms[i] == NULL ? "NULL" : "of another session");
  vfb_session *s = ms[0]->d->s;
  /* One batch per device file would need grouping; a batch's releases each name their own. */
  Vfiobroker__V1__FdRelease items[VFB_MAX_BATCH];
  Vfiobroker__V1__FdRelease *ptrs[VFB_MAX_BATCH];
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    vfb_device *d = ms[i]->d;
    if (!d->gone) {
      vfiobroker__v1__fd_release__init(&items[k]);
      items[k].device_file_id = d->df_id;
      items[k].cookie = ms[i]->cookie;
      ptrs[k] = &items[k];
      k++;
    }
    vfb_mapping_free(ms[i]);
    ms[i] = NULL;
  }
  if (k == 0) return VFB_OK;
  if (s->state == VFB_DOWN_ENDED) return vfb_down_error(s);
  if (s->state != VFB_LIVE) {
    for (size_t i = 0; i < k; i++) vfb_owe(s, 0, items[i].device_file_id, items[i].cookie);
    return vfb_down_error(s);
  }
  Vfiobroker__V1__FdBatch b = VFIOBROKER__V1__FD_BATCH__INIT;
  b.n_releases = k;
  b.releases = ptrs;
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fds[1];
  size_t nfds = 0;
  int rc = exchange(s, &b, &r, fds, &nfds);
  if (rc < 0) {
    for (size_t i = 0; i < k; i++) vfb_owe(s, 0, items[i].device_file_id, items[i].cookie);
    return rc;
  }
  close_fds(fds, nfds);
  for (size_t i = 0; i < k && rc == VFB_OK; i++) {
    const Vfiobroker__V1__FdReply *it = r->batch->items[i];
    if (it->status != VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK) {
      rc = vfb_refusal_error((int)it->status, it->grpc_code, VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_RELEASE);
      vfb_say(s, rc, "release of mapping %llu: %s: %s", (unsigned long long)items[i].cookie, it->grpc_code,
              it->message);
    }
  }
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return rc;
}

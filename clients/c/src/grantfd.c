/* grantfd.c (private): vfb_grant_fd and vfb_release_grant (grantfd.h), the preload shim's hook
 * into the library: a grant delivered as an fd the caller keeps, and its release. It owns nothing
 * after it returns: the fd is the caller's. It never mmaps, and never decides policy (brokerd
 * does); it is compiled into the shim only. */
#include <string.h>
#include <unistd.h>

#include "grantfd.h"
#include "session.h"

int vfb_grant_fd(vfb_device *d, unsigned region, uint64_t offset, uint64_t length, int attr, int prot,
                 vfb_granted *out) {
  memset(out, 0, sizeof *out);
  out->fd = -1;
  if (d == NULL) return VFB_E_INVALID_ARGUMENT;
  vfb_session *s = d->s;
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fd = -1;
  int rc = vfb_grant_call(d, region, offset, length, attr, prot, &r, &fd);
  if (rc < 0) return rc;
  const Vfiobroker__V1__FdReply *fr = r->grant;
  if (fr->length == 0 || (fr->mmap_offset & (s->page_size - 1)) != 0 ||
      fr->mmap_offset > (uint64_t)INT64_MAX - fr->length) {
    close(fd);
    uint64_t cookie = fr->cookie;
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    vfb_release_grant(d, cookie);
    return vfb_say(s, VFB_E_PROTOCOL, "brokerd's grant came with a range that cannot be mmapped");
  }
  out->fd = fd;
  out->mmap_offset = fr->mmap_offset;
  out->length = fr->length;
  out->cookie = fr->cookie;
  out->attr = fr->effective_attribute == VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC ? VFB_ATTR_WC : VFB_ATTR_UC;
  out->prot = fr->prot == VFIOBROKER__V1__PROT__PROT_READ_WRITE ? VFB_PROT_RW : VFB_PROT_READ;
  out->backing = (int)fr->backing;
  vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return VFB_OK;
}

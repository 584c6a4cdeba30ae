/* grantfd.h (private): a grant whose fd is handed to the caller instead of being mmapped, and the
 * release of a grant by cookie. The one user is the preload shim (src/preload/), which must return
 * the granted fd itself from open(2): vfb_map mmaps and closes it, so no public call fits. It is
 * compiled into the shim only, never into libvfio-broker.so, and declares nothing public. */
#ifndef VFB_GRANTFD_H
#define VFB_GRANTFD_H

#include <stdint.h>

#include "vfio-broker.h"

/* What brokerd granted: the fd (close-on-exec, the caller's), where the granted range starts in
 * the fd's mmap space, and the grant's cookie, effective attribute and backing. */
typedef struct vfb_granted {
  int fd;
  uint64_t mmap_offset;
  uint64_t length;
  uint64_t cookie;
  int attr;    /* VFB_ATTR_UC or VFB_ATTR_WC (effective) */
  int prot;    /* VFB_PROT_READ or VFB_PROT_RW */
  int backing; /* VFB_BACKING_* */
} vfb_granted;

/* vfb_map's grant without the mmap: the same checks, the same exchange, and on success out->fd is
 * the received fd, the caller's to close (then vfb_release_grant). On failure no fd is left and
 * nothing stays granted; the codes are vfb_map's (VFB_E_IO excepted). */
int vfb_grant_fd(vfb_device *d, unsigned region, uint64_t offset, uint64_t length, int attr, int prot,
                 vfb_granted *out);

/* Releases the grant `cookie` of d in brokerd (vfb_unmap's release, owed to vfb_resume while the
 * session is down). 0 or vfb_unmap's codes. */
int vfb_release_grant(vfb_device *d, uint64_t cookie);

#endif

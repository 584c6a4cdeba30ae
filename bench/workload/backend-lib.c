/* backend-lib.c: the driver's client through libvfio-broker's public API only (vfio-broker.h):
 * vfb_connect + vfb_open_device for a session, vfb_map + one write + vfb_unmap for a grant. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <vfio-broker.h>

#include "backend.h"

struct bk_session {
  vfb_session *s;
  vfb_device *d;
};

const char *const bk_name = "libvfio-broker";

int bk_open(const char *socket, const char *device, bk_session **out) {
  bk_session *b = calloc(1, sizeof *b);
  if (!b) return -1;
  int rc = vfb_connect(socket, &b->s);
  if (rc != 0) {
    fprintf(stderr, "vfb_connect: %s\n", vfb_strerror(rc));
    free(b);
    return -1;
  }
  rc = vfb_open_device(b->s, device, &b->d);
  if (rc != 0) {
    fprintf(stderr, "vfb_open_device: %s: %s\n", vfb_strerror(rc), vfb_last_error(b->s));
    vfb_disconnect(b->s);
    free(b);
    return -1;
  }
  *out = b;
  return 0;
}

int bk_grant(bk_session *b, unsigned i) {
  vfb_mapping *m;
  int rc = vfb_map(b->d, 2, 0, 4096, VFB_ATTR_WC, VFB_PROT_RW, &m);
  if (rc != 0) {
    fprintf(stderr, "vfb_map: %s: %s\n", vfb_strerror(rc), vfb_last_error(b->s));
    return -1;
  }
  volatile uint32_t *p = vfb_mapping_addr(m);
  p[i & 1023] = i;
  rc = vfb_unmap(m);
  if (rc != 0) {
    fprintf(stderr, "vfb_unmap: %s: %s\n", vfb_strerror(rc), vfb_last_error(b->s));
    return -1;
  }
  return 0;
}

void bk_close(bk_session *b) {
  vfb_disconnect(b->s);
  free(b);
}

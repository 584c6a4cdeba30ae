/* backend-raw.c: the driver's client speaking the workload protocol's frames itself (wire.c). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"
#include "wire.h"

struct bk_session {
  wire_session w;
};

const char *const bk_name = "raw frames (bench/workload/wire.c)";

int bk_open(const char *socket, const char *device, bk_session **out) {
  bk_session *s = malloc(sizeof *s);
  if (!s) return -1;
  if (wire_open(&s->w, socket, device) < 0) {
    wire_close(&s->w);
    free(s);
    return -1;
  }
  *out = s;
  return 0;
}

int bk_grant(bk_session *s, unsigned i) {
  int fd;
  uint64_t cookie, off;
  if (wire_grant(&s->w, 2, 4096, &fd, &cookie, &off) < 0) return -1;
  volatile uint32_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off);
  close(fd);
  if (p == MAP_FAILED) {
    perror("mmap");
    return -1;
  }
  p[i & 1023] = i;
  munmap((void *)p, 4096);
  return wire_release(&s->w, cookie);
}

void bk_close(bk_session *s) {
  wire_close(&s->w);
  free(s);
}

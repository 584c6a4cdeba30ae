/* table.c: the shim's bookkeeping: the grants this process holds, which fds refer to each and which
 * address ranges are mapped from each. A grant's reference count is its fds plus its mappings; the
 * caller releases the grant when the count reaches 0. Pure bookkeeping: no I/O, no system call, and
 * every function is called with the shim's lock held (shim_lock). It never decides when to talk to
 * brokerd (broker.c does). */
#include <stdlib.h>

#include "shim.h"

atomic_int shim_live;

static shim_grant *grants;
static shim_grant **byfd; /* byfd[fd]: the grant fd refers to */
static size_t nbyfd;

typedef struct shim_map {
  struct shim_map *next;
  uintptr_t start, end;
  shim_grant *g;
} shim_map;
static shim_map *maps;

shim_grant *shim_grant_new(shim_dev *dev, uint64_t cookie, uint64_t mmap_offset, uint64_t size) {
  shim_grant *g = calloc(1, sizeof *g);
  if (g == NULL) return NULL;
  g->dev = dev;
  g->cookie = cookie;
  g->mmap_offset = mmap_offset;
  g->size = size;
  g->next = grants;
  grants = g;
  atomic_fetch_add(&shim_live, 1);
  return g;
}

void shim_grant_free(shim_grant *g) {
  for (shim_grant **p = &grants; *p != NULL; p = &(*p)->next)
    if (*p == g) {
      *p = g->next;
      break;
    }
  free(g);
  atomic_fetch_sub(&shim_live, 1);
}

int shim_unref(shim_grant *g) {
  return --g->refs == 0;
}

shim_grant *shim_fd_grant(int fd) {
  return fd >= 0 && (size_t)fd < nbyfd ? byfd[fd] : NULL;
}

int shim_fd_add(int fd, shim_grant *g) {
  if (fd < 0) return -1;
  if ((size_t)fd >= nbyfd) {
    size_t n = nbyfd == 0 ? 64 : nbyfd;
    while (n <= (size_t)fd) n *= 2;
    shim_grant **b = realloc(byfd, n * sizeof *b);
    if (b == NULL) return -1;
    for (size_t i = nbyfd; i < n; i++) b[i] = NULL;
    byfd = b;
    nbyfd = n;
  }
  byfd[fd] = g;
  g->refs++;
  return 0;
}

int shim_fd_limit(void) {
  return (int)nbyfd;
}

shim_grant *shim_fd_drop(int fd) {
  shim_grant *g = shim_fd_grant(fd);
  if (g != NULL) byfd[fd] = NULL;
  return g;
}

int shim_map_add(uintptr_t addr, size_t len, shim_grant *g) {
  shim_map *m = malloc(sizeof *m);
  if (m == NULL) return -1;
  m->start = addr;
  m->end = addr + len;
  m->g = g;
  m->next = maps;
  maps = m;
  g->refs++;
  return 0;
}

void shim_map_drop(uintptr_t addr, size_t len, void (*done)(shim_grant *)) {
  uintptr_t a = addr, b = addr + len;
  for (shim_map **p = &maps; *p != NULL;) {
    shim_map *m = *p;
    if (m->end <= a || m->start >= b) {
      p = &m->next;
      continue;
    }
    if (m->start < a && m->end > b) {
      /* A hole in the middle: two pieces, both the grant's. Out of memory: the whole range stays
       * tracked (the grant lives until the rest goes, or until exit). */
      shim_map *tail = malloc(sizeof *tail);
      if (tail == NULL) return;
      *tail = *m;
      tail->start = b;
      m->end = a;
      m->next = tail;
      m->g->refs++;
      p = &tail->next;
      continue;
    }
    if (m->start < a) {
      m->end = a;
      p = &m->next;
      continue;
    }
    if (m->end > b) {
      m->start = b;
      p = &m->next;
      continue;
    }
    *p = m->next;
    shim_grant *g = m->g;
    free(m);
    if (shim_unref(g)) done(g);
  }
}

void shim_table_orphan(void) {
  for (shim_grant *g = grants; g != NULL; g = g->next) g->dev = NULL;
}

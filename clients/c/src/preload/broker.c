/* broker.c: the shim's side of brokerd: the process's one session (made at the first BAR file that
 * the real open refused, never before), the device files it opened, a grant per brokered open and
 * its release when the grant's last fd and mapping are gone, brokerd's refusals as errno with one
 * message per process, and fork. It owns the shim's lock: every wrapper that touches the table or
 * the session holds it (the library's rule is one thread at a time per session). It never maps
 * anything itself and never decides policy (brokerd does).
 *
 * After fork the child does not use the parent's session: the child handler closes the session's
 * fds in the child (the parent's connection stays the parent's lease) and makes every inherited
 * grant the parent's (the child's closes and munmaps of it are tracked, never released). A child
 * that opens a BAR file gets a session of its own. The session ends when the process holds no
 * grant any more (no fd, no mapping), so an idle process holds nothing in brokerd. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "grantfd.h"
#include "session.h"
#include "shim.h"

struct shim_dev {
  shim_dev *next;
  vfb_device *d;
  char bdf[SHIM_BDF_LEN + 1];
  unsigned grants;
};

static pthread_mutex_t lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static vfb_session *session;
static shim_dev *devs;
/* Sessions left behind in forked children (kept reachable, never used): at most one per fork. */
static vfb_session *volatile forsaken; /* volatile: written, never read, yet must stay */
static atomic_int said;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

void shim_lock(void) {
  pthread_mutex_lock(&lock);
}
void shim_unlock(void) {
  pthread_mutex_unlock(&lock);
}

void shim_say_once(const char *fmt, ...) {
  if (atomic_exchange(&said, 1)) return;
  char buf[1024];
  int n = snprintf(buf, sizeof buf, "libvfio-broker-preload: ");
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m < sizeof buf - (size_t)n - 1 ? (size_t)m : sizeof buf - (size_t)n - 2);
  buf[len++] = '\n';
  ssize_t w = write(2, buf, len);
  (void)w;
}

static void prepare(void) {
  pthread_mutex_lock(&lock);
}
static void parent(void) {
  pthread_mutex_unlock(&lock);
}
static void child(void) {
  pthread_mutex_t fresh = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
  lock = fresh; /* the parent's thread held it; its owner is no thread of the child */
  if (session != NULL) {
    int fds[3] = {session->sock, session->epfd, session->evfd};
    for (int i = 0; i < 3; i++)
      if (fds[i] >= 0) shim_real_close(fds[i]);
    session->sock = session->epfd = session->evfd = -1;
    forsaken = session;
    session = NULL;
  }
  shim_table_orphan();
  while (devs != NULL) {
    shim_dev *d = devs;
    devs = d->next;
    free(d);
  }
  atomic_store(&said, 0);
}
static void register_atfork(void) {
  pthread_atfork(prepare, parent, child);
}

/* Forgets a session brokerd ended (it released everything): its grants become no one's. */
static void drop_session(void) {
  shim_table_orphan();
  while (devs != NULL) {
    shim_dev *d = devs;
    devs = d->next;
    free(d);
  }
  vfb_disconnect(session);
  session = NULL;
}

/* The live session, made or resumed as needed: 0, or the library's code (message in why). */
static int live_session(char *why, size_t cap) {
  pthread_once(&atfork_once, register_atfork);
  /* brokerd's events, read only now (the shim has no thread of its own): a revocation asks for an
   * unmap the shim leaves to the program (the grant becomes brokerd's hold until it is released);
   * the session's end moves it to a state handled below. Read and dropped, so the socket and the
   * library's queue do not fill. */
  vfb_event ev;
  while (session != NULL && session->state == VFB_LIVE && vfb_read_event(session, &ev) == 1) {
  }
  if (session != NULL && session->state == VFB_DOWN_ENDED) drop_session();
  if (session != NULL && session->state != VFB_LIVE) {
    int rc = vfb_resume(session);
    if (rc == VFB_OK) return 0;
    snprintf(why, cap, "%s", vfb_last_error(session));
    if (rc == VFB_E_RESUME_REFUSED || rc == VFB_E_SESSION_ENDED) drop_session();
    else return rc;
  }
  if (session != NULL) return 0;
  vfb_connect_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  char name[64];
  snprintf(name, sizeof name, "preload:%.40s", program_invocation_short_name);
  o.client_name = name;
  o.error_message = why;
  o.error_message_size = cap;
  return vfb_connect_ex(&o, &session);
}

static shim_dev *device(const char *bdf, int *rc) {
  for (shim_dev *d = devs; d != NULL; d = d->next)
    if (strcmp(d->bdf, bdf) == 0) return d;
  shim_dev *d = calloc(1, sizeof *d);
  if (d == NULL) {
    *rc = VFB_E_NO_MEMORY;
    return NULL;
  }
  *rc = vfb_open_device(session, bdf, &d->d);
  if (*rc < 0) {
    free(d);
    return NULL;
  }
  memcpy(d->bdf, bdf, sizeof d->bdf);
  d->next = devs;
  devs = d;
  return d;
}

/* Nothing held: the session ends (its 3 fds closed here, its session slot freed in brokerd); the
 * next BAR file opened makes a new one. */
static void idle(void) {
  if (devs != NULL || session == NULL) return;
  vfb_disconnect(session);
  session = NULL;
}

static void device_unref(shim_dev *d) {
  if (--d->grants > 0) return;
  for (shim_dev **p = &devs; *p != NULL; p = &(*p)->next)
    if (*p == d) {
      *p = d->next;
      break;
    }
  vfb_close_device(d->d);
  free(d);
  idle();
}

void shim_release(shim_grant *g) {
  shim_dev *d = g->dev;
  if (d != NULL) {
    vfb_release_grant(d->d, g->cookie); /* a failure stays owed by the library, or is brokerd's */
    device_unref(d);
  }
  shim_grant_free(g);
}

/* errno for the library's code; *quiet when the open should look as if the shim were not there. */
static int errno_of(int rc, int real_errno, int *quiet) {
  *quiet = 0;
  switch (rc) {
  case VFB_E_PERMISSION:
    return EACCES;
  case VFB_E_UNKNOWN_DEVICE:
  case VFB_E_NO_SUCH_REGION:
    *quiet = real_errno == ENOENT; /* no such file, and brokerd serves no such BAR */
    return real_errno;
  case VFB_E_WC_UNAVAILABLE:
  case VFB_E_UNAVAILABLE:
  case VFB_E_OUT_OF_RANGE:
  case VFB_E_UNALIGNED:
  case VFB_E_REJECTED:
    return ENODEV;
  case VFB_E_QUOTA:
  case VFB_E_BUSY:
    return EDQUOT;
  case VFB_E_CONFLICT:
    return EBUSY;
  case VFB_E_NO_MEMORY:
    return ENOMEM;
  default:
    return real_errno; /* brokerd unreachable, down or broken: as if the shim were not there */
  }
}

static int grant(const char *path, const shim_bar_path *p, int flags, int real_errno) {
  char why[VFB_MESSAGE_MAX + 1] = "";
  int rc = live_session(why, sizeof why);
  shim_dev *d = NULL;
  vfb_region r;
  vfb_granted gr = {.fd = -1};
  if (rc == 0) d = device(p->bdf, &rc);
  if (d != NULL) {
    d->grants++; /* held while we ask, so that a failure below closes it again */
    rc = vfb_region_info(d->d, p->bar, &r);
    if (rc == 0 && !r.mappable) rc = VFB_E_NO_SUCH_REGION;
    int prot = (flags & O_ACCMODE) == O_RDONLY ? VFB_PROT_READ : VFB_PROT_RW;
    if (rc == 0) rc = vfb_grant_fd(d->d, p->bar, 0, r.size, p->wc ? VFB_ATTR_WC : VFB_ATTR_UC, prot, &gr);
  }
  if (rc < 0 && session != NULL && why[0] == '\0') snprintf(why, sizeof why, "%s", vfb_last_error(session));
  shim_grant *g = rc == 0 ? shim_grant_new(d, gr.cookie, gr.mmap_offset, r.size) : NULL;
  if (rc == 0 && (g == NULL || shim_fd_add(gr.fd, g) < 0)) {
    if (g != NULL) shim_grant_free(g);
    vfb_release_grant(d->d, gr.cookie);
    shim_real_close(gr.fd);
    rc = VFB_E_NO_MEMORY;
    snprintf(why, sizeof why, "out of memory for the shim's table");
  }
  struct stat st;
  if (rc == 0 && fstat(gr.fd, &st) == 0) {
    g->st_dev = st.st_dev;
    g->st_ino = st.st_ino;
  }
  if (rc == 0) return gr.fd; /* d->grants stays counted: the grant's */
  int quiet;
  int e = errno_of(rc, real_errno, &quiet);
  if (!quiet)
    shim_say_once("open(%s) %s: brokerd %s %s BAR%u %s: %s [%s, errno %s]; this message is printed once per process", path,
                  (flags & O_ACCMODE) == O_RDONLY ? "read-only" : "read-write",
                  session == NULL ? "could not be reached for" : "refused", p->bdf, p->bar, p->wc ? "WC" : "UC", why,
                  vfb_error_name(rc), strerrorname_np(e));
  if (d != NULL) device_unref(d);
  else idle();
  errno = e;
  return -1;
}

int shim_broker_open(const char *path, const shim_bar_path *p, int flags, int real_errno) {
  shim_lock();
  int fd = grant(path, p, flags, real_errno);
  int e = errno;
  shim_unlock();
  errno = e;
  return fd;
}

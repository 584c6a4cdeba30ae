/* path.c: which paths are sysfs BAR files, decided lexically (pure: no I/O, no allocation). It owns
 * the shim's canonicalization rule and must never touch the file system (a sim device has no sysfs
 * directory, and resolving symlinks on every open would cost every program).
 *
 * A BAR file is an absolute path that, after "//" and "/./" are collapsed, is one of
 *   /sys/bus/pci/devices/BDF/resourceN[_wc]
 *   /sys/devices/pciDDDD:BB/[BDF/...]BDF/resourceN[_wc]   (the same file, through bridges)
 * with BDF "dddd:bb:dd.f" in lower-case hex (as sysfs names it), N 0-5. A ".." anywhere, a trailing
 * "/", upper-case hex, a 5-digit domain (VMD's) or any other shape is not a BAR file (the open
 * passes through untouched).
 * Relative paths are joined to their directory by open.c before they get here. */
#include <string.h>

#include "shim.h"

static int hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Is [s, s + n) "dddd:bb:dd.f"? */
static int is_bdf(const char *s, size_t n) {
  static const char shape[] = "xxxx:xx:xx.f";
  if (n != SHIM_BDF_LEN) return 0;
  for (size_t i = 0; i < n; i++) {
    if (shape[i] == 'x' && !hex(s[i])) return 0;
    if (shape[i] == 'f' && (s[i] < '0' || s[i] > '7')) return 0;
    if ((shape[i] == ':' || shape[i] == '.') && s[i] != shape[i]) return 0;
  }
  return 1;
}

/* resourceN or resourceN_wc: 1, with *bar and *wc. */
static int is_resource(const char *s, size_t n, unsigned *bar, int *wc) {
  if (n != 9 && n != 12) return 0;
  if (memcmp(s, "resource", 8) != 0 || s[8] < '0' || s[8] > '5') return 0;
  if (n == 12 && memcmp(s + 9, "_wc", 3) != 0) return 0;
  *bar = (unsigned)(s[8] - '0');
  *wc = n == 12;
  return 1;
}

int shim_maybe_bar(const char *path) {
  const char *slash = strrchr(path, '/');
  const char *base = slash == NULL ? path : slash + 1;
  size_t n = strlen(base);
  unsigned bar;
  int wc;
  return is_resource(base, n, &bar, &wc);
}

#define MAX_PARTS 24

int shim_parse_bar_path(const char *path, shim_bar_path *out) {
  if (path == NULL || path[0] != '/') return 0;
  const char *part[MAX_PARTS];
  size_t len[MAX_PARTS];
  size_t n = 0;
  const char *p = path;
  for (;;) {
    while (*p == '/') p++;
    if (*p == '\0') break;
    const char *e = strchr(p, '/');
    size_t l = e == NULL ? strlen(p) : (size_t)(e - p);
    if (e != NULL && e[1] == '\0') return 0; /* a trailing slash: a directory */
    if (l == 2 && p[0] == '.' && p[1] == '.') return 0;
    if (!(l == 1 && p[0] == '.')) {
      if (n == MAX_PARTS) return 0;
      part[n] = p;
      len[n++] = l;
    }
    if (e == NULL) break;
    p = e;
  }
#define IS(i, s) (len[i] == sizeof(s) - 1 && memcmp(part[i], s, sizeof(s) - 1) == 0)
  if (n < 3 || !IS(0, "sys")) return 0;
  if (!is_resource(part[n - 1], len[n - 1], &out->bar, &out->wc)) return 0;
  if (!is_bdf(part[n - 2], len[n - 2])) return 0;
  if (n == 6 && IS(1, "bus") && IS(2, "pci") && IS(3, "devices")) {
    /* /sys/bus/pci/devices/BDF/resourceN */
  } else if (n >= 5 && IS(1, "devices") && len[2] == 10 && memcmp(part[2], "pci", 3) == 0) {
    /* /sys/devices/pciDDDD:BB/BDF.../resourceN: the host bridge's name, then BDFs only */
    const char *hb = part[2] + 3; /* "DDDD:BB" */
    for (size_t i = 0; i < 7; i++)
      if ((i == 4 && hb[i] != ':') || (i != 4 && !hex(hb[i]))) return 0;
    for (size_t i = 3; i < n - 1; i++)
      if (!is_bdf(part[i], len[i])) return 0;
  } else {
    return 0;
  }
#undef IS
  memcpy(out->bdf, part[n - 2], SHIM_BDF_LEN);
  out->bdf[SHIM_BDF_LEN] = '\0';
  return 1;
}

int shim_join(char *out, size_t cap, const char *dir, const char *rel) {
  size_t a = strlen(dir), b = strlen(rel);
  if (a + 1 + b + 1 > cap) return 0 - 1;
  memcpy(out, dir, a);
  out[a] = '/';
  memcpy(out + a + 1, rel, b + 1);
  return 0;
}

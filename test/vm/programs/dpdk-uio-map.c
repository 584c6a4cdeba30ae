/* VM suite program (test/vm): maps a BAR through Debian's unmodified DPDK 22.11 on its uio path:
 * rte_eal_init, the PCI bus scan (which reads the kernel driver, uio_pci_generic, from sysfs), then
 * rte_pci_map_device on the device found, which would open /dev/uioN and the config file and mmap
 * sysfs resourceN. Run by phase-dpdk.ts as root and as uid 65534 under LD_PRELOAD of
 * libvfio-broker-preload.so; it knows nothing of brokerd. In the guest neither run gets past
 * rte_pci_map_device (phase-dpdk.ts says why); if one does, it finds its mapping in /proc/self/maps,
 * writes TEXT at TEXT_OFF, reads 27 bytes at READ_OFF, prints a "DPDK {"op":"mapped"...}" line,
 * waits for a line on stdin, unmaps and exits 0. Any failure is one "DPDK {"op":"error"...}" line
 * naming the step, exit 1. It never touches a device other than the one named (EAL -a BDF).
 * The one thing it assumes about DPDK's internals: Debian's libdpdk-dev does not ship the driver-SDK
 * header that defines struct rte_pci_device, and no public call turns the struct rte_device the
 * iterator yields into one. In 22.11 the rte_device is the member right after one RTE_TAILQ_ENTRY
 * (two pointers); the program checks the version at run time and refuses others.
 * Usage: dpdk-uio-map EAL-ARGS... -- BDF BAR TEXT_OFF TEXT READ_OFF */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <rte_bus_pci.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_version.h>

static int fail(const char *what, int err) {
  printf("DPDK {\"op\":\"error\",\"what\":\"%s\",\"errno\":%d,\"error\":\"%s\"}\n", what, err,
         err > 0 ? rte_strerror(err) : "");
  return 1;
}

/* The mapping DPDK made of BDF's resourceN (or resourceN_wc), from /proc/self/maps. */
static int find_mapping(const char *bdf, unsigned bar, uintptr_t *start, size_t *len, char *path, size_t pathlen) {
  FILE *f = fopen("/proc/self/maps", "re");
  if (f == NULL) return -1;
  char line[512], want[64], want_wc[64];
  snprintf(want, sizeof want, "%s/resource%u", bdf, bar);
  snprintf(want_wc, sizeof want_wc, "%s/resource%u_wc", bdf, bar);
  int found = -1;
  while (fgets(line, sizeof line, f) != NULL) {
    line[strcspn(line, "\n")] = '\0';
    const char *p = strchr(line, '/');
    if (p == NULL) continue;
    size_t n = strlen(p), wn = strlen(want), wcn = strlen(want_wc);
    if ((n >= wn && strcmp(p + n - wn, want) == 0) || (n >= wcn && strcmp(p + n - wcn, want_wc) == 0)) {
      unsigned long a, b;
      if (sscanf(line, "%lx-%lx", &a, &b) != 2) continue;
      *start = a;
      *len = b - a;
      snprintf(path, pathlen, "%s", p);
      found = 0;
      break;
    }
  }
  fclose(f);
  return found;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (strncmp(rte_version(), "DPDK 22.11.", 11) != 0) return fail("DPDK version is not 22.11 (struct layout)", ENOTSUP);
  int n = rte_eal_init(argc, argv);
  if (n < 0) return fail("rte_eal_init", rte_errno);
  argc -= n;
  argv += n;
  if (argc != 6) return fail("usage: EAL-ARGS -- BDF BAR TEXT_OFF TEXT READ_OFF", EINVAL);
  const char *bdf = argv[1], *text = argv[4];
  unsigned bar = (unsigned)strtoul(argv[2], NULL, 0);
  size_t text_off = strtoul(argv[3], NULL, 0), read_off = strtoul(argv[5], NULL, 0);

  struct rte_dev_iterator it;
  struct rte_device *dev = NULL, *d;
  RTE_DEV_FOREACH(d, "bus=pci", &it) {
    if (strcmp(rte_dev_name(d), bdf) == 0) dev = d;
  }
  if (dev == NULL) return fail("the PCI bus scan did not find the device", ENODEV);
  struct rte_pci_device *pdev = (struct rte_pci_device *)((char *)dev - 2 * sizeof(void *));
  rte_errno = 0;
  int rc = rte_pci_map_device(pdev);
  if (rc > 0) return fail("rte_pci_map_device: not managed by a kernel driver DPDK maps (returned 1)", ENODEV);
  if (rc < 0) return fail("rte_pci_map_device", rte_errno ? rte_errno : EIO);

  uintptr_t start;
  size_t len;
  char path[256];
  if (find_mapping(bdf, bar, &start, &len, path, sizeof path) != 0) return fail("no mapping of the BAR in /proc/self/maps", ENOENT);
  if (text_off + strlen(text) + 1 > len || read_off + 27 > len) return fail("offsets past the mapping", EINVAL);
  volatile char *m = (volatile char *)start;
  for (size_t i = 0; i <= strlen(text); i++) m[text_off + i] = text[i];
  __sync_synchronize();
  char got[28];
  for (size_t i = 0; i < 27; i++) got[i] = (m[read_off + i] >= 0x20 && m[read_off + i] <= 0x7e) ? m[read_off + i] : '.';
  got[27] = '\0';
  printf("DPDK {\"op\":\"mapped\",\"uid\":%u,\"version\":\"%s\",\"path\":\"%s\",\"length\":%zu,\"read\":\"%s\"}\n",
         (unsigned)getuid(), rte_version(), path, len, got);
  char line[16];
  if (fgets(line, sizeof line, stdin) == NULL) { /* the caller went away: unmap and exit all the same */
  }
  rte_pci_unmap_device(pdev);
  rte_eal_cleanup();
  printf("DPDK {\"op\":\"unmapped\"}\n");
  return 0;
}

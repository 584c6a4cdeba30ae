/* VM suite program (test/vm): maps a BAR the way libpciaccess users (X drivers, intel-gpu-tools) do,
 * through Debian's unmodified libpciaccess: pci_device_map_range(..., PCI_DEV_MAP_FLAG_WRITE_COMBINE |
 * PCI_DEV_MAP_FLAG_WRITABLE, ...), which opens sysfs resourceN_wc and mmaps it. Run by
 * phase-libpciaccess.ts as root and as uid 65534 under LD_PRELOAD of libvfio-broker-preload.so; it
 * knows nothing of brokerd. It writes TEXT at MAP+TEXT_OFF, reads 27 bytes at MAP+READ_OFF, prints
 * one "PCIACCESS {json}" line, waits for a line on stdin (the caller checks PAT meanwhile), unmaps,
 * prints "PCIACCESS {"op":"unmapped"...}" and exits 0; any failure is one line with the errno text
 * and exit 1. It must never touch a device other than the one named, nor map outside the range.
 * Usage: pciaccess-map BDF BAR OFFSET LENGTH TEXT_OFF TEXT READ_OFF   (numbers in C notation) */
#include <errno.h>
#include <inttypes.h>
#include <pciaccess.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what, int err) {
  printf("PCIACCESS {\"op\":\"error\",\"what\":\"%s\",\"errno\":%d,\"error\":\"%s\"}\n", what, err, strerror(err));
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: %s BDF BAR OFFSET LENGTH TEXT_OFF TEXT READ_OFF\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  unsigned dom, bus, dev, func;
  if (sscanf(argv[1], "%x:%x:%x.%x", &dom, &bus, &dev, &func) != 4) return fail("parse BDF", EINVAL);
  unsigned bar = (unsigned)strtoul(argv[2], NULL, 0);
  uint64_t off = strtoull(argv[3], NULL, 0), len = strtoull(argv[4], NULL, 0);
  uint64_t text_off = strtoull(argv[5], NULL, 0), read_off = strtoull(argv[7], NULL, 0);
  const char *text = argv[6];
  if (bar > 5 || text_off + strlen(text) > len || read_off + 27 > len) return fail("arguments", EINVAL);

  int rc = pci_system_init();
  if (rc != 0) return fail("pci_system_init", rc);
  struct pci_device *d = pci_device_find_by_slot(dom, bus, dev, func);
  if (d == NULL) return fail("pci_device_find_by_slot", ENODEV);
  rc = pci_device_probe(d);
  if (rc != 0) return fail("pci_device_probe", rc);
  if (off + len > d->regions[bar].size) return fail("range past the BAR", EINVAL);
  void *p = NULL;
  rc = pci_device_map_range(d, d->regions[bar].base_addr + off, len,
                            PCI_DEV_MAP_FLAG_WRITE_COMBINE | PCI_DEV_MAP_FLAG_WRITABLE, &p);
  if (rc != 0) return fail("pci_device_map_range", rc);
  volatile char *m = p;
  for (size_t i = 0; i <= strlen(text); i++) m[text_off + i] = text[i];
  __sync_synchronize();
  char got[28];
  for (size_t i = 0; i < 27; i++) got[i] = m[read_off + i];
  got[27] = '\0';
  for (size_t i = 0; i < 27; i++)
    if (got[i] < 0x20 || got[i] > 0x7e) got[i] = '.';
  printf("PCIACCESS {\"op\":\"mapped\",\"uid\":%u,\"bar\":%u,\"phys\":\"0x%" PRIx64 "\",\"length\":%" PRIu64
         ",\"read\":\"%s\"}\n",
         (unsigned)getuid(), bar, (uint64_t)(d->regions[bar].base_addr + off), len, got);
  char line[16];
  if (fgets(line, sizeof line, stdin) == NULL) { /* the caller went away: unmap and exit all the same */
  }
  rc = pci_device_unmap_range(d, p, len);
  if (rc != 0) return fail("pci_device_unmap_range", rc);
  pci_system_cleanup();
  printf("PCIACCESS {\"op\":\"unmapped\"}\n");
  return 0;
}

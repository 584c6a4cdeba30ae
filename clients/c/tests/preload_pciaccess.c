/* preload_pciaccess.c: a test tool: a program built on Debian's libpciaccess, written as an X
 * driver or intel-gpu-tools would map a BAR write-combining, knowing nothing of vfio-broker
 * (test/clib/preload.test.ts runs it as uid 65534 with the preload shim, in a mount namespace whose
 * /sys/bus/pci/devices holds the device's `config` and `resource` files but no resourceN: the
 * shim serves resource2_wc from brokerd). Usage: vfb-preload-pciaccess BDF OFFSET TEXT: maps one
 * page of BAR2 at OFFSET with PCI_DEV_MAP_FLAG_WRITE_COMBINE, copies TEXT there, unmaps. Prints
 * "pciaccess ..." and exits 0, or says what failed and exits 1. */
#include <pciaccess.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  unsigned dom, bus, dev, fn;
  if (argc != 4 || sscanf(argv[1], "%x:%x:%x.%u", &dom, &bus, &dev, &fn) != 4) {
    fprintf(stderr, "usage: vfb-preload-pciaccess BDF OFFSET TEXT\n");
    return 2;
  }
  unsigned long long off = strtoull(argv[2], NULL, 0);
  int rc = pci_system_init();
  if (rc != 0) {
    printf("pci_system_init: %s\n", strerror(rc));
    return 1;
  }
  struct pci_device *d = pci_device_find_by_slot(dom, bus, dev, fn);
  if (d == NULL || (rc = pci_device_probe(d)) != 0) {
    printf("no device %s: %s\n", argv[1], d == NULL ? "not found" : strerror(rc));
    pci_system_cleanup();
    return 1;
  }
  void *p = NULL;
  rc = pci_device_map_range(d, d->regions[2].base_addr + off, 4096,
                            PCI_DEV_MAP_FLAG_WRITABLE | PCI_DEV_MAP_FLAG_WRITE_COMBINE, &p);
  if (rc != 0) {
    printf("pci_device_map_range: %s\n", strerror(rc));
    pci_system_cleanup();
    return 1;
  }
  memcpy(p, argv[3], strlen(argv[3]));
  rc = pci_device_unmap_range(d, p, 4096);
  printf("pciaccess bar2 base=%#llx size=%#llx mapped=1 unmapped=%d\n", (unsigned long long)d->regions[2].base_addr,
         (unsigned long long)d->regions[2].size, rc == 0);
  pci_system_cleanup();
  return rc == 0 ? 0 : 1;
}

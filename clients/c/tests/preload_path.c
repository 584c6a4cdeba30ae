/* preload_path.c: unit tests of the shim's path rule (src/preload/path.c): which paths are sysfs
 * BAR files and which pass through untouched. Its own small main (the rule is pure, linked alone). */
#include <stdio.h>
#include <string.h>

#include "shim.h"

static int failed, passed;

static void is_bar(const char *path, const char *bdf, unsigned bar, int wc) {
  shim_bar_path p;
  memset(&p, 0, sizeof p);
  int ok = shim_maybe_bar(path) && shim_parse_bar_path(path, &p) && strcmp(p.bdf, bdf) == 0 && p.bar == bar && p.wc == wc;
  if (ok) passed++;
  else {
    failed++;
    fprintf(stderr, "    not read as %s BAR%u%s: %s\n", bdf, bar, wc ? "_wc" : "", path);
  }
}

static void not_bar(const char *path) {
  shim_bar_path p;
  if (!(shim_maybe_bar(path) && shim_parse_bar_path(path, &p))) passed++;
  else {
    failed++;
    fprintf(stderr, "    read as a BAR file: %s\n", path);
  }
}

int main(void) {
  is_bar("/sys/bus/pci/devices/0000:00:1f.6/resource0", "0000:00:1f.6", 0, 0);
  is_bar("/sys/bus/pci/devices/0000:7e:00.1/resource2_wc", "0000:7e:00.1", 2, 1);
  is_bar("/sys/bus/pci/devices/abcd:ef:1f.7/resource5", "abcd:ef:1f.7", 5, 0);
  is_bar("//sys/bus//pci/./devices/0000:00:02.0/./resource4_wc", "0000:00:02.0", 4, 1);
  is_bar("/sys/devices/pci0000:00/0000:00:02.0/resource2", "0000:00:02.0", 2, 0);
  is_bar("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/resource0_wc", "0000:01:00.0", 0, 1);
  not_bar("/sys/bus/pci/devices/0000:00:1f.6/resource");
  not_bar("/sys/bus/pci/devices/0000:00:1f.6/resource6");
  not_bar("/sys/bus/pci/devices/0000:00:1f.6/resource2_uc");
  not_bar("/sys/bus/pci/devices/0000:00:1f.6/resource22");
  not_bar("/sys/bus/pci/devices/0000:00:1f.6/config");
  not_bar("/sys/bus/pci/devices/0000:00:1F.6/resource0");
  not_bar("/sys/bus/pci/devices/0000:00:1f.8/resource0");
  not_bar("/sys/bus/pci/devices/000:00:1f.6/resource0");
  not_bar("/sys/bus/pci/devices/10000:00:1f.6/resource0");
  not_bar("/sys/bus/pci/devices/0000:00:1f.6/resource0/");
  not_bar("/sys/bus/pci/devices/../devices/0000:00:1f.6/resource0");
  not_bar("/sys/bus/pci/devices/0000:00:1f.6/../0000:00:1f.6/resource0");
  not_bar("/sys/bus/pci/drivers/0000:00:1f.6/resource0");
  not_bar("/sys/bus/pci/devices/x/0000:00:1f.6/resource0");
  not_bar("/sys/devices/pci0000:00/virtio0/0000:00:02.0/resource2");
  not_bar("/sys/devices/platform/0000:00:02.0/resource2");
  not_bar("/proc/0000:00:02.0/resource2");
  not_bar("sys/bus/pci/devices/0000:00:1f.6/resource0");
  not_bar("/tmp/resource0");
  not_bar("resource0");
  not_bar("/");
  char j[32];
  if (shim_join(j, sizeof j, "/sys", "bus") == 0 && strcmp(j, "/sys/bus") == 0) passed++;
  else failed++;
  if (shim_join(j, 8, "/sys", "bus/pci") == -1) passed++;
  else failed++;
  printf("preload path rule: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

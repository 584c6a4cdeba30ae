/* fdprobe.c: a test tool, not an example: redeems one ticket on a real brokerd's fd channel with the
 * library's fd channel client (src/fdchannel.c) and prints one line, "<VFB code name> <fds before>
 * <fds after> <message>", so that test/clib/clib.test.ts can check the library against brokerd (as
 * uid 65534) without a workload protocol yet. Usage: vfb-fdprobe FD_SOCKET TICKET. Exit 0 whenever
 * it could print its line. */
#include <dirent.h>
#include <stdio.h>
#include <unistd.h>

#include "fdchannel.h"
#include "vfio-broker.h"

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: vfb-fdprobe FD_SOCKET TICKET\n");
    return 2;
  }
  int before = count_fds();
  vfb_fdchannel *c = NULL;
  int rc = vfb_fdchannel_new(argv[1], 10000, &c);
  if (rc != VFB_OK) {
    printf("%s %d %d %s\n", vfb_error_name(rc), before, count_fds(), vfb_strerror(rc));
    return 0;
  }
  rc = vfb_fdchannel_connect(c);
  if (rc == VFB_OK) {
    Vfiobroker__V1__FdReply *reply = NULL;
    int fd = -1;
    rc = vfb_fdchannel_fetch_fd(c, argv[2], &reply, &fd);
    if (reply != NULL) vfiobroker__v1__fd_reply__free_unpacked(reply, NULL);
    if (fd >= 0) close(fd);
  }
  char message[VFB_FDCHANNEL_MESSAGE_MAX + 1];
  snprintf(message, sizeof message, "%s", vfb_fdchannel_message(c));
  vfb_fdchannel_close(c);
  printf("%s %d %d %s\n", vfb_error_name(rc), before, count_fds(), message);
  return 0;
}

/* test_paths.c: the sockets' paths (src/paths.c): the argument, then $VFIO_BROKER_SOCKET, then the
 * default; fd.sock beside the broker socket unless $VFIO_BROKER_FD_SOCKET says otherwise; limits. */
#include <string.h>

#include "paths.h"
#include "runner.h"
#include "vfio-broker.h"

static char b[VFB_SOCKET_PATH_MAX + 1], f[VFB_SOCKET_PATH_MAX + 1];

static void t_order(void) {
  CHECK_EQ(vfb_socket_paths(NULL, NULL, NULL, b, f), VFB_OK);
  CHECK(strcmp(b, "/run/vfio-broker/broker.sock") == 0 && strcmp(f, "/run/vfio-broker/fd.sock") == 0);
  CHECK_EQ(vfb_socket_paths(NULL, "/srv/vb/broker.sock", NULL, b, f), VFB_OK);
  CHECK(strcmp(b, "/srv/vb/broker.sock") == 0 && strcmp(f, "/srv/vb/fd.sock") == 0);
  CHECK_EQ(vfb_socket_paths("/mnt/x/b.sock", "/srv/vb/broker.sock", NULL, b, f), VFB_OK);
  CHECK(strcmp(b, "/mnt/x/b.sock") == 0 && strcmp(f, "/mnt/x/fd.sock") == 0);
  CHECK_EQ(vfb_socket_paths("", "", "", b, f), VFB_OK); /* empty counts as unset */
  CHECK(strcmp(b, VFB_DEFAULT_BROKER_SOCKET) == 0);
  CHECK_EQ(vfb_socket_paths("/mnt/x/b.sock", NULL, "/elsewhere/fd", b, f), VFB_OK);
  CHECK(strcmp(f, "/elsewhere/fd") == 0);
}

static void t_odd_paths(void) {
  CHECK_EQ(vfb_socket_paths("broker.sock", NULL, NULL, b, f), VFB_OK);
  CHECK(strcmp(f, "fd.sock") == 0);
  CHECK_EQ(vfb_socket_paths("/broker.sock", NULL, NULL, b, f), VFB_OK);
  CHECK(strcmp(f, "/fd.sock") == 0);
  CHECK_EQ(vfb_socket_paths("run/b.sock", NULL, NULL, b, f), VFB_OK);
  CHECK(strcmp(f, "run/fd.sock") == 0);
  CHECK_EQ(vfb_socket_paths("/run/vfio-broker/", NULL, NULL, b, f), VFB_E_INVALID_ARGUMENT);
  CHECK_EQ(vfb_socket_paths(NULL, NULL, NULL, NULL, f), VFB_E_INVALID_ARGUMENT);
}

static void t_limits(void) {
  char p[VFB_SOCKET_PATH_MAX + 2];
  memset(p, 'a', sizeof p);
  p[0] = '/';
  p[VFB_SOCKET_PATH_MAX] = '\0'; /* exactly the limit: fine */
  CHECK_EQ(vfb_socket_paths(p, NULL, NULL, b, f), VFB_OK);
  CHECK(strcmp(f, "/fd.sock") == 0);
  p[VFB_SOCKET_PATH_MAX] = 'a';
  p[VFB_SOCKET_PATH_MAX + 1] = '\0'; /* one over */
  CHECK_EQ(vfb_socket_paths(p, NULL, NULL, b, f), VFB_E_INVALID_ARGUMENT);
  CHECK_EQ(vfb_socket_paths("/x/b.sock", NULL, p, b, f), VFB_E_INVALID_ARGUMENT);
  /* A directory so long that fd.sock beside it does not fit. */
  memset(p, 'd', sizeof p);
  p[0] = '/';
  p[VFB_SOCKET_PATH_MAX - 3] = '/';
  p[VFB_SOCKET_PATH_MAX - 2] = 'b';
  p[VFB_SOCKET_PATH_MAX - 1] = '\0';
  CHECK_EQ(vfb_socket_paths(p, NULL, NULL, b, f), VFB_E_INVALID_ARGUMENT);
}

const vfb_test vfb_paths_tests[] = {
    {"paths: argument, then VFIO_BROKER_SOCKET, then the default; fd.sock beside", t_order},
    {"paths: relative, root and directory paths", t_odd_paths},
    {"paths: sun_path limits", t_limits},
    {NULL, NULL},
};

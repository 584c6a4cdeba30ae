/* paths.c: the sockets' paths from the argument and the environment (see paths.h). No I/O. */
#include "paths.h"

#include <string.h>

#include "vfio-broker.h"

static const char *set(const char *s) {
  return s != NULL && s[0] != '\0' ? s : NULL;
}

int vfb_socket_paths(const char *broker_socket, const char *env_broker_socket, const char *env_fd_socket,
                     char *broker_out, char *fd_out) {
  if (broker_out == NULL || fd_out == NULL) return VFB_E_INVALID_ARGUMENT;
  broker_out[0] = fd_out[0] = '\0';
  const char *broker = set(broker_socket);
  if (broker == NULL) broker = set(env_broker_socket);
  if (broker == NULL) broker = VFB_DEFAULT_BROKER_SOCKET;
  size_t blen = strlen(broker);
  if (blen > VFB_SOCKET_PATH_MAX || broker[blen - 1] == '/') return VFB_E_INVALID_ARGUMENT;
  const char *fd = set(env_fd_socket);
  if (fd != NULL) {
    if (strlen(fd) > VFB_SOCKET_PATH_MAX) return VFB_E_INVALID_ARGUMENT;
    strcpy(fd_out, fd);
  } else {
    const char *slash = strrchr(broker, '/');
    size_t dir = slash == NULL ? 0 : (size_t)(slash - broker) + 1; /* the directory, its '/' included */
    if (dir + strlen(VFB_FD_SOCKET_NAME) > VFB_SOCKET_PATH_MAX) return VFB_E_INVALID_ARGUMENT;
    memcpy(fd_out, broker, dir);
    strcpy(fd_out + dir, VFB_FD_SOCKET_NAME);
  }
  strcpy(broker_out, broker);
  return VFB_OK;
}

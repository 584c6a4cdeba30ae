/* paths.h (private): where brokerd's sockets are, as every client finds them (README.md, "Deploying"):
 * the broker socket is the caller's argument, else $VFIO_BROKER_SOCKET, else
 * /run/vfio-broker/broker.sock; the fd channel is $VFIO_BROKER_FD_SOCKET, else fd.sock beside the
 * broker socket (its directory may be mounted anywhere: a container's bind mount, a CDI spec). Pure:
 * the environment's values are parameters (the caller reads getenv), and nothing is opened here. */
#ifndef VFB_PATHS_H
#define VFB_PATHS_H

#define VFB_DEFAULT_BROKER_SOCKET "/run/vfio-broker/broker.sock"
#define VFB_FD_SOCKET_NAME "fd.sock"
/* A socket path's longest length (sun_path without its NUL). */
#define VFB_SOCKET_PATH_MAX 107

/* Fills broker_out and fd_out (each VFB_SOCKET_PATH_MAX + 1 bytes) from the argument and the two
 * variables (NULL or "" count as unset). Returns 0, or VFB_E_INVALID_ARGUMENT when a path would be
 * longer than VFB_SOCKET_PATH_MAX or the broker socket's path ends in '/' (a directory). */
int vfb_socket_paths(const char *broker_socket, const char *env_broker_socket, const char *env_fd_socket,
                     char *broker_out, char *fd_out);

#endif

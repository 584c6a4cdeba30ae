/* wire.h: the workload protocol's frames (proto/vfiobroker/v1/workload.proto) for the benchmark's
 * C programs: a 4-byte big-endian length and a protobuf-c message, fds with SCM_RIGHTS. It owns
 * blocking send and receive of one frame and the raw client's exchanges (hello, open, grant,
 * release) used to profile brokerd and as the C floor's client. It never decides a limit brokerd
 * enforces and is no part of libvfio-broker (clients/c), which the measured figures use. */
#ifndef BENCH_WIRE_H
#define BENCH_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "vfiobroker/v1/workload.pb-c.h"

#define WIRE_MAX_REPLY (64 * 1024)
#define WIRE_MAX_FDS 32

/* Sends one frame (payload[0..len), fd if >= 0). 0, or -1 (errno set). */
int wire_send(int sock, const uint8_t *payload, size_t len, int fd);
/* Reads one frame into buf (max bytes); its fds into fds (room for WIRE_MAX_FDS), *nfds.
 * Returns the payload's length, 0 on EOF between frames, -1 on error. */
long wire_recv(int sock, uint8_t *buf, size_t max, int *fds, size_t *nfds);

/* Connects a blocking, close-on-exec stream socket to path. The fd, or -1. */
int wire_connect(const char *path);

/* A raw workload session: the connection, its device file, the region granted from. */
typedef struct wire_session {
  int sock;
  uint64_t device_file;
  uint8_t buf[WIRE_MAX_REPLY];
} wire_session;

/* hello + open_device(device). 0, or -1 with a message on stderr. */
int wire_open(wire_session *s, const char *path, const char *device);
/* One grant of length bytes of region (WC, read-write): *fd, *cookie, *mmap_offset. 0 or -1. */
int wire_grant(wire_session *s, unsigned region, uint64_t length, int *fd, uint64_t *cookie,
               uint64_t *mmap_offset);
/* Releases cookie, the reply awaited. 0 or -1. */
int wire_release(wire_session *s, uint64_t cookie);
void wire_close(wire_session *s);

#endif

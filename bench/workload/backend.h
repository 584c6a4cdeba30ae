/* backend.h: what the benchmark driver (driver.c) asks of a client: open a session with one device
 * open, and do one whole grant (map 4 KiB WC of region 2 + one 32-bit write + unmap, the release
 * awaited). Two implementations: backend-lib.c through libvfio-broker's public API (the figures),
 * backend-raw.c through the raw frames of wire.c (the C floor's client, and brokerd's profile
 * before the library existed). */
#ifndef BENCH_BACKEND_H
#define BENCH_BACKEND_H

typedef struct bk_session bk_session;

/* The name printed with the figures. */
extern const char *const bk_name;
/* socket: brokerd's broker.sock (the library finds fd.sock beside it) or, for raw, the fd channel
 * itself. 0, or -1 with a message on stderr. */
int bk_open(const char *socket, const char *device, bk_session **out);
/* One grant: map, write, unmap, release awaited. 0 or -1. */
int bk_grant(bk_session *s, unsigned i);
void bk_close(bk_session *s);

#endif

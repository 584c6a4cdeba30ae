/* script.h: brokerd's side of a session scripted on a socketpair, shared by the session tests
 * (test_session.c defines these; test_lifecycle.c uses them). Test code only. */
#ifndef VFB_TEST_SCRIPT_H
#define VFB_TEST_SCRIPT_H

#include "session.h"

/* A live session on sock, as vfb_connect_ex leaves one after its hello. */
vfb_session *session_on(int sock);
/* Writes one reply frame (status OK, and fd if >= 0) to sock, as brokerd would. */
void put(int sock, Vfiobroker__V1__WorkloadReply *r, int fd);
void put_event(int sock, Vfiobroker__V1__WorkloadEvent *e);
/* The device_opened reply of sim0 (device file 7) with BAR2: 1 MiB, UC or WC. */
void put_opened(int sock);
/* A release or device_closed reply. */
void put_plain(int sock, int kind);
/* The permissions /proc/self/maps shows for addr ("rw-s", "---p"), or "". */
void perms_of(const void *addr, char out[8]);

#endif

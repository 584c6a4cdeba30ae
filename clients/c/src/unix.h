/* unix.h (private): connecting to one of brokerd's Unix stream sockets as every connection of the
 * library is made: close-on-exec, the connect bounded by a timeout (brokerd's backlog is full while
 * it hands over to a successor), non-blocking once connected. It owns no message and no policy: the
 * caller says what a failure means to its user. The deadline clock and the wait for readiness
 * against it are here too: both connections wait the same way. */
#ifndef VFB_UNIX_H
#define VFB_UNIX_H

/* Connects to `path` (at most VFB_SOCKET_PATH_MAX bytes). Returns the connected fd, or -1 with errno
 * set and *failed naming the call that failed: "socket(AF_UNIX)", "connect" or "fcntl(O_NONBLOCK)".
 * Nothing is left open on failure. */
int vfb_unix_connect(const char *path, int timeout_ms, const char **failed);

/* Now on CLOCK_MONOTONIC, in ms: the clock of every deadline below. */
long long vfb_now_ms(void);

/* Waits until `sock` is ready for `events` (POLLIN, POLLOUT), or POLLHUP/POLLERR (the next call on
 * it says which), or until `deadline` (vfb_now_ms) passes. Returns VFB_OK, VFB_E_TIMEOUT, or
 * VFB_E_IO with errno set. */
int vfb_unix_wait(int sock, short events, long long deadline);

#endif

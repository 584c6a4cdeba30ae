/* frame.h (private): the fd channel's framing, as a codec with no policy. A frame is a 4-byte
 * big-endian length and that many bytes; fds travel with SCM_RIGHTS on the sendmsg that carries a
 * frame's first byte. This file owns reading and writing frames on a stream socket, as far as the
 * socket allows without blocking on a non-blocking socket, and the fds that arrive with them. It never decides a timeout, a retry, a limit
 * (the caller gives max_bytes and max_fds), whether a socket blocks, or what a frame means.
 *
 * Reads never cross a frame boundary (a recvmsg asks for at most what is left of the current
 * frame), so every fd received belongs to the frame being read: fds are accepted only on a read
 * that starts the frame (up to max_fds), any other fd is closed at once and the read fails.
 * Receives use MSG_CMSG_CLOEXEC; on every failure every fd the reader holds is closed. */
#ifndef VFB_FRAME_H
#define VFB_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define VFB_FRAME_HEADER_BYTES 4
/* The largest payload any caller may ask for (the protocol's own limits are far below). */
#define VFB_FRAME_MAX_BYTES (1u << 20)
/* The most fds one frame may carry: the kernel's SCM_MAX_FD. */
#define VFB_FRAME_MAX_FDS 253

/* Step results (> 0); errors are negative VFB_E_* codes. */
enum {
  VFB_FRAME_DONE = 1,  /* the frame is complete */
  VFB_FRAME_AGAIN = 2, /* the socket has nothing more now (EAGAIN): call again when it is readable/writable */
  VFB_FRAME_EOF = 3,   /* (read) the peer closed the connection between two frames */
};

/* Puts `len` big-endian into out[0..4). Pure. */
void vfb_frame_put_len(uint8_t out[VFB_FRAME_HEADER_BYTES], uint32_t len);
/* Reads a big-endian length from in[0..4). Pure. */
uint32_t vfb_frame_get_len(const uint8_t in[VFB_FRAME_HEADER_BYTES]);

/* One frame being read. The caller owns buf (max_bytes long) and the struct; the reader owns the
 * fds in fds[0..nfds) until the caller takes them (vfb_frame_take_fds) or the reader is reset. */
typedef struct vfb_frame_reader {
  uint8_t *buf;
  size_t max_bytes;
  size_t max_fds;
  uint8_t head[VFB_FRAME_HEADER_BYTES];
  size_t got; /* bytes of this frame read so far, its header included */
  uint32_t len; /* the payload's length, once the header is in */
  size_t nfds;
  int fds[VFB_FRAME_MAX_FDS];
} vfb_frame_reader;

/* Sets up r to read frames of at most max_bytes (<= VFB_FRAME_MAX_BYTES) into buf, with at most
 * max_fds (<= VFB_FRAME_MAX_FDS) fds each. VFB_E_INVALID_ARGUMENT if a limit is over its cap. */
int vfb_frame_reader_init(vfb_frame_reader *r, uint8_t *buf, size_t max_bytes, size_t max_fds);

/* Reads on `sock` (recvmsg, as often as it makes progress) towards the current frame: on a blocking
 * socket until the frame is complete, on a non-blocking one until EAGAIN. Returns VFB_FRAME_DONE (buf[0..len) is the
 * payload, fds[0..nfds) its fds), VFB_FRAME_AGAIN, VFB_FRAME_EOF (only between frames), or:
 * VFB_E_FRAME_TOO_LARGE (the header says more than max_bytes; the payload is not read),
 * VFB_E_FRAME_TRUNCATED (EOF inside a frame), VFB_E_UNEXPECTED_FDS (fds after the frame's first
 * read, or more than max_fds), VFB_E_FDS_LOST (the kernel truncated the control data),
 * VFB_E_IO (errno set). After an error the stream position is lost: close the socket. Every error
 * closes the fds the reader held. After DONE, call vfb_frame_reader_next before reading again. */
int vfb_frame_read(vfb_frame_reader *r, int sock);

/* Moves the fds of a DONE frame to out (which has room for r->nfds) and returns how many;
 * the caller owns them from now on. */
size_t vfb_frame_take_fds(vfb_frame_reader *r, int *out);

/* Starts the next frame: fds of the last one not taken are closed. */
void vfb_frame_reader_next(vfb_frame_reader *r);

/* One frame being written (no fds: requests carry none). The caller keeps payload alive until DONE. */
typedef struct vfb_frame_writer {
  uint8_t head[VFB_FRAME_HEADER_BYTES];
  const uint8_t *payload;
  uint32_t len;
  size_t sent; /* bytes of the frame sent so far, its header included */
} vfb_frame_writer;

/* Sets up w to write payload[0..len). VFB_E_FRAME_TOO_LARGE if len > max_bytes (or over
 * VFB_FRAME_MAX_BYTES); VFB_E_INVALID_ARGUMENT for a NULL payload with len > 0. */
int vfb_frame_writer_init(vfb_frame_writer *w, const uint8_t *payload, size_t len, size_t max_bytes);

/* Sends (sendmsg, MSG_NOSIGNAL, as often as it makes progress) what is left of the frame. Returns VFB_FRAME_DONE,
 * VFB_FRAME_AGAIN, VFB_E_CLOSED (EPIPE, ECONNRESET) or VFB_E_IO (errno set). */
int vfb_frame_write(vfb_frame_writer *w, int sock);

#endif

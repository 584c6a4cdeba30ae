/* errors.c: the text of every VFB_E_* code (vfb_strerror, vfb_error_name). It owns the table and
 * nothing else: no I/O, no state, no allocation; every string is static. A code added to
 * vfio-broker.h gets its row here (tests/test_errors.c checks that every code has one). */
#include "vfio-broker.h"

#include <stddef.h>

struct row {
  int code;
  const char *name;
  const char *text;
};

static const struct row rows[] = {
    {VFB_OK, "VFB_OK", "success"},
    {VFB_E_INVALID_ARGUMENT, "VFB_E_INVALID_ARGUMENT",
     "invalid argument: a NULL pointer, an unknown flag or a value over its limit; fix the call"},
    {VFB_E_NO_MEMORY, "VFB_E_NO_MEMORY", "out of memory"},
    {VFB_E_IO, "VFB_E_IO", "a system call failed; errno says which error"},
    {VFB_E_CONNECT, "VFB_E_CONNECT",
     "cannot reach brokerd's socket: is brokerd running, is VFIO_BROKER_SOCKET right, and may this "
     "user open the socket's directory?"},
    {VFB_E_CLOSED, "VFB_E_CLOSED",
     "the connection to brokerd is gone (brokerd killed, or the library closed it after a timeout or a "
     "protocol error; vfb_last_error says which): call vfb_resume, which takes the session back if brokerd "
     "still or again holds it, says VFB_E_CONNECT while nothing listens and VFB_E_RESUME_REFUSED if the "
     "session is gone (then disconnect and connect again)"},
    {VFB_E_TIMEOUT, "VFB_E_TIMEOUT",
     "brokerd did not answer in time (hung, stopped or overloaded); the connection was closed, so the "
     "session is down: vfb_resume later says whether brokerd still holds it"},
    {VFB_E_FRAME_TOO_LARGE, "VFB_E_FRAME_TOO_LARGE",
     "a frame is longer than the protocol allows; the connection is unusable, connect again"},
    {VFB_E_FRAME_TRUNCATED, "VFB_E_FRAME_TRUNCATED",
     "the connection ended in the middle of a frame; brokerd went away, connect again"},
    {VFB_E_UNEXPECTED_FDS, "VFB_E_UNEXPECTED_FDS",
     "file descriptors arrived where the protocol allows none; they were closed and the "
     "connection is unusable"},
    {VFB_E_FDS_LOST, "VFB_E_FDS_LOST",
     "the kernel could not deliver a message's file descriptors (is RLIMIT_NOFILE reached?); those "
     "that arrived were closed"},
    {VFB_E_PROTOCOL, "VFB_E_PROTOCOL",
     "brokerd's reply does not follow the protocol (is the library older or newer than brokerd?)"},
    {VFB_E_UNKNOWN_DEVICE, "VFB_E_UNKNOWN_DEVICE",
     "brokerd has no device of that id; vfb_list_devices shows the ids this identity may open"},
    {VFB_E_UNALIGNED, "VFB_E_UNALIGNED",
     "offset and length must be multiples of the page size (vfb_page_size) and length at least one "
     "page; round them"},
    {VFB_E_WC_UNAVAILABLE, "VFB_E_WC_UNAVAILABLE",
     "this host cannot map that region write-combining (vfb_region_info's attributes); ask for "
     "VFB_ATTR_UC, or OR VFB_ATTR_FALLBACK_UC into attr"},
    {VFB_E_NO_SUCH_REGION, "VFB_E_NO_SUCH_REGION",
     "the device has no mappable region of that index; vfb_region_at lists its regions"},
    {VFB_E_OUT_OF_RANGE, "VFB_E_OUT_OF_RANGE",
     "the range passes the end of the region (vfb_region_info's size); map less, or from a lower offset"},
    {VFB_E_RESTARTED, "VFB_E_RESTARTED",
     "brokerd said it is restarting and keeps this session's grants for the next brokerd; call vfb_resume "
     "while it returns VFB_E_CONNECT or VFB_E_TIMEOUT, up to a bound (brokerd's resume grace, 30 s by "
     "default), then disconnect"},
    {VFB_E_MAPPING_REVOKED, "VFB_E_MAPPING_REVOKED",
     "brokerd revoked the mapping and its address is now inaccessible; vfb_unmap it, then map again "
     "if the device allows"},
    {VFB_E_QUOTA, "VFB_E_QUOTA",
     "a quota of this identity is used up (vfb_last_error names it); release something first"},
    {VFB_E_PERMISSION, "VFB_E_PERMISSION",
     "brokerd's policy does not allow this for this identity (vfb_last_error says which rule); ask "
     "the operator"},
    {VFB_E_NOT_FOUND, "VFB_E_NOT_FOUND",
     "brokerd does not know that device file or mapping (closed, or lost across a restart); open or "
     "map again"},
    {VFB_E_CONFLICT, "VFB_E_CONFLICT",
     "those pages are held with the other memory type, or by a revoked mapping not yet released; map "
     "them with the same type, release the revoked one, or choose other pages"},
    {VFB_E_UNAVAILABLE, "VFB_E_UNAVAILABLE",
     "brokerd cannot do this now (the device is draining or gone, or brokerd is handing over); "
     "vfb_last_error says which; try later"},
    {VFB_E_REJECTED, "VFB_E_REJECTED",
     "brokerd found an argument invalid (vfb_last_error names it); fix the call"},
    {VFB_E_SESSION_ENDED, "VFB_E_SESSION_ENDED",
     "brokerd ended the session and released what it held (the session-ended event says why); "
     "disconnect and connect again"},
    {VFB_E_RESUME_REFUSED, "VFB_E_RESUME_REFUSED",
     "brokerd answers but does not hold this session (vfb_last_error says why: it ended when its "
     "connection closed, or brokerd restarted without it); disconnect and connect again"},
    {VFB_E_UNKNOWN_TICKET, "VFB_E_UNKNOWN_TICKET", "brokerd knows no such ticket"},
    {VFB_E_EXPIRED, "VFB_E_EXPIRED", "the ticket expired before it was redeemed; map again"},
    {VFB_E_ALREADY_USED, "VFB_E_ALREADY_USED", "the ticket was already redeemed: tickets are single use"},
    {VFB_E_WRONG_PEER, "VFB_E_WRONG_PEER",
     "brokerd issued this to another process: redeem it from the process that asked for it"},
    {VFB_E_REVOKED, "VFB_E_REVOKED", "the mapping was released or revoked before its delivery"},
    {VFB_E_INTERNAL, "VFB_E_INTERNAL", "brokerd failed internally; its log says why"},
    {VFB_E_BAD_REQUEST, "VFB_E_BAD_REQUEST",
     "brokerd could not read the request (brokerd's message names the field); a library bug or a "
     "version mismatch"},
    {VFB_E_BUSY, "VFB_E_BUSY",
     "this identity, or brokerd as a whole, is at its cap of fd-channel connections (each session is "
     "one; vfb_last_error names the cap): end sessions you do not need or share one between threads, "
     "or ask the operator to raise the cap"},
    {VFB_E_REFUSED, "VFB_E_REFUSED", "brokerd refused the request; vfb_last_error says why"},
    {VFB_E_UNDELIVERABLE, "VFB_E_UNDELIVERABLE",
     "brokerd could not pass the file descriptor (the kernel's limit on fds in flight); the operator "
     "must act, see brokerd's message"},
    {VFB_E_UNSUPPORTED_VERSION, "VFB_E_UNSUPPORTED_VERSION",
     "brokerd does not speak this library's workload protocol version; upgrade brokerd or the library"},
};

static const struct row *find(int err) {
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    if (rows[i].code == err) return &rows[i];
  return NULL;
}

VFB_API const char *vfb_strerror(int err) {
  const struct row *r = find(err);
  return r ? r->text : "unknown error code (from a newer libvfio-broker?)";
}

VFB_API const char *vfb_error_name(int err) {
  const struct row *r = find(err);
  return r ? r->name : "VFB_E_UNKNOWN";
}

/* test_proto.c: the generated protobuf-c code (build/gen, from proto/vfiobroker/v1/fdchannel.proto)
 * round-trips the fd channel's messages through the frame codec: what the library will send and
 * decode, with the field numbers brokerd uses. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "runner.h"
#include "vfiobroker/v1/fdchannel.pb-c.h"
#include "vfio-broker.h"

static void t_request_roundtrip(void) {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  Vfiobroker__V1__FdRequest req = VFIOBROKER__V1__FD_REQUEST__INIT;
  req.ticket = "0123456789abcdef0123456789abcdef";
  uint8_t out[3072];
  size_t n = vfiobroker__v1__fd_request__get_packed_size(&req);
  REQUIRE(n <= sizeof out);
  vfiobroker__v1__fd_request__pack(&req, out);
  vfb_frame_writer w;
  CHECK_EQ(vfb_frame_writer_init(&w, out, n, sizeof out), VFB_OK);
  CHECK_EQ(vfb_frame_write(&w, sv[0]), VFB_FRAME_DONE);
  uint8_t in[3072];
  vfb_frame_reader r;
  vfb_frame_reader_init(&r, in, sizeof in, 0);
  CHECK_EQ(vfb_frame_read(&r, sv[1]), VFB_FRAME_DONE);
  Vfiobroker__V1__FdRequest *got = vfiobroker__v1__fd_request__unpack(NULL, r.len, in);
  REQUIRE(got != NULL);
  CHECK(strcmp(got->ticket, req.ticket) == 0);
  CHECK(got->grant == NULL && got->release == NULL && got->batch == NULL);
  vfiobroker__v1__fd_request__free_unpacked(got, NULL);
  close(sv[0]);
  close(sv[1]);
}

static void t_reply_with_items(void) {
  Vfiobroker__V1__FdReply item = VFIOBROKER__V1__FD_REPLY__INIT;
  item.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_REFUSED;
  item.grpc_code = "FAILED_PRECONDITION";
  item.message = "WC on a UC-only BAR";
  Vfiobroker__V1__FdReply *items[1] = {&item};
  Vfiobroker__V1__FdReply reply = VFIOBROKER__V1__FD_REPLY__INIT;
  reply.status = VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK;
  reply.cookie = 0x1122334455667788ull;
  reply.length = 4096;
  reply.effective_attribute = VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC;
  reply.n_items = 1;
  reply.items = items;
  uint8_t buf[512];
  size_t n = vfiobroker__v1__fd_reply__get_packed_size(&reply);
  REQUIRE(n <= sizeof buf);
  vfiobroker__v1__fd_reply__pack(&reply, buf);
  Vfiobroker__V1__FdReply *got = vfiobroker__v1__fd_reply__unpack(NULL, n, buf);
  REQUIRE(got != NULL);
  CHECK_EQ(got->status, VFIOBROKER__V1__FD_STATUS__FD_STATUS_OK);
  CHECK(got->cookie == 0x1122334455667788ull);
  CHECK_EQ(got->length, 4096);
  CHECK_EQ(got->effective_attribute, VFIOBROKER__V1__ATTRIBUTE__ATTRIBUTE_WC);
  REQUIRE(got->n_items == 1);
  CHECK(strcmp(got->items[0]->grpc_code, "FAILED_PRECONDITION") == 0);
  vfiobroker__v1__fd_reply__free_unpacked(got, NULL);
  /* Garbage is refused, not half-decoded. */
  const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};
  CHECK(vfiobroker__v1__fd_reply__unpack(NULL, sizeof junk, junk) == NULL);
}

const vfb_test vfb_proto_tests[] = {
    {"proto: FdRequest through the frame codec", t_request_roundtrip},
    {"proto: FdReply with batch items", t_reply_with_items},
    {NULL, NULL},
};

/* session.c: opening a session (the socket's path, the connection, the hello and its welcome),
 * its accessors, and vfb_disconnect. It owns the session object's life and the hello's checks
 * (the version, the page size, the strings' bounds); it never decides what brokerd grants.
 * vfb_resume (resume.c) reuses its hello. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "session.h"

static int valid_token(const char *t) {
  size_t n = 0;
  for (; t[n] != '\0'; n++) {
    if (n >= VFB_TOKEN_LEN) return 0;
    if (!((t[n] >= '0' && t[n] <= '9') || (t[n] >= 'a' && t[n] <= 'f'))) return 0;
  }
  return n == VFB_TOKEN_LEN;
}

static const char *const CAPABILITIES[] = {"events", "batch", "resume"};

int vfb_hello(vfb_session *s, const char *resume_token, Vfiobroker__V1__WorkloadReply **held) {
  if (held != NULL) *held = NULL;
  Vfiobroker__V1__WorkloadHello h = VFIOBROKER__V1__WORKLOAD_HELLO__INIT;
  h.version = VFB_WL_PROTOCOL_VERSION;
  h.n_capabilities = sizeof CAPABILITIES / sizeof CAPABILITIES[0];
  h.capabilities = (char **)CAPABILITIES;
  h.client_name = s->client_name;
  h.resume_token = (char *)(resume_token != NULL ? resume_token : "");
  Vfiobroker__V1__WorkloadRequest req = VFIOBROKER__V1__WORKLOAD_REQUEST__INIT;
  req.kind_case = VFIOBROKER__V1__WORKLOAD_REQUEST__KIND_HELLO;
  req.hello = &h;
  Vfiobroker__V1__WorkloadReply *r = NULL;
  int fds[1];
  size_t nfds = 0;
  int rc = vfb_wl_call(s, &req, 0, &r, fds, &nfds);
  if (rc < 0) return rc;
  const Vfiobroker__V1__WorkloadWelcome *w = r->hello;
  const char *bad = NULL;
  if (w == NULL) bad = "the welcome is empty";
  else if (w->version != VFB_WL_PROTOCOL_VERSION) bad = "the welcome names another protocol version";
  else if (w->page_size == 0 || (w->page_size & (w->page_size - 1)) != 0) bad = "the welcome's page size is not a power of two";
  else if (w->identity == NULL) bad = "the welcome has no identity";
  else if (strlen(w->resume_token) != VFB_TOKEN_LEN) bad = "the welcome's resume token is not 32 characters";
  if (bad != NULL) {
    vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
    vfb_say(s, VFB_E_PROTOCOL, "%s", bad);
    vfb_wl_down(s, VFB_DOWN_LOST, "connection-lost", s->message);
    return VFB_E_PROTOCOL;
  }
  vfb_copy(s->session_id, sizeof s->session_id, w->session_id);
  vfb_copy(s->token, sizeof s->token, w->resume_token);
  vfb_copy(s->server_version, sizeof s->server_version, w->server_version);
  s->resumed = w->resumed;
  s->identity.uid = w->identity->uid;
  s->identity.gid = w->identity->gid;
  s->identity.pid = w->identity->pid;
  s->page_size = w->page_size;
  if (held != NULL) *held = r;
  else vfiobroker__v1__workload_reply__free_unpacked(r, NULL);
  return VFB_OK;
}

/* Writes the failure's message where the options asked for it, and returns err. */
static int failed(const vfb_connect_options *o, const char *message, int err) {
  if (o != NULL && o->error_message != NULL && o->error_message_size > 0)
    vfb_copy(o->error_message, o->error_message_size, message);
  return err;
}

/* The options' fields this version knows, from a struct of o->struct_size bytes. */
#define HAS(o, field) ((o) != NULL && (o)->struct_size >= offsetof(vfb_connect_options, field) + sizeof((o)->field))

VFB_API int vfb_connect_ex(const vfb_connect_options *o, vfb_session **out) {
  if (out == NULL) return VFB_E_INVALID_ARGUMENT;
  *out = NULL;
  if (o != NULL && !HAS(o, error_message_size))
    return VFB_E_INVALID_ARGUMENT; /* not even the first version's fields: error_message is not ours to write */
  const char *broker = HAS(o, broker_socket) ? o->broker_socket : NULL;
  const char *name = HAS(o, client_name) && o->client_name != NULL ? o->client_name : "";
  int timeout = HAS(o, timeout_ms) && o->timeout_ms != 0 ? o->timeout_ms : VFB_DEFAULT_TIMEOUT_MS;
  const char *token = HAS(o, resume_token) ? o->resume_token : NULL;
  if (strlen(name) > VFB_MAX_CLIENT_NAME)
    return failed(o, "client_name is longer than VFB_MAX_CLIENT_NAME (128) bytes", VFB_E_INVALID_ARGUMENT);
  if (timeout < 0) return failed(o, "timeout_ms is negative", VFB_E_INVALID_ARGUMENT);
  if (token != NULL && !valid_token(token))
    return failed(o, "resume_token is not 32 lower-case hex digits", VFB_E_INVALID_ARGUMENT);
  vfb_session *s = calloc(1, sizeof *s);
  if (s == NULL) return failed(o, "out of memory", VFB_E_NO_MEMORY);
  s->sock = s->epfd = s->evfd = -1;
  s->timeout_ms = timeout;
  vfb_copy(s->client_name, sizeof s->client_name, name);
  char broker_path[VFB_SOCKET_PATH_MAX + 1];
  int rc = vfb_socket_paths(broker, getenv("VFIO_BROKER_SOCKET"), getenv("VFIO_BROKER_FD_SOCKET"), broker_path,
                            s->fd_path);
  if (rc < 0) {
    free(s);
    return failed(o, "a socket path is longer than 107 bytes, or the broker socket's path is a directory", rc);
  }
  const char *env_fd = getenv("VFIO_BROKER_FD_SOCKET");
  if (env_fd != NULL && env_fd[0] != '\0')
    vfb_copy(s->path_from, sizeof s->path_from, "from $VFIO_BROKER_FD_SOCKET");
  else
    snprintf(s->path_from, sizeof s->path_from, "beside the broker socket %s, from %s", broker_path,
             broker != NULL && broker[0] != '\0' ? "the argument"
             : getenv("VFIO_BROKER_SOCKET") != NULL && getenv("VFIO_BROKER_SOCKET")[0] != '\0' ? "$VFIO_BROKER_SOCKET"
                                                                                               : "the default");
  s->rbuf = malloc(VFB_WL_REPLY_MAX_BYTES);
  if (s->rbuf == NULL) {
    free(s);
    return failed(o, "out of memory", VFB_E_NO_MEMORY);
  }
  vfb_frame_reader_init(&s->reader, s->rbuf, VFB_WL_REPLY_MAX_BYTES, 0);
  rc = vfb_events_open(s);
  if (rc == VFB_OK) {
    rc = vfb_wl_connect(s);
    if (rc >= 0) {
      s->sock = rc;
      rc = vfb_events_watch(s, s->sock);
    }
  }
  if (rc == VFB_OK) rc = vfb_hello(s, token, NULL);
  if (rc < 0) {
    failed(o, s->message, rc);
    s->end_queued = 1;
    vfb_disconnect(s);
    return rc;
  }
  *out = s;
  return VFB_OK;
}

VFB_API int vfb_connect(const char *broker_socket, vfb_session **out) {
  vfb_connect_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.broker_socket = broker_socket;
  return vfb_connect_ex(&o, out);
}

VFB_API void vfb_disconnect(vfb_session *s) {
  if (s == NULL) return;
  /* Each device closed in brokerd after its mappings are munmapped: brokerd frees their pages at
   * once. A connection that only closes leaves delivered mappings booked until this process exits
   * (brokerd cannot know they were unmapped). The close stops at the first failed exchange. */
  while (s->devices != NULL) {
    vfb_device *d = s->devices;
    if (s->state == VFB_LIVE && s->sock >= 0 && !d->gone) {
      while (d->maps != NULL) vfb_mapping_free(d->maps);
      (void)vfb_close_device(d);
    } else {
      vfb_device_free(d);
    }
  }
  if (s->sock >= 0) close(s->sock);
  s->sock = -1;
  while (s->owed != NULL) {
    vfb_owed *o = s->owed;
    s->owed = o->next;
    free(o);
  }
  vfb_frame_reader_next(&s->reader);
  vfb_events_close(s);
  free(s->rbuf);
  free(s);
}

VFB_API const char *vfb_session_id(const vfb_session *s) {
  return s == NULL ? "" : s->session_id;
}

VFB_API const char *vfb_resume_token(const vfb_session *s) {
  return s == NULL ? "" : s->token;
}

VFB_API int vfb_session_resumed(const vfb_session *s) {
  return s != NULL && s->resumed;
}

VFB_API int vfb_session_identity(const vfb_session *s, vfb_identity *out) {
  if (s == NULL) return VFB_E_INVALID_ARGUMENT;
  if (out == NULL) return vfb_say((vfb_session *)s, VFB_E_INVALID_ARGUMENT, "vfb_session_identity: out is NULL");
  *out = s->identity;
  return VFB_OK;
}

VFB_API uint64_t vfb_page_size(const vfb_session *s) {
  return s == NULL ? 0 : s->page_size;
}

VFB_API const char *vfb_server_version(const vfb_session *s) {
  return s == NULL ? "" : s->server_version;
}

VFB_API const char *vfb_last_error(const vfb_session *s) {
  return s == NULL ? "" : s->message;
}

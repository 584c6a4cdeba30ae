// poll.c: owns readiness. A Poller is a uv_poll_t on the env's own libuv loop (no threadpool, no
// thread per connection): start(events) arms it, stop() disarms it, ref()/unref() decide whether it
// keeps the process alive, close() releases it. Pollers start unref'd; index.ts refs one only while a
// promise waits on it, so ten thousand idle sockets cost nothing and keep nothing alive.
// Lifetime: the C struct outlives both the JS wrapper (finalizer) and the libuv handle (close
// callback); whichever comes last frees it. While armed, the wrapper is held strongly so its callback
// cannot be collected; while disarmed it is weak, so a forgotten Poller is collected and closed.
// The fd is never closed here, and must stay open until close() (index.ts closes it right after).
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

struct poller {
  uv_poll_t handle;
  napi_env env;
  addon_state* st;
  napi_ref self; // count 1 while armed, 0 otherwise
  napi_async_context actx;
  int fd;
  bool armed, closing, close_done, finalized;
  poller* next;
  poller* prev;
};

static void unlink_poller(poller* p) {
  if (p->prev) p->prev->next = p->next;
  else if (p->st->pollers == p) p->st->pollers = p->next;
  if (p->next) p->next->prev = p->prev;
  p->next = p->prev = NULL;
}

static void on_uv_close(uv_handle_t* h) {
  poller* p = h->data;
  p->close_done = true;
  if (p->finalized) free(p);
}

// from_finalizer: the wrapper is being collected; its reference must still be deleted.
static void begin_close(poller* p) {
  if (p->closing) return;
  p->closing = true;
  unlink_poller(p);
  if (!p->st->tearing_down) {
    if (p->self) napi_delete_reference(p->env, p->self);
    if (p->actx) napi_async_destroy(p->env, p->actx);
  }
  p->self = NULL;
  p->actx = NULL;
  uv_close((uv_handle_t*)&p->handle, on_uv_close);
}

static void on_finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  poller* p = data;
  p->finalized = true;
  if (!p->closing) begin_close(p);
  else if (p->close_done) free(p);
}

void poll_env_cleanup(addon_state* st) {
  while (st->pollers) begin_close(st->pollers);
}

static void on_poll(uv_poll_t* h, int status, int events) {
  poller* p = h->data;
  if (p->closing || p->st->tearing_down || !p->self) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value self = NULL, cb, argv[2], result;
  napi_get_reference_value(env, p->self, &self);
  if (self && napi_get_named_property(env, self, "onready", &cb) == napi_ok) {
    napi_valuetype t;
    napi_typeof(env, cb, &t);
    if (t == napi_function) {
      napi_create_int32(env, status < 0 ? -status : 0, &argv[0]);
      napi_create_int32(env, events, &argv[1]);
      if (napi_make_callback(env, p->actx, self, cb, 2, argv, &result) == napi_pending_exception) {
        napi_value err;
        napi_get_and_clear_last_exception(env, &err);
        napi_fatal_exception(env, err);
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

static poller* unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv, const char* fn) {
  napi_value self;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) return NULL;
  poller* p = NULL;
  if (napi_unwrap(env, self, (void**)&p) != napi_ok || !p) {
    throw_inval(env, fn, "not a Poller");
    return NULL;
  }
  if (p->closing) {
    throw_code(env, "ECLOSED", EBADF, fn, "%s: the poller for fd %d is closed", fn, p->fd);
    return NULL;
  }
  return p;
}

// new Poller(fd): this.onready(errno, events) is called on readiness; events are UV_READABLE = 1,
// UV_WRITABLE = 2.
static napi_value poller_new(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self;
  if (napi_get_cb_info(env, info, &argc, argv, &self, NULL) != napi_ok) return NULL;
  if (argc < 1) napi_get_undefined(env, &argv[0]);
  int fd;
  if (!arg_fd(env, argv[0], "Poller", "fd", &fd)) return NULL;
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return throw_inval(env, "Poller", "no event loop");
  poller* p = calloc(1, sizeof *p);
  if (!p) return throw_errno(env, ENOMEM, "Poller", "fd %d", fd);
  int r = uv_poll_init(loop, &p->handle, fd);
  if (r < 0) {
    free(p);
    if (r == UV_EEXIST)
      return throw_code(env, "EEXIST", EEXIST, "uv_poll_init",
                        "uv_poll_init(fd %d): this fd is already watched by another Poller; watch a dup()", fd);
    return throw_errno(env, -r, "uv_poll_init", "fd %d", fd);
  }
  p->handle.data = p;
  p->env = env;
  p->st = state_of(env);
  p->fd = fd;
  uv_unref((uv_handle_t*)&p->handle);
  napi_value name;
  napi_create_string_utf8(env, "vfio_native.Poller", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &p->actx);
  if (napi_wrap(env, self, p, on_finalize, NULL, NULL) != napi_ok) {
    p->finalized = true;
    p->closing = true;
    napi_async_destroy(env, p->actx);
    uv_close((uv_handle_t*)&p->handle, on_uv_close);
    return throw_inval(env, "Poller", "could not wrap");
  }
  napi_create_reference(env, self, 0, &p->self);
  p->next = p->st->pollers;
  if (p->next) p->next->prev = p;
  p->st->pollers = p;
  return self;
}

static napi_value poller_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  poller* p = unwrap(env, info, &argc, argv, "Poller.start");
  if (!p) return NULL;
  if (argc < 1) return throw_inval(env, "Poller.start", "events missing");
  int64_t ev;
  if (!arg_int(env, argv[0], "Poller.start", "events", 1, UV_READABLE | UV_WRITABLE, &ev)) return NULL;
  int r = uv_poll_start(&p->handle, (int)ev, on_poll);
  if (r < 0) return throw_errno(env, -r, "uv_poll_start", "fd %d", p->fd);
  if (!p->armed) {
    uint32_t c;
    napi_reference_ref(env, p->self, &c);
    p->armed = true;
  }
  return make_undefined(env);
}

static napi_value poller_stop(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  poller* p = unwrap(env, info, &argc, NULL, "Poller.stop");
  if (!p) return NULL;
  uv_poll_stop(&p->handle);
  if (p->armed) {
    uint32_t c;
    napi_reference_unref(env, p->self, &c);
    p->armed = false;
  }
  return make_undefined(env);
}

static napi_value poller_ref(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  poller* p = unwrap(env, info, &argc, NULL, "Poller.ref");
  if (!p) return NULL;
  uv_ref((uv_handle_t*)&p->handle);
  return make_undefined(env);
}

static napi_value poller_unref(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  poller* p = unwrap(env, info, &argc, NULL, "Poller.unref");
  if (!p) return NULL;
  uv_unref((uv_handle_t*)&p->handle);
  return make_undefined(env);
}

// close(): idempotent. After it returns the fd is no longer watched and may be closed.
static napi_value poller_close(napi_env env, napi_callback_info info) {
  napi_value self;
  size_t argc = 0;
  if (napi_get_cb_info(env, info, &argc, NULL, &self, NULL) != napi_ok) return NULL;
  poller* p = NULL;
  if (napi_unwrap(env, self, (void**)&p) != napi_ok || !p) return throw_inval(env, "Poller.close", "not a Poller");
  begin_close(p);
  return make_undefined(env);
}

void register_poll(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"start", NULL, poller_start, NULL, NULL, NULL, napi_default_method, NULL},
      {"stop", NULL, poller_stop, NULL, NULL, NULL, napi_default_method, NULL},
      {"ref", NULL, poller_ref, NULL, NULL, NULL, napi_default_method, NULL},
      {"unref", NULL, poller_unref, NULL, NULL, NULL, napi_default_method, NULL},
      {"close", NULL, poller_close, NULL, NULL, NULL, napi_default_method, NULL},
  };
  napi_value cls;
  napi_define_class(env, "Poller", NAPI_AUTO_LENGTH, poller_new, NULL, sizeof methods / sizeof methods[0], methods,
                    &cls);
  napi_set_named_property(env, exports, "Poller", cls);
}

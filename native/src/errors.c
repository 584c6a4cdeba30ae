// errors.c: owns turning errno values and bad arguments into thrown NativeError objects, and the
// argument validators every other file uses. It must never let a JS value reach a syscall
// unchecked: wrong types, non-integers, negatives and out-of-range numbers are thrown as EINVAL.
#include "common.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

napi_value make_error(napi_env env, const char* code, int err, const char* syscall, const char* message) {
  addon_state* st = state_of(env);
  napi_value msg, result = NULL, ctor = NULL;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_value jcode, jerrno, jsys;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode);
  napi_create_int32(env, err, &jerrno);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &jsys);
  if (st && st->error_ctor) napi_get_reference_value(env, st->error_ctor, &ctor);
  if (ctor) {
    napi_value args[4] = {msg, jcode, jerrno, jsys};
    if (napi_new_instance(env, ctor, 4, args, &result) != napi_ok) {
      // A throwing constructor leaves a pending exception; clear it and fall back to Error.
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value ignored;
        napi_get_and_clear_last_exception(env, &ignored);
      }
      result = NULL;
    }
  }
  if (!result) {
    napi_create_error(env, jcode, msg, &result);
    set_named(env, result, "errno", jerrno);
    set_named(env, result, "syscall", jsys);
  }
  return result;
}

static napi_value throw_message(napi_env env, const char* code, int err, const char* syscall, const char* m) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw(env, make_error(env, code, err, syscall, m));
  return NULL;
}

static const char* code_of(int err) {
  const char* name = strerrorname_np(err);
  return name ? name : "EUNKNOWN";
}

napi_value throw_errno(napi_env env, int err, const char* syscall, const char* fmt, ...) {
  char what[256], m[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  snprintf(m, sizeof m, "%s(%s): %s", syscall, what, strerror(err));
  return throw_message(env, code_of(err), err, syscall, m);
}

napi_value throw_code(napi_env env, const char* code, int err, const char* syscall, const char* fmt, ...) {
  char m[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m, sizeof m, fmt, ap);
  va_end(ap);
  return throw_message(env, code, err, syscall, m);
}

napi_value throw_inval(napi_env env, const char* fn, const char* fmt, ...) {
  char text[400], m[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  snprintf(m, sizeof m, "%s: %s", fn, text);
  return throw_message(env, "EINVAL", EINVAL, fn, m);
}

static const char* type_name(napi_valuetype t) {
  switch (t) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_object: return "object";
    case napi_function: return "function";
    case napi_external: return "external";
    case napi_bigint: return "bigint";
  }
  return "unknown";
}

bool arg_int(napi_env env, napi_value v, const char* fn, const char* what, int64_t min, int64_t max, int64_t* out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_number) {
    throw_inval(env, fn, "%s must be an integer, got %s", what, type_name(t));
    return false;
  }
  double d;
  napi_get_value_double(env, v, &d);
  if (!isfinite(d) || d != trunc(d)) {
    throw_inval(env, fn, "%s must be an integer, got %g", what, d);
    return false;
  }
  if (d < (double)min || d > (double)max) {
    throw_inval(env, fn, "%s must be between %lld and %lld, got %.0f", what, (long long)min, (long long)max, d);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

bool arg_fd(napi_env env, napi_value v, const char* fn, const char* what, int* out) {
  int64_t x;
  if (!arg_int(env, v, fn, what, 0, INT32_MAX, &x)) return false;
  *out = (int)x;
  return true;
}

bool arg_u64(napi_env env, napi_value v, const char* fn, const char* what, uint64_t max, uint64_t* out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_bigint) {
    int64_t s;
    bool lossless;
    napi_get_value_bigint_int64(env, v, &s, &lossless);
    if (!lossless || s < 0 || (uint64_t)s > max) {
      throw_inval(env, fn, "%s must be between 0 and %llu", what, (unsigned long long)max);
      return false;
    }
    *out = (uint64_t)s;
    return true;
  }
  if (t != napi_number) {
    throw_inval(env, fn, "%s must be a non-negative integer (number or bigint), got %s", what, type_name(t));
    return false;
  }
  double d;
  napi_get_value_double(env, v, &d);
  if (!isfinite(d) || d != trunc(d) || d < 0) {
    throw_inval(env, fn, "%s must be a non-negative integer, got %g", what, d);
    return false;
  }
  if (d > 9007199254740991.0 || (uint64_t)d > max) {
    throw_inval(env, fn, "%s must be at most %llu (use a bigint beyond 2^53), got %.0f", what,
                (unsigned long long)(max < 9007199254740991ULL ? max : 9007199254740991ULL), d);
    return false;
  }
  *out = (uint64_t)d;
  return true;
}

bool arg_bool(napi_env env, napi_value v, const char* fn, const char* what, bool* out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_boolean) {
    throw_inval(env, fn, "%s must be a boolean, got %s", what, type_name(t));
    return false;
  }
  napi_get_value_bool(env, v, out);
  return true;
}

bool arg_string(napi_env env, napi_value v, const char* fn, const char* what, char* buf, size_t cap, size_t* len) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_string) {
    throw_inval(env, fn, "%s must be a string, got %s", what, type_name(t));
    return false;
  }
  size_t need;
  napi_get_value_string_utf8(env, v, NULL, 0, &need);
  if (need >= cap) {
    throw_inval(env, fn, "%s is %zu bytes long; at most %zu allowed", what, need, cap - 1);
    return false;
  }
  size_t got;
  napi_get_value_string_utf8(env, v, buf, cap, &got);
  if (strlen(buf) != got) {
    throw_inval(env, fn, "%s must not contain NUL characters", what);
    return false;
  }
  if (len) *len = got;
  return true;
}

bool arg_bytes(napi_env env, napi_value v, const char* fn, const char* what, void** data, size_t* len) {
  bool is = false;
  napi_is_typedarray(env, v, &is);
  if (is) {
    napi_typedarray_type type;
    size_t count, off;
    napi_value ab;
    napi_get_typedarray_info(env, v, &type, &count, data, &ab, &off);
    size_t el = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: el = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: el = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: el = 8; break;
      default: el = 1;
    }
    *len = count * el;
    if (*len == 0) *data = NULL;
    return true;
  }
  napi_is_dataview(env, v, &is);
  if (is) {
    napi_value ab;
    size_t off;
    napi_get_dataview_info(env, v, len, data, &ab, &off);
    return true;
  }
  napi_valuetype t;
  napi_typeof(env, v, &t);
  throw_inval(env, fn, "%s must be a Uint8Array (or Buffer / TypedArray / DataView), got %s", what, type_name(t));
  return false;
}

bool arg_fd_array(napi_env env, napi_value v, const char* fn, int* fds, uint32_t max, uint32_t* count) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_undefined || t == napi_null) {
    *count = 0;
    return true;
  }
  bool is = false;
  napi_is_array(env, v, &is);
  if (!is) {
    throw_inval(env, fn, "fds must be an array of file descriptors, got %s", type_name(t));
    return false;
  }
  uint32_t n;
  napi_get_array_length(env, v, &n);
  if (n > max) {
    throw_inval(env, fn, "at most %u fds fit in one message (SCM_MAX_FD), got %u", max, n);
    return false;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    napi_get_element(env, v, i, &e);
    char what[32];
    snprintf(what, sizeof what, "fds[%u]", i);
    if (!arg_fd(env, e, fn, what, &fds[i])) return false;
  }
  *count = n;
  return true;
}

napi_value make_int(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

napi_value make_bool(napi_env env, bool v) {
  napi_value r;
  napi_get_boolean(env, v, &r);
  return r;
}

napi_value make_undefined(napi_env env) {
  napi_value r;
  napi_get_undefined(env, &r);
  return r;
}

void set_named(napi_env env, napi_value obj, const char* name, napi_value v) {
  napi_set_named_property(env, obj, name, v);
}

void export_fn(napi_env env, napi_value exports, const char* name, napi_callback cb) {
  napi_value f;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &f);
  napi_set_named_property(env, exports, name, f);
}

// setErrorClass(ctor): index.ts registers NativeError so that C throws real NativeError instances.
static napi_value set_error_class(napi_env env, napi_callback_info info) {
  ARGS(1);
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (t != napi_function) return throw_inval(env, "setErrorClass", "expected a constructor");
  addon_state* st = state_of(env);
  if (st->error_ctor) napi_delete_reference(env, st->error_ctor);
  napi_create_reference(env, argv[0], 1, &st->error_ctor);
  return make_undefined(env);
}

void register_errors(napi_env env, napi_value exports) {
  export_fn(env, exports, "setErrorClass", set_error_class);
}

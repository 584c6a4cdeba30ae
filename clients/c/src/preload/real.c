/* real.c: the next definition of every function the shim wraps (dlsym RTLD_NEXT: libc's, or a
 * sanitizer's interceptor), resolved once. It owns those pointers and never calls them. */
#include <dlfcn.h>
#include <pthread.h>

#include "shim.h"

int (*shim_real_open)(const char *, int, ...);
int (*shim_real_openat)(int, const char *, int, ...);
int (*shim_real_faccessat)(int, const char *, int, int);
FILE *(*shim_real_fopen)(const char *, const char *);
FILE *(*shim_real_fopen64)(const char *, const char *);
int (*shim_real_close)(int);
int (*shim_real_dup)(int);
int (*shim_real_dup2)(int, int);
int (*shim_real_dup3)(int, int, int);
int (*shim_real_fcntl)(int, int, ...);
int (*shim_real_close_range)(unsigned, unsigned, int);
void (*shim_real_closefrom)(int);
int (*shim_real_fclose)(FILE *);
void *(*shim_real_mmap)(void *, size_t, int, int, int, off_t);
int (*shim_real_munmap)(void *, size_t);

static pthread_once_t once = PTHREAD_ONCE_INIT;

#define NEXT(var, name) *(void **)(&var) = dlsym(RTLD_NEXT, name)

static void resolve(void) {
  NEXT(shim_real_open, "open");
  NEXT(shim_real_openat, "openat");
  NEXT(shim_real_faccessat, "faccessat");
  NEXT(shim_real_fopen, "fopen");
  NEXT(shim_real_fopen64, "fopen64");
  NEXT(shim_real_close, "close");
  NEXT(shim_real_dup, "dup");
  NEXT(shim_real_dup2, "dup2");
  NEXT(shim_real_dup3, "dup3");
  NEXT(shim_real_fcntl, "fcntl");
  NEXT(shim_real_close_range, "close_range");
  NEXT(shim_real_closefrom, "closefrom");
  NEXT(shim_real_fclose, "fclose");
  NEXT(shim_real_mmap, "mmap");
  NEXT(shim_real_munmap, "munmap");
}

void shim_resolve(void) {
  pthread_once(&once, resolve);
}

/* Resolved before main, so that the wrappers' first calls do not race to it. */
__attribute__((constructor)) static void resolve_early(void) {
  shim_resolve();
}

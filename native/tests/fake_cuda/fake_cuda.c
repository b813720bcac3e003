/*
 * fake_cuda.c — a FAKE CUDA driver, for tests only. It is not NVIDIA's driver and shares no
 * code or headers with it: it implements, over host memory, just the driver-API entry points
 * demon's cuda device resolves with dlsym (native/src/device/cuda_driver.h), with the ABI of
 * the public driver API reference. Tests build it as a shared library and point
 * $DEMON_CUDA_LIBRARY at it, so the loader, the ledger/driver cross-check, the out-of-memory
 * paths, the staging copies and whole sessions on the "cuda" device run in CI without a GPU.
 *
 * To be an honest stand-in it:
 *  - hands out device pointers the CPU cannot dereference (non-canonical x86-64 addresses:
 *    a host access to one faults at once, as it would on a GPU), and checks every copy's
 *    range against a live allocation (CUDA_ERROR_INVALID_VALUE otherwise);
 *  - requires a current context on the calling thread for memory calls
 *    (CUDA_ERROR_INVALID_CONTEXT otherwise), as the real driver does;
 *  - backs large allocations with MAP_NORESERVE mappings, so a 24 GiB "GPU" costs nothing
 *    until touched (a zero memset of untouched memory is skipped).
 *
 * Configuration, read at cuInit (environment; RESERVED_BYTES also at every cuMemAlloc and
 * cuMemGetInfo, as
 * other processes come and go — set it only while no other thread is in the driver):
 *  DEMON_FAKE_CUDA_TOTAL_BYTES     total device memory (default 1 GiB)
 *  DEMON_FAKE_CUDA_RESERVED_BYTES  memory used by "others" (context, other processes): the
 *                                  driver refuses what the ledger (capacity = total) admits
 *  DEMON_FAKE_CUDA_FAIL_ALLOC      "all": every cuMemAlloc fails with OUT_OF_MEMORY;
 *                                  N: only the Nth cuMemAlloc after cuInit fails
 *  DEMON_FAKE_CUDA_FREE_LAG        freed memory shows in cuMemGetInfo only after this many
 *                                  further cuMemGetInfo calls (the driver frees async)
 *  DEMON_FAKE_CUDA_NO_DEVICE       "1": cuInit fails with CUDA_ERROR_NO_DEVICE
 *  DEMON_FAKE_CUDA_NO_POOLS        "1": the device reports no memory-pool support
 *                                  (CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED = 0)
 *
 *  DEMON_FAKE_CUDA_ABORT_ON_HAZARD "1": abort() at the first stream-ordering hazard (below)
 *
 * cuMemAllocAsync allocates at once (as if the stream were idle); cuMemFreeAsync only
 * queues the free on its stream: the memory stays in use, in cuMemGetInfo and in
 * demon_fake_cuda_live, until that stream is synchronised or destroyed — so a caller that
 * reads the driver's memory without synchronising sees its frees still pending.
 *
 * Stream ordering. Every copy and memset really happens before the call returns, but the
 * fake remembers the ordering a GPU would give it: legacy-default-stream work that the
 * real driver may leave in flight (cuMemsetD8_v2, cuMemcpyHtoD_v2, and any async call on
 * stream 0) marks its allocation "legacy work pending" until a legacy synchronisation
 * (cuCtxSynchronize, cuStreamSynchronize(0), a synchronous cuMemcpyDtoH_v2, cuMemFree_v2)
 * or an operation on a blocking stream (created without CU_STREAM_NON_BLOCKING, which
 * waits for the legacy stream). An operation on a NON-blocking stream — which the real
 * driver does not order after the legacy stream — that touches an allocation with legacy
 * work pending (a cuMemFreeAsync, an async copy or memset) is a hazard: the memory could
 * be freed or read under the unfinished work. Hazards are counted
 * (demon_fake_cuda_hazards), printed to stderr, and abort the process when
 * DEMON_FAKE_CUDA_ABORT_ON_HAZARD=1.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct fake_ctx* CUcontext;
typedef struct fake_stream* CUstream;
typedef struct fake_event* CUevent;

enum {
  kSuccess = 0,
  kInvalidValue = 1,
  kOutOfMemory = 2,
  kNotInitialized = 3,
  kNoDevice = 100,
  kInvalidDevice = 101,
  kInvalidContext = 201,
  kInvalidHandle = 400,
  kNotReady = 600,
};

#define EXPORT __attribute__((visibility("default")))
#define FAKE_BASE 0x0fa4e00000000000ULL /* non-canonical on x86-64: host access faults */
#define MAP_MIN (1u << 20)

struct fake_ctx {
  int refs;
};
struct fake_stream {
  int magic;
  unsigned flags;       /* CU_STREAM_NON_BLOCKING = 1 */
  CUdeviceptr* pending; /* cuMemFreeAsync queue, run at synchronisation */
  size_t npending, cap;
};
struct fake_event {
  int magic;
  struct timespec at;
};

struct alloc {
  CUdeviceptr addr;
  size_t size;
  char* host;
  int mapped;
  int dirty;          /* written since allocation */
  int legacy_pending; /* legacy-stream work may still be in flight (see the header) */
  struct alloc* next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int initialized;
static unsigned long long total_bytes = 1ULL << 30, reserved_bytes, used_bytes, pending_free;
static long fail_nth = 0; /* 0 none, -1 all */
static long alloc_calls;
static int free_lag, lag_left;
static CUdeviceptr next_addr = FAKE_BASE;
static int no_pools;
static long async_allocs, async_frees; /* stream-ordered calls, for tests */
static long hazards;                   /* stream-ordering hazards seen */
static int abort_on_hazard;
static struct alloc* allocs;
static struct fake_ctx primary;
static __thread CUcontext current;

static unsigned long long env_u64(const char* name, unsigned long long def) {
  const char* v = getenv(name);
  return (v != NULL && v[0] != '\0') ? strtoull(v, NULL, 10) : def;
}

static struct alloc* find(CUdeviceptr p, size_t n) {
  for (struct alloc* a = allocs; a != NULL; a = a->next) {
    if (p >= a->addr && p < a->addr + a->size) return (n <= a->addr + a->size - p) ? a : NULL;
  }
  return NULL;
}

/* Legacy-stream work has completed (a legacy synchronisation). mu held. */
static void legacy_done_locked(void) {
  for (struct alloc* a = allocs; a != NULL; a = a->next) a->legacy_pending = 0;
}

/* Orders an operation `op` on stream s (0: the legacy stream) that touches allocation a
   (may be NULL), as a GPU would (see the header). mu held. */
static void order_locked(CUstream s, struct alloc* a, const char* op) {
  if (s == NULL) {
    if (a != NULL) a->legacy_pending = 1;
  } else if ((s->flags & 1u) == 0) {
    legacy_done_locked(); /* a blocking stream waits for the legacy stream */
  } else if (a != NULL && a->legacy_pending) {
    hazards++;
    fprintf(stderr,
            "fake_cuda: HAZARD: %s on a non-blocking stream touches device memory 0x%llx "
            "with legacy-stream work still in flight\n",
            op, (unsigned long long)a->addr);
    if (abort_on_hazard) abort();
  }
}

EXPORT CUresult cuInit(unsigned flags) {
  if (flags != 0) return kInvalidValue;
  const char* nd = getenv("DEMON_FAKE_CUDA_NO_DEVICE");
  if (nd != NULL && strcmp(nd, "1") == 0) return kNoDevice;
  pthread_mutex_lock(&mu);
  total_bytes = env_u64("DEMON_FAKE_CUDA_TOTAL_BYTES", 1ULL << 30);
  reserved_bytes = env_u64("DEMON_FAKE_CUDA_RESERVED_BYTES", 0);
  const char* f = getenv("DEMON_FAKE_CUDA_FAIL_ALLOC");
  fail_nth = (f == NULL || f[0] == '\0') ? 0 : strcmp(f, "all") == 0 ? -1 : strtol(f, NULL, 10);
  alloc_calls = 0;
  free_lag = (int)env_u64("DEMON_FAKE_CUDA_FREE_LAG", 0);
  const char* np = getenv("DEMON_FAKE_CUDA_NO_POOLS");
  no_pools = np != NULL && strcmp(np, "1") == 0;
  async_allocs = async_frees = hazards = 0;
  const char* ah = getenv("DEMON_FAKE_CUDA_ABORT_ON_HAZARD");
  abort_on_hazard = ah != NULL && strcmp(ah, "1") == 0;
  initialized = 1;
  pthread_mutex_unlock(&mu);
  return kSuccess;
}

EXPORT CUresult cuDriverGetVersion(int* v) {
  if (v == NULL) return kInvalidValue;
  *v = 12040;
  return kSuccess;
}

EXPORT CUresult cuDeviceGetCount(int* n) {
  if (!initialized) return kNotInitialized;
  if (n == NULL) return kInvalidValue;
  *n = 1;
  return kSuccess;
}

EXPORT CUresult cuDeviceGet(CUdevice* d, int ordinal) {
  if (!initialized) return kNotInitialized;
  if (d == NULL) return kInvalidValue;
  if (ordinal != 0) return kInvalidDevice;
  *d = 0;
  return kSuccess;
}

EXPORT CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
  if (d != 0) return kInvalidDevice;
  if (name == NULL || len <= 0) return kInvalidValue;
  snprintf(name, (size_t)len, "FAKE CUDA device (tests only)");
  return kSuccess;
}

EXPORT CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice d) {
  if (d != 0) return kInvalidDevice;
  if (v == NULL) return kInvalidValue;
  switch (attr) {
    case 75: *v = 9; return kSuccess; /* compute capability 9.0 */
    case 76: *v = 0; return kSuccess;
    case 115: *v = !no_pools; return kSuccess; /* memory pools (cuMemAllocAsync) */
    default: return kInvalidValue;
  }
}

typedef struct {
  unsigned char bytes[16];
} CUuuid;

EXPORT CUresult cuDeviceGetUuid(CUuuid* u, CUdevice d) {
  if (d != 0) return kInvalidDevice;
  if (u == NULL) return kInvalidValue;
  static const unsigned char fake_uuid[16] = {0xfa, 0x4e, 0xc0, 0xda, 0x00, 0x00, 0x40, 0x00,
                                              0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01};
  memcpy(u->bytes, fake_uuid, sizeof fake_uuid);
  return kSuccess;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice d) {
  if (!initialized) return kNotInitialized;
  if (d != 0) return kInvalidDevice;
  if (c == NULL) return kInvalidValue;
  pthread_mutex_lock(&mu);
  primary.refs++;
  pthread_mutex_unlock(&mu);
  *c = &primary;
  return kSuccess;
}

static CUresult ctx_release(CUdevice d) {
  if (d != 0) return kInvalidDevice;
  pthread_mutex_lock(&mu);
  CUresult r = primary.refs > 0 ? kSuccess : kInvalidContext;
  if (primary.refs > 0) primary.refs--;
  pthread_mutex_unlock(&mu);
  return r;
}
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { return ctx_release(d); }
EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice d) { return ctx_release(d); }

EXPORT CUresult cuCtxSetCurrent(CUcontext c) {
  if (c != NULL && (c != &primary || primary.refs == 0)) return kInvalidContext;
  current = c;
  return kSuccess;
}

static CUresult need_ctx(void) {
  return (current == &primary && primary.refs > 0) ? kSuccess : kInvalidContext;
}

EXPORT CUresult cuMemGetInfo_v2(size_t* free_out, size_t* total_out) {
  if (need_ctx() != kSuccess) return kInvalidContext;
  if (free_out == NULL || total_out == NULL) return kInvalidValue;
  pthread_mutex_lock(&mu);
  reserved_bytes = env_u64("DEMON_FAKE_CUDA_RESERVED_BYTES", 0);
  if (lag_left > 0) {
    lag_left--;
  } else {
    pending_free = 0;
  }
  unsigned long long busy = reserved_bytes + used_bytes + pending_free;
  *free_out = (size_t)(busy >= total_bytes ? 0 : total_bytes - busy);
  *total_out = (size_t)total_bytes;
  pthread_mutex_unlock(&mu);
  return kSuccess;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
  if (need_ctx() != kSuccess) return kInvalidContext;
  if (p == NULL || n == 0) return kInvalidValue;
  pthread_mutex_lock(&mu);
  reserved_bytes = env_u64("DEMON_FAKE_CUDA_RESERVED_BYTES", 0);
  alloc_calls++;
  int fail = fail_nth == -1 || (fail_nth > 0 && alloc_calls == fail_nth);
  if (fail || reserved_bytes + used_bytes + pending_free + n > total_bytes) {
    pthread_mutex_unlock(&mu);
    return kOutOfMemory;
  }
  struct alloc* a = calloc(1, sizeof *a);
  if (a == NULL) {
    pthread_mutex_unlock(&mu);
    return kOutOfMemory;
  }
  a->size = n;
  if (n >= MAP_MIN) {
    void* m =
        mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    a->host = m == MAP_FAILED ? NULL : m;
    a->mapped = 1;
  } else {
    a->host = malloc(n);
    if (a->host != NULL) memset(a->host, 0x5a, n); /* like a GPU: new memory is garbage */
    a->dirty = 1;
  }
  if (a->host == NULL) {
    free(a);
    pthread_mutex_unlock(&mu);
    return kOutOfMemory;
  }
  a->addr = next_addr;
  next_addr += (n + 4095) / 4096 * 4096 + 4096; /* a guard gap between allocations */
  a->next = allocs;
  allocs = a;
  used_bytes += n;
  *p = a->addr;
  pthread_mutex_unlock(&mu);
  return kSuccess;
}

/* Frees allocation p now. mu held. */
static CUresult release_locked(CUdeviceptr p) {
  for (struct alloc** pp = &allocs; *pp != NULL; pp = &(*pp)->next) {
    struct alloc* a = *pp;
    if (a->addr != p) continue;
    *pp = a->next;
    used_bytes -= a->size;
    if (free_lag > 0) {
      pending_free += a->size;
      lag_left = free_lag;
    }
    if (a->mapped) {
      munmap(a->host, a->size);
    } else {
      free(a->host);
    }
    free(a);
    return kSuccess;
  }
  return kInvalidValue;
}

/* cuMemFree synchronises implicitly: legacy work is done before the memory goes. */
EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
  if (need_ctx() != kSuccess) return kInvalidContext;
  pthread_mutex_lock(&mu);
  legacy_done_locked();
  CUresult r = release_locked(p);
  pthread_mutex_unlock(&mu);
  return r;
}

static int valid_stream(CUstream s) { return s == NULL || s->magic == 0x57; }

EXPORT CUresult cuMemAllocAsync(CUdeviceptr* p, size_t n, CUstream s) {
  if (!valid_stream(s)) return kInvalidHandle;
  CUresult r = cuMemAlloc_v2(p, n);
  if (r == kSuccess) {
    pthread_mutex_lock(&mu);
    async_allocs++;
    pthread_mutex_unlock(&mu);
  }
  return r;
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) {
  if (need_ctx() != kSuccess) return kInvalidContext;
  if (s == NULL || s->magic != 0x57) return kInvalidHandle; /* demon always passes its stream */
  pthread_mutex_lock(&mu);
  struct alloc* a = find(p, 1);
  if (a == NULL || a->addr != p) {
    pthread_mutex_unlock(&mu);
    return kInvalidValue;
  }
  order_locked(s, a, "cuMemFreeAsync");
  if (s->npending == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 16;
    CUdeviceptr* q = realloc(s->pending, cap * sizeof *q);
    if (q == NULL) {
      pthread_mutex_unlock(&mu);
      return kOutOfMemory;
    }
    s->pending = q;
    s->cap = cap;
  }
  s->pending[s->npending++] = p;
  async_frees++;
  pthread_mutex_unlock(&mu);
  return kSuccess;
}

/* Runs a stream's queued frees (synchronisation, destruction). */
static CUresult drain(CUstream s) {
  if (s == NULL) return kSuccess;
  pthread_mutex_lock(&mu);
  size_t n = s->npending;
  CUdeviceptr* q = s->pending;
  s->pending = NULL;
  s->npending = s->cap = 0;
  pthread_mutex_unlock(&mu);
  CUresult r = kSuccess;
  pthread_mutex_lock(&mu);
  for (size_t i = 0; i < n; i++) {
    CUresult f = release_locked(q[i]);
    if (f != kSuccess) r = f;
  }
  pthread_mutex_unlock(&mu);
  free(q);
  return r;
}

EXPORT CUresult cuMemAllocHost_v2(void** p, size_t n) {
  if (need_ctx() != kSuccess) return kInvalidContext;
  if (p == NULL || n == 0) return kInvalidValue;
  *p = malloc(n);
  return *p == NULL ? kOutOfMemory : kSuccess;
}

EXPORT CUresult cuMemFreeHost(void* p) {
  free(p);
  return kSuccess;
}

static CUresult memset_on(CUdeviceptr dst, unsigned char v, size_t n, CUstream s, const char* op) {
  if (need_ctx() != kSuccess) return kInvalidContext;
  if (!valid_stream(s)) return kInvalidHandle;
  pthread_mutex_lock(&mu);
  struct alloc* a = find(dst, n);
  if (a == NULL) {
    pthread_mutex_unlock(&mu);
    return kInvalidValue;
  }
  order_locked(s, a, op);
  if (v != 0 || a->dirty) {
    memset(a->host + (dst - a->addr), v, n);
    a->dirty = 1;
  }
  pthread_mutex_unlock(&mu);
  return kSuccess;
}

/* May return before the GPU has finished: legacy work pending until a synchronisation. */
EXPORT CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
  return memset_on(dst, v, n, NULL, "cuMemsetD8_v2");
}
EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream s) {
  return memset_on(dst, v, n, s, "cuMemsetD8Async");
}

/* A copy on stream s; `sync` for the synchronous legacy calls. */
static CUresult copy(void* host, CUdeviceptr dev, size_t n, int to_device, CUstream s, int sync,
                     const char* op) {
  if (need_ctx() != kSuccess) return kInvalidContext;
  if (!valid_stream(s)) return kInvalidHandle;
  if (n == 0) return kSuccess;
  if (host == NULL) return kInvalidValue;
  pthread_mutex_lock(&mu);
  struct alloc* a = find(dev, n);
  if (a == NULL) {
    pthread_mutex_unlock(&mu);
    return kInvalidValue;
  }
  if (sync && !to_device) {
    legacy_done_locked(); /* a synchronous device-to-host copy drains the legacy stream */
  } else {
    order_locked(s, a, op);
  }
  char* d = a->host + (dev - a->addr);
  if (to_device) {
    memcpy(d, host, n);
    a->dirty = 1;
  } else {
    memcpy(host, d, n);
  }
  pthread_mutex_unlock(&mu);
  return kSuccess;
}

/* From pageable memory the DMA may still be in flight when cuMemcpyHtoD returns. */
EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
  return copy((void*)src, dst, n, 1, NULL, 1, "cuMemcpyHtoD_v2");
}
EXPORT CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
  return copy(dst, src, n, 0, NULL, 1, "cuMemcpyDtoH_v2");
}

/* "async": done before it returns, but ordered as on a GPU (see the header). */
EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream s) {
  return copy((void*)src, dst, n, 1, s, 0, "cuMemcpyHtoDAsync_v2");
}
EXPORT CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream s) {
  return copy(dst, src, n, 0, s, 0, "cuMemcpyDtoHAsync_v2");
}

EXPORT CUresult cuStreamCreate(CUstream* s, unsigned flags) {
  if (need_ctx() != kSuccess) return kInvalidContext;
  if (s == NULL || (flags & ~1u) != 0) return kInvalidValue;
  *s = calloc(1, sizeof **s);
  if (*s == NULL) return kOutOfMemory;
  (*s)->magic = 0x57;
  (*s)->flags = flags;
  return kSuccess;
}
EXPORT CUresult cuStreamDestroy_v2(CUstream s) {
  if (s == NULL || s->magic != 0x57) return kInvalidHandle;
  /* The real driver finishes a destroyed stream's work in the background; here at once. A
     context is needed for the queued frees: bind the primary one for the duration. */
  CUcontext saved = current;
  if (primary.refs > 0) current = &primary;
  CUresult r = drain(s);
  current = saved;
  s->magic = 0;
  free(s);
  return r;
}
EXPORT CUresult cuStreamSynchronize(CUstream s) {
  if (!valid_stream(s)) return kInvalidHandle;
  if (s == NULL || (s->flags & 1u) == 0) { /* the legacy stream, or one that waits for it */
    pthread_mutex_lock(&mu);
    legacy_done_locked();
    pthread_mutex_unlock(&mu);
  }
  return drain(s);
}

/* Not resolved by demon (its device never uses the legacy stream); tests use it. */
EXPORT CUresult cuCtxSynchronize(void) {
  if (need_ctx() != kSuccess) return kInvalidContext;
  pthread_mutex_lock(&mu);
  legacy_done_locked();
  pthread_mutex_unlock(&mu);
  return kSuccess;
}

EXPORT CUresult cuEventCreate(CUevent* e, unsigned flags) {
  (void)flags;
  if (need_ctx() != kSuccess) return kInvalidContext;
  if (e == NULL) return kInvalidValue;
  *e = calloc(1, sizeof **e);
  if (*e == NULL) return kOutOfMemory;
  (*e)->magic = 0xe7;
  return kSuccess;
}
EXPORT CUresult cuEventRecord(CUevent e, CUstream s) {
  if (e == NULL || e->magic != 0xe7 || !valid_stream(s)) return kInvalidHandle;
  clock_gettime(CLOCK_MONOTONIC, &e->at);
  return kSuccess;
}
EXPORT CUresult cuEventSynchronize(CUevent e) {
  return (e != NULL && e->magic == 0xe7) ? kSuccess : kInvalidHandle;
}
EXPORT CUresult cuEventElapsedTime(float* ms, CUevent a, CUevent b) {
  if (ms == NULL) return kInvalidValue;
  if (a == NULL || b == NULL || a->magic != 0xe7 || b->magic != 0xe7) return kInvalidHandle;
  if (a->at.tv_sec == 0 && a->at.tv_nsec == 0) return kNotReady;
  *ms = (float)((b->at.tv_sec - a->at.tv_sec) * 1e3 + (b->at.tv_nsec - a->at.tv_nsec) / 1e6);
  return kSuccess;
}
EXPORT CUresult cuEventDestroy_v2(CUevent e) {
  if (e == NULL || e->magic != 0xe7) return kInvalidHandle;
  e->magic = 0;
  free(e);
  return kSuccess;
}

EXPORT CUresult cuGetErrorName(CUresult r, const char** s) {
  if (s == NULL) return kInvalidValue;
  switch (r) {
    case kSuccess: *s = "CUDA_SUCCESS"; break;
    case kInvalidValue: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case kOutOfMemory: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case kNotInitialized: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
    case kNoDevice: *s = "CUDA_ERROR_NO_DEVICE"; break;
    case kInvalidDevice: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
    case kInvalidContext: *s = "CUDA_ERROR_INVALID_CONTEXT"; break;
    case kInvalidHandle: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
    case kNotReady: *s = "CUDA_ERROR_NOT_READY"; break;
    default: *s = NULL; return kInvalidValue;
  }
  return kSuccess;
}

EXPORT CUresult cuGetErrorString(CUresult r, const char** s) {
  if (s == NULL) return kInvalidValue;
  switch (r) {
    case kSuccess: *s = "no error"; break;
    case kInvalidValue: *s = "invalid argument"; break;
    case kOutOfMemory: *s = "out of memory"; break;
    case kNotInitialized: *s = "initialization error"; break;
    case kNoDevice: *s = "no CUDA-capable device is detected"; break;
    case kInvalidDevice: *s = "invalid device ordinal"; break;
    case kInvalidContext: *s = "invalid device context"; break;
    case kInvalidHandle: *s = "invalid resource handle"; break;
    case kNotReady: *s = "device not ready"; break;
    default: *s = NULL; return kInvalidValue;
  }
  return kSuccess;
}

/* Test introspection (not a driver entry point): stream-ordered calls since cuInit. */
EXPORT void demon_fake_cuda_async_calls(long* allocs_out, long* frees_out) {
  pthread_mutex_lock(&mu);
  if (allocs_out != NULL) *allocs_out = async_allocs;
  if (frees_out != NULL) *frees_out = async_frees;
  pthread_mutex_unlock(&mu);
}

/* Test introspection (not a driver entry point): stream-ordering hazards since cuInit. */
EXPORT long demon_fake_cuda_hazards(void) {
  pthread_mutex_lock(&mu);
  long n = hazards;
  pthread_mutex_unlock(&mu);
  return n;
}

/* Test introspection (not a driver entry point): live device allocations and bytes. */
EXPORT int demon_fake_cuda_live(unsigned long long* bytes) {
  int n = 0;
  pthread_mutex_lock(&mu);
  for (struct alloc* a = allocs; a != NULL; a = a->next) n++;
  if (bytes != NULL) *bytes = used_bytes;
  pthread_mutex_unlock(&mu);
  return n;
}

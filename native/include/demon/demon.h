/*
 * demon.h — the C API of demon's native shim. The only header cgo sees.
 *
 * Conventions (apply to every function below unless its comment says otherwise):
 *  - Handles are opaque pointers. A function that creates one writes it to `*out` only on
 *    success; on error `*out` is left untouched and nothing was allocated.
 *  - Functions that can fail return a dm_status (DM_OK == 0) and fill the caller-owned
 *    `dm_error` with the same code and a NUL-terminated message. `err` may be NULL when the
 *    caller does not want the message. No exception ever crosses this boundary: C++
 *    exceptions, including std::bad_alloc, are mapped to status codes. Every function is
 *    declared DM_NOEXCEPT (noexcept when compiled as C++), so a C++ caller's compiler knows
 *    it, and native/tests/capi_test.cc checks every declaration at compile time. The few
 *    functions that return a value instead of a dm_status return their documented
 *    "nothing" value (0, -1 or NULL) should the shim fail inside them.
 *  - dm_X_free(dm_X** h) takes the address of the caller's handle variable: it frees the
 *    handle `*h` holds and sets `*h = NULL`. It is NULL-safe (h == NULL or *h == NULL: a
 *    no-op) and idempotent (freeing the same variable again finds NULL and does nothing),
 *    and it never fails. It clears only the variable it is given: a handle is a plain
 *    pointer, so freeing through another copy of it afterwards is a double free the shim
 *    cannot detect. Keep each handle in one variable (the Go binding keeps it in the
 *    handle's struct and frees it under that struct's lock). Thread rule for every free:
 *    no other thread may be using the handle, or freeing the same variable, during it.
 *  - Pointers to caller memory (strings, byte ranges) are only read or written during the
 *    call; the shim never keeps them.
 *  - Thread rules: a dm_device and its ledger are safe to use from several threads; a
 *    dm_buffer must not be freed while another thread reads or writes it; a dm_faults
 *    registry is safe to use from several threads.
 *
 * Each function's comment ends with three lines that apply these rules to it:
 *   Owns:    what the caller owns on success and on error (a new handle to free, or only
 *            its own memory, written by the call).
 *   NULL:    which pointer arguments may be NULL, and what a NULL does.
 *   Threads: with which other calls it may run concurrently.
 */
#ifndef DEMON_DEMON_H_
#define DEMON_DEMON_H_

#include <stddef.h>
#include <stdint.h>

/* The exception barrier, in the type system: C++ callers see every function as noexcept. */
#ifdef __cplusplus
#define DM_NOEXCEPT noexcept
#else
#define DM_NOEXCEPT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. Stable: the Go binding and logs rely on the numbers. */
typedef enum dm_status {
  DM_OK = 0,
  DM_ERR_INVALID_ARGUMENT = 1, /* NULL out-pointer, zero size, malformed spec, ... */
  DM_ERR_OUT_OF_MEMORY = 2,    /* device capacity or host memory exhausted */
  DM_ERR_NOT_FOUND = 3,        /* unknown name (fault point, tensor, file) */
  DM_ERR_CORRUPT = 4,          /* a file or payload failed validation */
  DM_ERR_MISMATCH = 5,         /* valid, but for another component/backend/version/profile */
  DM_ERR_UNSUPPORTED = 6,      /* a feature this build lacks (e.g. TensorRT) */
  DM_ERR_FAULT_INJECTED = 7,   /* an armed fault point fired */
  DM_ERR_STATE = 8,            /* the call is not valid in the object's current state */
  DM_ERR_CUDA = 9,             /* the CUDA driver reported an error */
  DM_ERR_INTERNAL = 10         /* a bug: an unexpected exception inside the shim */
} dm_status;

#define DM_ERROR_MSG_LEN 512

/* Caller-owned error report. The shim writes `code` and a NUL-terminated `msg`. */
typedef struct dm_error {
  int code;
  char msg[DM_ERROR_MSG_LEN];
} dm_error;

/* Library version, e.g. "0.1.0".
 *   Owns: nothing to free: the string is static storage. Cannot fail.
 *   NULL: takes no pointer; never returns NULL.
 *   Threads: any thread, any time. */
const char* dm_version(void) DM_NOEXCEPT;

/* ---------------------------------------------------------------------------------------
 * Fault points: a registry of named points where the shim (and Go, through the same
 * registry) can be told to fail. Every point is declared once in
 * native/src/faults/points.def and documented in docs/faultpoints.md.
 *
 * Spec grammar:  point=action[@N] {, point=action[@N]}
 *   action: "error" (fail with DM_ERR_FAULT_INJECTED), "oom" (fail with
 *   DM_ERR_OUT_OF_MEMORY), "hang" (block the caller until the registry is re-armed or
 *   reset, at most 10 minutes: a stuck call for watchdog tests), or "off" (disarm). Without @N the
 * point fires on every hit; with @N (N >= 1) only on the Nth hit. An empty spec arms nothing.
 * ------------------------------------------------------------------------------------- */
typedef struct dm_faults dm_faults;

/* Creates a registry armed with `spec` (NULL or "" = nothing armed); a malformed spec or an
 * undeclared point is an error. Devices created with it share the registry: freeing the
 * handle first is safe (see dm_faults_free).
 *   Owns: on success the caller owns *out and frees it with dm_faults_free; on error *out
 *         is untouched and nothing was allocated.
 *   NULL: spec may be NULL (nothing armed); out must not be (DM_ERR_INVALID_ARGUMENT).
 *   Threads: any thread. */
int dm_faults_create(const char* spec, dm_faults** out, dm_error* err) DM_NOEXCEPT;

/* Frees the registry handle in *faults and sets *faults = NULL. Devices created with the
 * registry keep their own reference to it, so they stay valid; because nobody could re-arm
 * it any more, the free disarms every point and releases hits hung on it (those devices
 * keep counting hits, but nothing fires any more).
 *   Owns: the handle is gone; nothing else to free. Cannot fail.
 *   NULL: faults == NULL or *faults == NULL is a no-op, so a second free of the same
 *         variable does nothing.
 *   Threads: not concurrently with any other call on the same handle. */
void dm_faults_free(dm_faults** faults) DM_NOEXCEPT;

/* Arms (or disarms, with "off") the points named in `spec`. Validates the whole spec
 * first: on error nothing changes. Hit counters are not reset. Releases hits hung on the
 * registry (a re-arm is what a "hang" waits for).
 *   Owns: nothing to free, on success or error.
 *   NULL: faults must not be NULL (DM_ERR_INVALID_ARGUMENT); spec NULL is "" (arms nothing).
 *   Threads: safe concurrently with every call on the registry except its free. */
int dm_faults_arm(dm_faults* faults, const char* spec, dm_error* err) DM_NOEXCEPT;

/* Disarms every point, resets every hit counter to zero and releases hung hits.
 *   Owns: nothing to free. Cannot fail.
 *   NULL: faults NULL is a no-op.
 *   Threads: safe concurrently with every call on the registry except its free. */
void dm_faults_reset(dm_faults* faults) DM_NOEXCEPT;

/* Records one hit of `point`. Returns DM_OK when the point does not fire, its injected
 * status when it does (message names the point and the hit), DM_ERR_NOT_FOUND for an
 * undeclared point. A "hang" point blocks the calling thread until the registry is re-armed,
 * reset or freed, at most 10 minutes. Used by Go-side points; native points call the
 * registry directly.
 *   Owns: nothing to free, on success or error.
 *   NULL: faults and point must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the registry except its free. */
int dm_faults_hit(dm_faults* faults, const char* point, dm_error* err) DM_NOEXCEPT;

/* The arming of `point`: writes its action (0 off, 1 error, 2 oom, 3 hang) and N (0 = every
 * hit). Lets the Go twin of the registry mirror the arming of Go-side points, so hitting
 * them costs no cgo call. Returns DM_ERR_NOT_FOUND for an undeclared point.
 *   Owns: writes *action and *nth (caller memory) on success only; nothing to free.
 *   NULL: no argument but err may be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the registry except its free. */
int dm_faults_arming(const dm_faults* faults, const char* point, int* action, int64_t* nth,
                     dm_error* err) DM_NOEXCEPT;

/* Hits recorded for `point` (native and through dm_faults_hit) since creation or the last
 * reset; -1 for an undeclared point, or if the shim fails inside.
 *   Owns: nothing to free.
 *   NULL: faults or point NULL returns -1.
 *   Threads: safe concurrently with every call on the registry except its free. */
int64_t dm_faults_hits(const dm_faults* faults, const char* point) DM_NOEXCEPT;

/* The number of declared points; dm_faults_point_name(0..count-1) lists them in declaration
 * order.
 *   Owns: nothing to free. Cannot fail.
 *   NULL: takes no pointer.
 *   Threads: any thread, any time. */
int dm_faults_point_count(void) DM_NOEXCEPT;

/* The name of declared point `index`.
 *   Owns: nothing to free: the string is static storage.
 *   NULL: takes no pointer; returns NULL for an index outside 0..dm_faults_point_count()-1.
 *   Threads: any thread, any time. */
const char* dm_faults_point_name(int index) DM_NOEXCEPT;

/* ---------------------------------------------------------------------------------------
 * Devices and the ledger.
 *
 * A device is where engines, contexts, streams and buffers live. Every byte allocated on
 * it and every handle created on it is recorded in its ledger, in total, per handle kind
 * and per owner tag (a caller-chosen label such as "session:ab12" or "model:decoder").
 * ------------------------------------------------------------------------------------- */
typedef struct dm_device dm_device;

typedef enum dm_device_kind {
  DM_DEVICE_HOST = 0, /* host memory with a configured capacity, accounted like a GPU */
  DM_DEVICE_CUDA = 1  /* an NVIDIA GPU through the CUDA driver API (loaded at run time) */
} dm_device_kind;

typedef struct dm_device_options {
  int kind;                /* a dm_device_kind */
  uint64_t capacity_bytes; /* host device: bytes it may hand out (> 0). Ignored by cuda,
                              whose capacity is the GPU's total memory (cuMemGetInfo). */
  int ordinal;             /* cuda: device index */
  dm_faults* faults;       /* optional; the device keeps its own reference to the registry,
                              so the handle may be freed before the device */
} dm_device_options;

/* Creates a device. The host device reserves address space lazily: allocations of 1 MiB
 * and more are anonymous mappings that commit RAM only when touched, so a capacity larger
 * than free RAM is fine for accounting tests. On success the caller owns *out.
 * The cuda device loads the CUDA driver API at run time: dlopen("libcuda.so.1"), or the
 * path in $DEMON_CUDA_LIBRARY (tests point it at a fake driver). Without a driver it fails
 * with DM_ERR_CUDA and "no CUDA driver (libcuda.so.1 not found: <reason>)"; any other
 * driver failure is DM_ERR_CUDA with the driver's error name and string, and an ordinal
 * the driver does not see is DM_ERR_INVALID_ARGUMENT. It retains the GPU's primary context
 * until dm_device_free (and every object on it) is gone. Buffers on a cuda device are GPU
 * memory: read and write them with dm_buffer_read/dm_buffer_write. A driver refusal to
 * allocate (CUDA_ERROR_OUT_OF_MEMORY) is DM_ERR_OUT_OF_MEMORY, like a ledger refusal.
 * Fault point: device.create, before the driver is loaded.
 *   Owns: on success the caller owns *out and frees it with dm_device_free; on error *out is
 *         untouched and nothing was allocated.
 *   NULL: opts and out must not be NULL (DM_ERR_INVALID_ARGUMENT); opts->faults may be.
 *   Threads: any thread. */
int dm_device_create(const dm_device_options* opts, dm_device** out, dm_error* err) DM_NOEXCEPT;

/* Frees the device handle in *device and sets *device = NULL. Objects still alive on it
 * (buffers, engines, contexts, streams) keep the device's internals alive until they are
 * freed (their bytes stay on the ledger: a leak a test can see).
 *   Owns: the handle is gone; objects created on it are still the caller's to free.
 *         Cannot fail.
 *   NULL: device == NULL or *device == NULL is a no-op, so a second free of the same
 *         variable does nothing.
 *   Threads: not concurrently with any other call on the same handle (calls on objects
 *            created on it may go on). */
void dm_device_free(dm_device** device) DM_NOEXCEPT;

/* Writes a one-line human description, e.g. "host device (capacity 24.00 GiB)", truncated
 * to len-1 bytes and NUL-terminated.
 *   Owns: writes buf (caller memory) on success only; nothing to free.
 *   NULL: device and buf must not be NULL, and len must be > 0 (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the device except its free. */
int dm_device_describe(const dm_device* device, char* buf, size_t len, dm_error* err) DM_NOEXCEPT;

typedef struct dm_ledger_totals {
  uint64_t capacity_bytes; /* what the device may hand out */
  uint64_t used_bytes;     /* bytes in use now (exact requested sizes) */
  uint64_t peak_bytes;     /* high-water mark of used_bytes since creation/reset_peak */
  uint64_t allocations;    /* successful allocations, cumulative */
  uint64_t frees;          /* frees, cumulative */
  uint64_t failed;         /* refused allocations (out of memory, injected, or failed in the
                              device after the ledger admitted them) */
  int64_t live_handles;    /* live handles of every kind on this device */
} dm_ledger_totals;

typedef struct dm_ledger_entry {
  char name[96];        /* handle kind ("buffer", "engine", ...) or owner tag */
  uint64_t used_bytes;  /* bytes in use attributed to it */
  uint64_t peak_bytes;  /* its high-water mark */
  int64_t live_handles; /* live handles attributed to it */
} dm_ledger_entry;

/* Writes the device ledger's totals: one consistent snapshot, taken under the ledger's lock.
 * A refused allocation (by the ledger, a fault point or the device itself after the ledger
 * admitted it) moves only `failed`: used, peak, allocations and frees stay as they were.
 *   Owns: writes *out (caller memory) on success only; nothing to free.
 *   NULL: device and out must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the device except its free. */
int dm_ledger_totals_get(const dm_device* device, dm_ledger_totals* out, dm_error* err) DM_NOEXCEPT;

/* Copies up to `cap` per-handle-kind entries, sorted by name, into `entries` and writes the
 * total number of entries into *count (which may exceed cap: call again with a bigger
 * array). Entries whose bytes and handles are both back to zero are omitted.
 *   Owns: writes entries[0..min(cap,*count)-1] and *count (caller memory) on success only;
 *         nothing to free.
 *   NULL: device and count must not be NULL; entries may be NULL only when cap <= 0 (to
 *         ask for the count) (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the device except its free. */
int dm_ledger_by_kind(const dm_device* device, dm_ledger_entry* entries, int cap, int* count,
                      dm_error* err) DM_NOEXCEPT;

/* dm_ledger_by_kind, per owner tag instead of per handle kind.
 *   Owns: writes entries[0..min(cap,*count)-1] and *count (caller memory) on success only;
 *         nothing to free.
 *   NULL: device and count must not be NULL; entries may be NULL only when cap <= 0 (to
 *         ask for the count) (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the device except its free. */
int dm_ledger_by_owner(const dm_device* device, dm_ledger_entry* entries, int cap, int* count,
                       dm_error* err) DM_NOEXCEPT;

/* Resets peak_bytes (totals and entries) to the current use.
 *   Owns: nothing to free. Cannot fail.
 *   NULL: device NULL is a no-op.
 *   Threads: safe concurrently with every call on the device except its free. */
void dm_ledger_reset_peak(dm_device* device) DM_NOEXCEPT;

/* The driver's view of the device's memory, for cross-checking the ledger.
 * cuda: cuMemGetInfo for the device's GPU. Free memory counts every process and the CUDA
 * context itself, and the driver returns freed memory asynchronously: compare against a
 * baseline taken after a warm-up, with a tolerance, after a settle (the Go binding's
 * trt.WaitDriverMemory polls). host: *free_bytes = capacity − used and *total_bytes =
 * capacity, from the ledger.
 *   Owns: writes *free_bytes and *total_bytes (caller memory) on success only; nothing to
 *         free.
 *   NULL: device, free_bytes and total_bytes must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the device except its free. */
int dm_device_driver_memory(const dm_device* device, uint64_t* free_bytes, uint64_t* total_bytes,
                            dm_error* err) DM_NOEXCEPT;

/* Host staging memory. On a device the CPU cannot address (cuda), the CPU reference
 * engines and streams compute on host shadows of their device memory: pinned host memory
 * from the driver (cuMemAllocHost). Staging is host memory, so it is NOT counted against
 * the device capacity: each staging block is one live handle of kind "staging" on the
 * device ledger (attributed to its owner tag, so dm_ledger_by_owner and leak checks on
 * live_handles see it) while its bytes are accounted on a separate staging ledger whose
 * totals this returns (capacity_bytes = UINT64_MAX: no limit of its own; a refused pinned
 * allocation fails in the driver). The host device never stages: all zero.
 *   Owns: writes *out (caller memory) on success only; nothing to free.
 *   NULL: device and out must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the device except its free. */
int dm_device_staging_totals(const dm_device* device, dm_ledger_totals* out,
                             dm_error* err) DM_NOEXCEPT;

/* What dm_device_time_copies measured. GB/s = bytes·iterations / ms / 1e6. */
typedef struct dm_copy_timing {
  uint64_t bytes; /* bytes per copy */
  int iterations; /* copies each way */
  double h2d_ms;  /* total for the host-to-device copies */
  double d2h_ms;  /* total for the device-to-host copies */
} dm_copy_timing;

/* Measures copy throughput: allocates `bytes` (> 0) of device memory for `owner` (through
 * the ledger; fault point device.alloc) and as much staging memory, runs `iterations`
 * (1..10000) host-to-device copies then as many device-to-host copies (cuda: async on a
 * private stream from pinned memory, timed with events; host: memcpy, wall clock), and
 * frees both before returning, on success and on error. For the GPU check; not for the hot
 * path.
 *   Owns: writes *out (caller memory) on success only; nothing stays allocated and there is
 *         nothing to free, on success or error.
 *   NULL: device, owner and out must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: like any allocation, safe concurrently with every call on the device except
 *            its free. */
int dm_device_time_copies(dm_device* device, uint64_t bytes, int iterations, const char* owner,
                          dm_copy_timing* out, dm_error* err) DM_NOEXCEPT;

/* ---------------------------------------------------------------------------------------
 * Device buffers.
 * ------------------------------------------------------------------------------------- */
typedef struct dm_buffer dm_buffer;

/* Allocates `bytes` (> 0) of zero-filled device memory owned by `owner` (non-empty, at
 * most 95 bytes, no control characters). Fails with DM_ERR_OUT_OF_MEMORY when `bytes`
 * exceeds the free capacity; the message names the bytes requested and the bytes free.
 * The buffer's bytes and one "buffer" handle are on the ledger until it is freed.
 * Fault point: device.alloc.
 *   Owns: on success the caller owns *out and frees it with dm_buffer_free; on error *out
 *         is untouched, nothing was allocated and the ledger counts one failure only.
 *   NULL: device, owner and out must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the device except its free. */
int dm_buffer_alloc(dm_device* device, uint64_t bytes, const char* owner, dm_buffer** out,
                    dm_error* err) DM_NOEXCEPT;

/* Frees the buffer in *buffer (its memory and its ledger entry) and sets *buffer = NULL.
 * A context the buffer is bound to must not execute afterwards (rebind the tensor first).
 *   Owns: the handle and its memory are gone. Cannot fail.
 *   NULL: buffer == NULL or *buffer == NULL is a no-op, so a second free of the same
 *         variable does nothing.
 *   Threads: not concurrently with any other call using the buffer (reads, writes, an
 *            execute of a context it is bound to). */
void dm_buffer_free(dm_buffer** buffer) DM_NOEXCEPT;

/* The buffer's size in bytes, as allocated.
 *   Owns: nothing to free. Cannot fail.
 *   NULL: buffer NULL returns 0.
 *   Threads: safe concurrently with every call on the buffer except its free. */
uint64_t dm_buffer_size(const dm_buffer* buffer) DM_NOEXCEPT;

/* Copies n bytes from host memory into the buffer at `offset` (host-to-device). An offset
 * or size past the end is DM_ERR_INVALID_ARGUMENT and copies nothing.
 *   Owns: reads src (caller memory) during the call only; nothing to free.
 *   NULL: buffer must not be NULL; src may be NULL only when n == 0
 *         (DM_ERR_INVALID_ARGUMENT).
 *   Threads: not concurrently with the buffer's free; concurrent copies of overlapping
 *            ranges are the caller's data race, as with any memory. */
int dm_buffer_write(dm_buffer* buffer, uint64_t offset, const void* src, uint64_t n,
                    dm_error* err) DM_NOEXCEPT;

/* Copies n bytes from the buffer at `offset` into host memory (device-to-host). An offset
 * or size past the end is DM_ERR_INVALID_ARGUMENT and copies nothing.
 *   Owns: writes dst (caller memory); after a driver failure its contents are
 *         unspecified. Nothing to free.
 *   NULL: buffer must not be NULL; dst may be NULL only when n == 0
 *         (DM_ERR_INVALID_ARGUMENT).
 *   Threads: not concurrently with the buffer's free; concurrent copies of overlapping
 *            ranges are the caller's data race, as with any memory. */
int dm_buffer_read(const dm_buffer* buffer, uint64_t offset, void* dst, uint64_t n,
                   dm_error* err) DM_NOEXCEPT;

/* ---------------------------------------------------------------------------------------
 * Engines and execution contexts (the shape of TensorRT's API, kept by every backend).
 *
 * An engine holds what is loaded once and shared: its weights, resident on the device in a
 * block of its declared footprint. A context is one user's activation memory (allocated
 * through the ledger when it is created, so out-of-memory is a clean error before any state
 * exists) plus shapes and bindings. A context keeps its engine's internals alive; free
 * contexts first so the ledger drops the engine when its handle is freed.
 * Thread rules: an engine may be shared by contexts on different threads; one context must
 * be used by one thread at a time.
 * ------------------------------------------------------------------------------------- */
typedef struct dm_engine dm_engine;
typedef struct dm_context dm_context;

typedef enum dm_dtype {
  DM_DTYPE_FLOAT32 = 0,
  DM_DTYPE_BFLOAT16 = 1,
  DM_DTYPE_FLOAT16 = 2,
  DM_DTYPE_INT32 = 3
} dm_dtype;

#define DM_MAX_RANK 8
#define DM_TENSOR_NAME_LEN 64
#define DM_DIM_SYMBOL_LEN 8

/* One engine input or output with its optimisation profile (min/opt/max per dimension) and
 * the symbol of each dimension: "B" (batch), "T" (latent frames), "L" (conditioning tokens),
 * "S" (audio samples) for a dynamic dimension, "" for a static one. Input dimensions that
 * share a symbol must be set to equal values: dm_context_execute refuses otherwise, naming
 * both tensors. A buffer bound to a tensor holds its elements in `dtype` (a bfloat16 tensor
 * takes 2 bytes per element, raw bf16 bits, little-endian). */
typedef struct dm_tensor_desc {
  char name[DM_TENSOR_NAME_LEN];
  int is_input;
  int dtype; /* a dm_dtype */
  int rank;
  int64_t min[DM_MAX_RANK];
  int64_t opt[DM_MAX_RANK];
  int64_t max[DM_MAX_RANK];
  char symbol[DM_MAX_RANK][DM_DIM_SYMBOL_LEN];
} dm_tensor_desc;

/* What dm_engine_load is told, from the engine's validated metadata sidecar. */
typedef struct dm_engine_options {
  const char* path;            /* engine file */
  const char* component;       /* expected: decoder, vae_encode, vae_decode,
                                  vae_decode_windowed, text_encoder, stem_separator */
  const char* backend;         /* "cpu-ref" or "tensorrt" */
  const char* backend_version; /* expected backend version, e.g. "cpu-ref-1" */
  const char* owner;           /* ledger owner tag for the resident memory */
  uint64_t footprint_bytes;    /* declared resident bytes (0 = what the weights need) */
  uint64_t context_bytes;      /* declared activation bytes per context (0 = as needed) */
} dm_engine_options;

/* Loads an engine. Validates the file (container, checksum, component, backend, version)
 * before allocating. DM_ERR_UNSUPPORTED for a TensorRT engine: that backend is a seam no
 * build implements yet (native/src/engine/engine.h, "The TensorRT seam").
 * An unknown component is DM_ERR_INVALID_ARGUMENT, checked before any fault point.
 * Fault points: model.load.<component> first; model.place_decoder once the decoder's
 * weights are resident.
 *   Owns: on success the caller owns *out and frees it with dm_engine_free; on error *out
 *         is untouched and nothing stays allocated.
 *   NULL: device, opts and out must not be NULL, nor any string in opts
 *         (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the device except its free. */
int dm_engine_load(dm_device* device, const dm_engine_options* opts, dm_engine** out,
                   dm_error* err) DM_NOEXCEPT;

/* Frees the engine handle in *engine and sets *engine = NULL. Contexts and streams made
 * from it keep its internals (and its resident memory on the ledger) alive until they are
 * freed: free them first.
 *   Owns: the handle is gone; contexts made from it are still the caller's to free.
 *         Cannot fail.
 *   NULL: engine == NULL or *engine == NULL is a no-op, so a second free of the same
 *         variable does nothing.
 *   Threads: not concurrently with any other call on the same handle (calls on its
 *            contexts may go on). */
void dm_engine_free(dm_engine** engine) DM_NOEXCEPT;

/* Number of inputs and outputs.
 *   Owns: nothing to free. Returns 0 if the shim fails inside.
 *   NULL: engine NULL returns 0.
 *   Threads: safe concurrently with every call on the engine except its free. */
int dm_engine_io_count(const dm_engine* engine) DM_NOEXCEPT;

/* Describes input or output `index` (0..dm_engine_io_count()-1) with its profile and the
 * symbol of each dimension. DM_ERR_INVALID_ARGUMENT for an index out of range;
 * DM_ERR_INTERNAL if the engine's description does not fit the struct.
 *   Owns: writes *out (caller memory) on success only; nothing to free.
 *   NULL: engine and out must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the engine except its free. */
int dm_engine_io(const dm_engine* engine, int index, dm_tensor_desc* out,
                 dm_error* err) DM_NOEXCEPT;

/* Reads the I/O table the engine file at opts->path would have once loaded, from the file's
 * header alone, with no device: it checks what dm_engine_load checks before allocating
 * (component, backend, version, container framing; not the payload checksum, which the load
 * verifies) and allocates nothing on any ledger; no fault point. opts->owner and the
 * footprints are ignored. Writes up to `cap` descriptions into `out` and the number of tensors
 * into *count (which may exceed cap: call again with more room).
 *   Owns: writes out[0..min(cap,*count)) and *count (caller memory); nothing to free.
 *   NULL: opts, opts->path and count must not be NULL (DM_ERR_INVALID_ARGUMENT); out may be
 *         NULL when cap is 0, to ask for the count.
 *   Threads: any thread; reads the file only. */
int dm_engine_inspect(const dm_engine_options* opts, dm_tensor_desc* out, int cap, int* count,
                      dm_error* err) DM_NOEXCEPT;

/* Activation bytes one context allocates.
 *   Owns: nothing to free. Returns 0 if the shim fails inside.
 *   NULL: engine NULL returns 0.
 *   Threads: safe concurrently with every call on the engine except its free. */
uint64_t dm_engine_context_bytes(const dm_engine* engine) DM_NOEXCEPT;

/* Creates a context; its activation memory is allocated now, through the ledger, and
 * accounted to `owner` (rules of dm_buffer_alloc). Fault point: session.init.context.
 *   Owns: on success the caller owns *out and frees it with dm_context_free; on error *out
 *         is untouched and nothing was allocated.
 *   NULL: engine, owner and out must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: safe concurrently with every call on the engine except its free. */
int dm_context_create(dm_engine* engine, const char* owner, dm_context** out,
                      dm_error* err) DM_NOEXCEPT;

/* Frees the context in *context (its activation memory, unless a stream still uses it) and
 * sets *context = NULL. Bound buffers are borrowed: they are not freed.
 *   Owns: the handle is gone; its bound buffers are still the caller's. Cannot fail.
 *   NULL: context == NULL or *context == NULL is a no-op, so a second free of the same
 *         variable does nothing.
 *   Threads: not concurrently with any other call on the same context. */
void dm_context_free(dm_context** context) DM_NOEXCEPT;

/* Sets an input's shape; each dimension must lie in the engine's profile.
 *   Owns: reads dims during the call only; nothing to free.
 *   NULL: context, name and dims must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: one thread at a time per context. */
int dm_context_set_shape(dm_context* context, const char* name, const int64_t* dims, int rank,
                         dm_error* err) DM_NOEXCEPT;

/* Binds a tensor to a device buffer.
 *   Owns: the buffer stays the caller's (borrowed: it must outlive every execute using it,
 *         or be rebound first); nothing to free. On error the tensor's binding is unchanged
 *         or cleared.
 *   NULL: context, name and buffer must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: one thread at a time per context. */
int dm_context_bind(dm_context* context, const char* name, dm_buffer* buffer,
                    dm_error* err) DM_NOEXCEPT;

/* Runs the engine synchronously. Fails with the tensor named if a shape is unset, a binding
 * is missing or too small, or shapes disagree.
 *   Owns: writes the bound output buffers (still the caller's); nothing to free. On error
 *         their contents are unspecified.
 *   NULL: context must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: one thread at a time per context; no bound buffer may be freed meanwhile. */
int dm_context_execute(dm_context* context, dm_error* err) DM_NOEXCEPT;

/* Writes a tensor's current shape (inputs: as set; outputs: as inferred by the last
 * execute) into dims[DM_MAX_RANK] and its rank into *rank (0 if unset).
 *   Owns: writes dims and *rank (caller memory) on success only; nothing to free.
 *   NULL: context, name, dims and rank must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: one thread at a time per context. */
int dm_context_shape(const dm_context* context, const char* name, int64_t* dims, int* rank,
                     dm_error* err) DM_NOEXCEPT;

/* A text prompt for the reference tokenizer (DEMON's prompt template, spec/engine.md §2.6).
 * NULL fields take the template's defaults ("N/A"; instrumental lyrics). */
typedef struct dm_prompt {
  const char* tags;
  const char* bpm;
  const char* time_signature;
  const char* key;
  const char* duration;
} dm_prompt;

/* Tokenizes a prompt into ids[cap] (cap >= 512) for the text_encoder engine's token_ids
 * input; writes the sequence length L (32..512, zero-padded) into *len. `negative` selects
 * the unconditional prompt (empty tags).
 *   Owns: writes ids and *len (caller memory); on error *len is untouched and ids are
 *         unspecified. Nothing to free.
 *   NULL: prompt, ids and len must not be NULL (DM_ERR_INVALID_ARGUMENT); prompt's fields
 *         may be.
 *   Threads: any thread, any time (no shared state). */
int dm_prompt_tokenize(const dm_prompt* prompt, int negative, int32_t* ids, int cap, int* len,
                       dm_error* err) DM_NOEXCEPT;

/* Validates an engine file held in memory (container, version, checksum) without loading
 * it. For tools and the fuzz target of the parser.
 *   Owns: reads data during the call only; nothing to free.
 *   NULL: data may be NULL only when size == 0 (DM_ERR_INVALID_ARGUMENT; an empty file is
 *         then DM_ERR_CORRUPT).
 *   Threads: any thread, any time (no shared state). */
int dm_engine_file_check(const void* data, size_t size, dm_error* err) DM_NOEXCEPT;

/* Writes a reference (cpu-ref) engine file: the model repository builder uses it. */
typedef struct dm_reference_options {
  const char* component;
  const char* variant;      /* decoder: "tiny-dit" or "oracle"; ignored otherwise */
  uint64_t seed;            /* deterministic weights/embeddings (< 2^63) */
  int duration_s;           /* profile: longest source in seconds, 1..240 */
  const char* io_precision; /* NULL or "fp32": float32 I/O. "mixed" (decoder only): DEMON's
                               2B layout, bfloat16 hidden_states, encoder_hidden_states,
                               context_latents and velocity, float32 timestep */
} dm_reference_options;

/* Writes the reference engine `opts` describes to `path`, through a temporary file
 * renamed into place.
 *   Owns: the file is the caller's; nothing to free. On error `path` is untouched and the
 *         temporary is removed.
 *   NULL: opts, opts->component and path must not be NULL (DM_ERR_INVALID_ARGUMENT);
 *         opts->variant may be ("").
 *   Threads: any thread; concurrent writes to the same path are the caller's race. */
int dm_reference_engine_write(const dm_reference_options* opts, const char* path,
                              dm_error* err) DM_NOEXCEPT;

/* ---------------------------------------------------------------------------------------
 * Streams: a live session's ring buffer of in-flight generations, its source and
 * conditioning, and the looping playback buffer its slices patch (spec/engine.md §4).
 * Everything is allocated at creation, accounted to the stream's owner tag; dm_stream_tick,
 * the one call per tick, allocates nothing. Thread rules: one thread at a time per stream.
 * ------------------------------------------------------------------------------------- */
typedef struct dm_stream dm_stream;

typedef struct dm_stream_options {
  int frames;       /* T: latent frames of the source, within the decoder's profile */
  int max_depth;    /* ring capacity, 1..decoder max batch (depth can change up to it) */
  int depth;        /* initial depth */
  int steps;        /* denoising steps (fixed for the stream's life) */
  float shift;      /* timestep shift */
  int max_cond_len; /* longest conditioning sequence accepted, 32..512 */
  float vae_window; /* kept slice in seconds, clamped to [0.04, 0.36] */
  float lead_s;     /* decode this far ahead of the playhead, seconds */
  int max_prompts;  /* 0 or 1: prompt A/B as the tick's scalar lerp; 2: per-frame A/B weights
                       too (dm_stream_set_blend_curve), two decoder rows per slot, so
                       2·max_depth must fit the decoder's max batch */
} dm_stream_options;

typedef enum dm_condition_slot {
  DM_COND_PROMPT_A = 0,
  DM_COND_PROMPT_B = 1,
  DM_COND_NEGATIVE = 2
} dm_condition_slot;

/* Knobs for one tick; read during the call only. */
typedef struct dm_tick_params {
  int submit; /* submit a new request this tick (1) or only advance (0) */
  int64_t seed;
  float denoise;
  float prompt_blend;  /* 0 = prompt A .. 1 = prompt B */
  float hint_strength; /* context latents = hint · semantic hints */
  float guidance;      /* CFG scale, used when rcfg_mode != 0 */
  int rcfg_mode;       /* 0 off, 1 full, 2 initialize, 3 self */
  float cfg_rescale;
  float velocity_scale;
  float shift;
  int depth;
  double playhead_s; /* the client's playback position, seconds */
  int decode;        /* decode an emitted latent into a slice */
  int channel_gain_active;
  float channel_gain[64];
} dm_tick_params;

typedef struct dm_tick_result {
  int emitted;          /* a latent finished this tick */
  int decoded;          /* ... and was decoded into the slice */
  int64_t start_sample; /* slice position (frame index) in the playback buffer */
  int num_samples;      /* frames in the slice; the slice holds 2× floats (stereo) */
  float tick_ms;
  float dec_ms;
  float engine_ms;   /* of tick_ms, time inside decoder engine execution */
  float vae_ms;      /* of dec_ms, time inside the windowed VAE engine */
  uint32_t num_gens; /* latents finished since the stream was created */
  int active;        /* slots advanced */
  int decoder_calls; /* 0, 1 or 2 (CFG) */
  int depth;
} dm_tick_result;

/* Creates a stream that runs the decoder through `decoder_ctx` (whose activation memory it
 * uses; the memory stays alive while the stream lives) and decodes with the windowed VAE
 * engine. Memory is accounted to `owner`.
 *   Owns: on success the caller owns *out and frees it with dm_stream_free; the context and
 *         engine stay the caller's (the stream keeps what it needs of them alive). On error
 *         *out is untouched and nothing was allocated.
 *   NULL: decoder_ctx, window_vae, owner, opts and out must not be NULL
 *         (DM_ERR_INVALID_ARGUMENT).
 *   Threads: one thread at a time per decoder_ctx; window_vae may be shared. */
int dm_stream_create(dm_context* decoder_ctx, dm_engine* window_vae, const char* owner,
                     const dm_stream_options* opts, dm_stream** out, dm_error* err) DM_NOEXCEPT;

/* Frees the stream in *stream (everything it allocated) and sets *stream = NULL.
 *   Owns: the handle and its memory are gone; the decoder context and VAE engine it was
 *         created with are still the caller's to free. Cannot fail.
 *   NULL: stream == NULL or *stream == NULL is a no-op, so a second free of the same
 *         variable does nothing.
 *   Threads: not concurrently with any other call on the same stream. */
void dm_stream_free(dm_stream** stream) DM_NOEXCEPT;

/* Bytes the stream allocated (buffers and pipeline).
 *   Owns: nothing to free. Returns 0 if the shim fails inside.
 *   NULL: stream NULL returns 0.
 *   Threads: one thread at a time per stream. */
uint64_t dm_stream_bytes(const dm_stream* stream) DM_NOEXCEPT;

/* Sets the source from VAE-encode moments [1,128,T] in a device buffer (copied).
 *   Owns: the buffer stays the caller's (read during the call only); nothing to free.
 *   NULL: stream and moments must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: one thread at a time per stream; moments must not be freed meanwhile. */
int dm_stream_set_source(dm_stream* stream, const dm_buffer* moments, int frames,
                         dm_error* err) DM_NOEXCEPT;

/* Copies conditioning [1,len,2048] from a device buffer into a slot (a dm_condition_slot).
 *   Owns: the buffer stays the caller's (read during the call only); nothing to free.
 *   NULL: stream and enc must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: one thread at a time per stream; enc must not be freed meanwhile. */
int dm_stream_set_condition(dm_stream* stream, int slot, const dm_buffer* enc, int len,
                            dm_error* err) DM_NOEXCEPT;
/* Shared-curve override by DEMON field name ("velocity_scale", "sde_denoise_curve",
 * "ode_noise_curve", "apg_momentum", "x0_target_strength", "cfg_rescale_curve",
 * "guidance_curve"): applies to every in-flight slot from the next tick (spec §4.8).
 * len 0 clears it, 1 is a scalar, T a per-frame curve; copied. DM_ERR_NOT_FOUND for an
 * unknown name.
 *   Owns: reads values during the call only; nothing to free.
 *   NULL: stream must not be NULL (DM_ERR_INVALID_ARGUMENT); values may be NULL only when
 *         len == 0 (DM_ERR_INVALID_ARGUMENT); a NULL name is DM_ERR_NOT_FOUND.
 *   Threads: one thread at a time per stream. */
int dm_stream_set_curve(dm_stream* stream, const char* name, const float* values, int len,
                        dm_error* err) DM_NOEXCEPT;

/* Per-frame prompt A/B weights (spec §4.1 temporal_weight): values[t] in [0, 1] weighs prompt
 * B at latent frame t and 1 − values[t] prompt A; the two prompts run as separate decoder rows
 * and their velocities blend per frame. len T is a curve, 1 a constant, 0 clears (back to the
 * tick's scalar prompt_blend). Copied; requests submitted from the next tick carry it.
 * DM_ERR_STATE unless the stream was created with max_prompts = 2.
 *   Owns: reads values during the call only; nothing to free.
 *   NULL: stream must not be NULL; values may be NULL only when len == 0
 *         (DM_ERR_INVALID_ARGUMENT).
 *   Threads: one thread at a time per stream. */
int dm_stream_set_blend_curve(dm_stream* stream, const float* values, int len,
                              dm_error* err) DM_NOEXCEPT;

/* Sets the looping playback buffer: `frames` interleaved stereo frames (T·1920), copied.
 *   Owns: reads interleaved during the call only; nothing to free.
 *   NULL: stream and interleaved must not be NULL (DM_ERR_INVALID_ARGUMENT).
 *   Threads: one thread at a time per stream. */
int dm_stream_set_playback(dm_stream* stream, const float* interleaved, int64_t frames,
                           dm_error* err) DM_NOEXCEPT;

/* Copies `frames` interleaved stereo frames of the playback buffer, from frame `start`,
 * into dst (2·frames floats).
 *   Owns: writes dst (caller memory); on error its contents are unspecified. Nothing to
 *         free.
 *   NULL: stream must not be NULL; dst may be NULL only when frames == 0
 *         (DM_ERR_INVALID_ARGUMENT).
 *   Threads: one thread at a time per stream. */
int dm_stream_read_playback(const dm_stream* stream, int64_t start, float* dst, int64_t frames,
                            dm_error* err) DM_NOEXCEPT;

/* One tick. When a latent is decoded, the slice (interleaved stereo float32) is written to
 * `slice` (capacity `slice_cap` floats; 2·17280 is always enough) and, when `slice_f16` is
 * not NULL, the same samples as IEEE float16 little-endian bytes — the wire's RAW slice
 * payload — to `slice_f16` (capacity `f16_cap` bytes; 4·17280 is always enough). With
 * params->decode set, buffers too small for this stream's slices fail the call
 * (DM_ERR_INVALID_ARGUMENT) before anything changes. Allocates nothing.
 *   Owns: writes *result on success only, and slice / slice_f16 (caller memory) when a
 *         slice is decoded; on error they are unspecified. Nothing to free.
 *   NULL: stream and params must not be NULL (DM_ERR_INVALID_ARGUMENT); result may be NULL
 *         (not reported); slice may be NULL until a tick decodes a slice, which then fails
 *         with DM_ERR_INVALID_ARGUMENT; slice_f16 may be NULL (not written).
 *   Threads: one thread at a time per stream. */
int dm_stream_tick(dm_stream* stream, const dm_tick_params* params, dm_tick_result* result,
                   float* slice, int64_t slice_cap, uint8_t* slice_f16, int64_t f16_cap,
                   dm_error* err) DM_NOEXCEPT;
/* The decode half of a tick without the DiT (spec §4.10 step 2, idle mode: "keep decoding the
 * last latent"): decodes the window at playhead_s + lead of `latent` ([frames, 64] floats in
 * host memory, read during the call) or, when `latent` is NULL, of the last latent the stream
 * emitted (DM_ERR_STATE if none yet); crossfades and patches it into the playback buffer and
 * writes the slice buffers as dm_stream_tick does. result: decoded = 1, start_sample,
 * num_samples, dec_ms, num_gens, depth; the DiT fields are 0. Allocates nothing.
 *   Owns: reads latent during the call only; writes *result, slice and slice_f16 (caller
 *         memory) on success; on error they are unspecified. Nothing to free.
 *   NULL: stream and slice must not be NULL (DM_ERR_INVALID_ARGUMENT); latent NULL means
 *         the last emitted latent; result and slice_f16 may be NULL (not written).
 *   Threads: one thread at a time per stream. */
int dm_stream_decode_window(dm_stream* stream, double playhead_s, const float* latent, int frames,
                            dm_tick_result* result, float* slice, int64_t slice_cap,
                            uint8_t* slice_f16, int64_t f16_cap, dm_error* err) DM_NOEXCEPT;

/* ---------------------------------------------------------------------------------------
 * Diagnostics for tests of the exception barrier.
 * ------------------------------------------------------------------------------------- */
typedef enum dm_debug_throw_kind {
  DM_DEBUG_THROW_STD = 0,       /* std::runtime_error("debug: std exception") */
  DM_DEBUG_THROW_BAD_ALLOC = 1, /* std::bad_alloc */
  DM_DEBUG_THROW_DM_ERROR = 2,  /* a shim error with status DM_ERR_CORRUPT */
  DM_DEBUG_THROW_UNKNOWN = 3    /* a non-std exception (an int) */
} dm_debug_throw_kind;

/* Throws the requested exception inside the shim's exception barrier and returns the
 * status it maps to. Never returns DM_OK (an unknown kind is DM_ERR_INVALID_ARGUMENT).
 *   Owns: nothing to free; nothing stays allocated.
 *   NULL: err may be NULL, like everywhere.
 *   Threads: any thread, any time. */
int dm_debug_throw(int kind, dm_error* err) DM_NOEXCEPT;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DEMON_DEMON_H_ */

// extern "C" entry points for versions, fault points, devices, the ledger and buffers.
#include <algorithm>
#include <cstring>
#include <memory>

#include "capi/guard.h"
#include "capi/handles.h"

extern "C" {

const char* dm_version(void) noexcept { return DM_SHIM_VERSION; }

int dm_faults_create(const char* spec, dm_faults** out, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckOut(out, "dm_faults_create");
    auto f = std::make_unique<dm_faults>();
    f->registry = std::make_shared<dm::FaultRegistry>(spec == nullptr ? "" : spec);
    *out = f.release();
  });
}

void dm_faults_free(dm_faults** faults) noexcept {
  if (faults == nullptr || *faults == nullptr) return;
  // Devices may still hold the registry. Nobody can re-arm it once the handle is gone, so
  // disarm it: nothing fires any more, and hung hits are released rather than left to
  // their ten-minute limit.
  dm::GuardVoid([&] { (*faults)->registry->DisarmAll(); });
  dm::FreeHandle(faults);
}

int dm_faults_arm(dm_faults* faults, const char* spec, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(faults, "dm_faults_arm");
    faults->registry->Arm(spec == nullptr ? "" : spec);
  });
}

void dm_faults_reset(dm_faults* faults) noexcept {
  dm::GuardVoid([&] {
    if (faults != nullptr) faults->registry->Reset();
  });
}

int dm_faults_hit(dm_faults* faults, const char* point, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(faults, "dm_faults_hit");
    if (point == nullptr) dm::Fail(dm::Status::kInvalidArgument, "dm_faults_hit: point is NULL");
    faults->registry->Hit(point);
  });
}

int dm_faults_arming(const dm_faults* faults, const char* point, int* action, int64_t* nth,
                     dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(faults, "dm_faults_arming");
    if (point == nullptr || action == nullptr || nth == nullptr) {
      dm::Fail(dm::Status::kInvalidArgument, "dm_faults_arming: NULL argument");
    }
    dm::FaultRegistry::Action a;
    faults->registry->ArmingOf(point, &a, nth);
    *action = static_cast<int>(a);
  });
}

int64_t dm_faults_hits(const dm_faults* faults, const char* point) noexcept {
  // The lookup builds a std::string key (bad_alloc) and takes a mutex.
  return dm::GuardValue<int64_t>(-1, [&]() -> int64_t {
    if (faults == nullptr || point == nullptr) return -1;
    return faults->registry->Hits(point);
  });
}

// Both read a constant array: nothing here can throw.
int dm_faults_point_count(void) noexcept { return static_cast<int>(dm::kFaultPointCount); }

const char* dm_faults_point_name(int index) noexcept {
  if (index < 0 || static_cast<size_t>(index) >= dm::kFaultPointCount) return nullptr;
  return dm::kFaultPoints[index];
}

int dm_device_create(const dm_device_options* opts, dm_device** out, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckOut(out, "dm_device_create");
    if (opts == nullptr)
      dm::Fail(dm::Status::kInvalidArgument, "dm_device_create: options are NULL");
    auto d = std::make_unique<dm_device>();
    d->device = dm::CreateDevice(opts->kind, opts->capacity_bytes, opts->ordinal,
                                 opts->faults == nullptr ? nullptr : opts->faults->registry);
    *out = d.release();
  });
}

void dm_device_free(dm_device** device) noexcept { dm::FreeHandle(device); }

int dm_device_describe(const dm_device* device, char* buf, size_t len, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(device, "dm_device_describe");
    if (buf == nullptr || len == 0) {
      dm::Fail(dm::Status::kInvalidArgument, "dm_device_describe: empty output buffer");
    }
    std::string s = device->device->Describe();
    std::strncpy(buf, s.c_str(), len - 1);
    buf[len - 1] = '\0';
  });
}

int dm_ledger_totals_get(const dm_device* device, dm_ledger_totals* out, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(device, "dm_ledger_totals_get");
    if (out == nullptr) dm::Fail(dm::Status::kInvalidArgument, "dm_ledger_totals_get: out is NULL");
    dm::LedgerTotals t = device->device->ledger().Totals();
    out->capacity_bytes = t.capacity_bytes;
    out->used_bytes = t.used_bytes;
    out->peak_bytes = t.peak_bytes;
    out->allocations = t.allocations;
    out->frees = t.frees;
    out->failed = t.failed;
    out->live_handles = t.live_handles;
  });
}

}  // extern "C"

namespace dm {
namespace capi_detail {

// Runs inside the caller's Guard: building `src` (ByKind/ByOwner) allocates too.
void CopyEntries(const std::vector<LedgerEntry>& src, dm_ledger_entry* entries, int cap,
                 int* count) {
  *count = static_cast<int>(src.size());
  int n = std::min(cap, *count);
  for (int i = 0; i < n; ++i) {
    const LedgerEntry& e = src[static_cast<size_t>(i)];
    std::memset(entries[i].name, 0, sizeof entries[i].name);
    std::strncpy(entries[i].name, e.name.c_str(), sizeof entries[i].name - 1);
    entries[i].used_bytes = e.used_bytes;
    entries[i].peak_bytes = e.peak_bytes;
    entries[i].live_handles = e.live_handles;
  }
}

// The argument checks of dm_ledger_by_kind/by_owner, before the entries are built.
void CheckEntriesArgs(const dm_device* device, dm_ledger_entry* entries, int cap, int* count,
                      const char* what) {
  CheckHandle(device, what);
  if (count == nullptr) Fail(Status::kInvalidArgument, "%s: count is NULL", what);
  if (cap > 0 && entries == nullptr) Fail(Status::kInvalidArgument, "%s: array is NULL", what);
}

}  // namespace capi_detail
}  // namespace dm

extern "C" {

int dm_ledger_by_kind(const dm_device* device, dm_ledger_entry* entries, int cap, int* count,
                      dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::capi_detail::CheckEntriesArgs(device, entries, cap, count, "dm_ledger_by_kind");
    dm::capi_detail::CopyEntries(device->device->ledger().ByKind(), entries, cap, count);
  });
}

int dm_ledger_by_owner(const dm_device* device, dm_ledger_entry* entries, int cap, int* count,
                       dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::capi_detail::CheckEntriesArgs(device, entries, cap, count, "dm_ledger_by_owner");
    dm::capi_detail::CopyEntries(device->device->ledger().ByOwner(), entries, cap, count);
  });
}

void dm_ledger_reset_peak(dm_device* device) noexcept {
  dm::GuardVoid([&] {
    if (device != nullptr) device->device->ledger().ResetPeak();
  });
}

int dm_buffer_alloc(dm_device* device, uint64_t bytes, const char* owner, dm_buffer** out,
                    dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(device, "dm_buffer_alloc");
    dm::CheckOut(out, "dm_buffer_alloc");
    dm::CheckOwner(owner);
    if (bytes == 0)
      dm::Fail(dm::Status::kInvalidArgument, "dm_buffer_alloc: size must be > 0 bytes");
    auto b = std::make_unique<dm_buffer>(device->device, owner, bytes);
    *out = b.release();
  });
}

void dm_buffer_free(dm_buffer** buffer) noexcept { dm::FreeHandle(buffer); }

uint64_t dm_buffer_size(const dm_buffer* buffer) noexcept {
  return buffer == nullptr ? 0 : buffer->memory.size();
}

int dm_buffer_write(dm_buffer* buffer, uint64_t offset, const void* src, uint64_t n,
                    dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(buffer, "dm_buffer_write");
    buffer->memory.Write(offset, src, n);
  });
}

int dm_buffer_read(const dm_buffer* buffer, uint64_t offset, void* dst, uint64_t n,
                   dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(buffer, "dm_buffer_read");
    buffer->memory.Read(offset, dst, n);
  });
}

int dm_debug_throw(int kind, dm_error* err) noexcept {
  int rc = dm::Guard(err, [&] {
    switch (kind) {
      case DM_DEBUG_THROW_STD: throw std::runtime_error("debug: std exception");
      case DM_DEBUG_THROW_BAD_ALLOC: throw std::bad_alloc();
      case DM_DEBUG_THROW_DM_ERROR: dm::Fail(dm::Status::kCorrupt, "debug: shim error");
      case DM_DEBUG_THROW_UNKNOWN: throw 42;
      default: dm::Fail(dm::Status::kInvalidArgument, "dm_debug_throw: unknown kind %d", kind);
    }
  });
  return rc;
}

}  // extern "C"

#ifdef DM_LEAK_PROBE
// Test-only (built with -tags leakprobe): leaks 4 KiB so that LeakSanitizer has something
// to report. See trt/leakprobe.go.
extern "C" int dm_debug_leak(void) noexcept {
  char* volatile leaked = new (std::nothrow) char[4096];
  if (leaked == nullptr) return 0;
  leaked[0] = 1;
  return leaked[0];
}
#endif

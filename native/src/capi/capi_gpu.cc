// extern "C" entry points for the driver cross-check, host staging totals and the copy
// throughput measurement (demon.h, "Devices and the ledger"). They work on every device
// kind: on the host device they report the ledger and time memcpy.
#include <algorithm>
#include <memory>

#include "capi/guard.h"
#include "capi/handles.h"

extern "C" {

int dm_device_driver_memory(const dm_device* device, uint64_t* free_bytes, uint64_t* total_bytes,
                            dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(device, "dm_device_driver_memory");
    if (free_bytes == nullptr || total_bytes == nullptr) {
      dm::Fail(dm::Status::kInvalidArgument, "dm_device_driver_memory: out-pointer is NULL");
    }
    dm::DriverMemory m = device->device->QueryDriverMemory();
    *free_bytes = m.free_bytes;
    *total_bytes = m.total_bytes;
  });
}

int dm_device_staging_totals(const dm_device* device, dm_ledger_totals* out,
                             dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(device, "dm_device_staging_totals");
    if (out == nullptr)
      dm::Fail(dm::Status::kInvalidArgument, "dm_device_staging_totals: out is NULL");
    const dm::Device& d = *device->device;
    dm::LedgerTotals t = d.staging_ledger().Totals();
    int64_t handles = 0;
    for (const auto& e : d.ledger().ByKind()) {
      if (e.name == dm::HandleKindName(dm::HandleKind::kStaging)) handles = e.live_handles;
    }
    out->capacity_bytes = t.capacity_bytes;
    out->used_bytes = t.used_bytes;
    out->peak_bytes = t.peak_bytes;
    out->allocations = t.allocations;
    out->frees = t.frees;
    out->failed = t.failed;
    out->live_handles = handles;
  });
}

int dm_device_time_copies(dm_device* device, uint64_t bytes, int iterations, const char* owner,
                          dm_copy_timing* out, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(device, "dm_device_time_copies");
    if (out == nullptr)
      dm::Fail(dm::Status::kInvalidArgument, "dm_device_time_copies: out is NULL");
    dm::CheckOwner(owner);
    if (bytes == 0) dm::Fail(dm::Status::kInvalidArgument, "dm_device_time_copies: 0 bytes");
    if (iterations < 1 || iterations > 10000) {
      dm::Fail(dm::Status::kInvalidArgument,
               "dm_device_time_copies: %d iterations outside 1..10000", iterations);
    }
    const std::shared_ptr<dm::Device>& d = device->device;
    dm::DeviceBuffer dev(d, dm::HandleKind::kBuffer, owner, bytes);
    dm::StagingBuffer host(d, owner, bytes);
    dm::CopyTiming t = d->TimeCopies(dev.data(), host.data(), bytes, iterations);
    out->bytes = bytes;
    out->iterations = iterations;
    out->h2d_ms = t.h2d_ms;
    out->d2h_ms = t.d2h_ms;
  });
}

}  // extern "C"

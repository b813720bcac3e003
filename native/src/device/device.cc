#include "device/device.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

namespace dm {

void CheckOwner(const char* owner) {
  if (owner == nullptr || owner[0] == '\0') {
    Fail(Status::kInvalidArgument, "owner tag must be a non-empty string");
  }
  size_t n = std::strlen(owner);
  if (n > 95) Fail(Status::kInvalidArgument, "owner tag is %zu bytes; the limit is 95", n);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(owner[i]);
    if (c < 0x20 || c == 0x7f) {
      Fail(Status::kInvalidArgument, "owner tag has a control character at byte %zu", i);
    }
  }
}

DeviceBuffer::DeviceBuffer(std::shared_ptr<Device> device, HandleKind kind, std::string owner,
                           size_t bytes)
    : device_(std::move(device)), kind_(kind), owner_(std::move(owner)), bytes_(bytes) {
  if (bytes == 0) Fail(Status::kInvalidArgument, "allocation of 0 bytes for %s", owner_.c_str());
  try {
    HitFault(device_->faults(), "device.alloc");
  } catch (...) {
    device_->ledger().CountFailure();
    throw;
  }
  Ledger::Reservation admitted = device_->ledger().Reserve(kind_, owner_, bytes_);
  ptr_ = device_->RawAlloc(bytes_);  // if it throws, `admitted` cancels: one failure counted
  admitted.Commit();
}

DeviceBuffer::~DeviceBuffer() {
  device_->RawFree(ptr_, bytes_);
  device_->ledger().Release(kind_, owner_, bytes_);
}

void DeviceBuffer::Write(size_t offset, const void* src, size_t n) {
  if (offset > bytes_ || n > bytes_ - offset) {
    Fail(Status::kInvalidArgument, "write of %zu bytes at offset %zu overruns a %zu-byte buffer", n,
         offset, bytes_);
  }
  if (n > 0 && src == nullptr) Fail(Status::kInvalidArgument, "write source is NULL");
  if (n > 0) device_->CopyToDevice(static_cast<char*>(ptr_) + offset, src, n);
}

void DeviceBuffer::Read(size_t offset, void* dst, size_t n) const {
  if (offset > bytes_ || n > bytes_ - offset) {
    Fail(Status::kInvalidArgument, "read of %zu bytes at offset %zu overruns a %zu-byte buffer", n,
         offset, bytes_);
  }
  if (n > 0 && dst == nullptr) Fail(Status::kInvalidArgument, "read destination is NULL");
  if (n > 0) device_->CopyToHost(dst, static_cast<const char*>(ptr_) + offset, n);
}

DriverMemory Device::QueryDriverMemory() const {
  LedgerTotals t = ledger_.Totals();
  return DriverMemory{t.capacity_bytes - t.used_bytes, t.capacity_bytes};
}

void* Device::StagingAlloc(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, rounded == 0 ? 64 : rounded);
  return p;
}

void Device::StagingFree(void* ptr, size_t /*bytes*/) noexcept { std::free(ptr); }

CopyTiming Device::TimeCopies(void* device_ptr, void* staging_ptr, size_t n, int iterations) {
  using clock = std::chrono::steady_clock;
  auto ms = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  CopyTiming t;
  auto t0 = clock::now();
  for (int i = 0; i < iterations; ++i) CopyToDevice(device_ptr, staging_ptr, n);
  auto t1 = clock::now();
  for (int i = 0; i < iterations; ++i) CopyToHost(staging_ptr, device_ptr, n);
  auto t2 = clock::now();
  t.h2d_ms = ms(t0, t1);
  t.d2h_ms = ms(t1, t2);
  return t;
}

StagingBuffer::StagingBuffer(std::shared_ptr<Device> device, std::string owner, size_t bytes)
    : device_(std::move(device)),
      owner_(std::move(owner)),
      bytes_(bytes),
      token_(device_, HandleKind::kStaging, owner_) {
  if (bytes == 0) Fail(Status::kInvalidArgument, "staging of 0 bytes for %s", owner_.c_str());
  Ledger::Reservation admitted =
      device_->staging_ledger().Reserve(HandleKind::kStaging, owner_, bytes_);
  ptr_ = device_->StagingAlloc(bytes_);  // if it throws, `admitted` cancels
  admitted.Commit();
}

StagingBuffer::~StagingBuffer() {
  device_->StagingFree(ptr_, bytes_);
  device_->staging_ledger().Release(HandleKind::kStaging, owner_, bytes_);
}

HandleToken::HandleToken(std::shared_ptr<Device> device, HandleKind kind, std::string owner)
    : device_(std::move(device)), kind_(kind), owner_(std::move(owner)) {
  device_->ledger().AddHandle(kind_, owner_);
}

HandleToken::~HandleToken() { device_->ledger().RemoveHandle(kind_, owner_); }

}  // namespace dm

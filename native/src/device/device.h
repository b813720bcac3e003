// Devices: where every native object's memory comes from, with a ledger that accounts it.
//
// Device is shared (std::shared_ptr) by everything allocated on it, so freeing the device
// handle before its objects never leaves them pointing at freed state; their bytes simply
// stay on the ledger until they are freed, which is exactly what a leak test should see.
//
// Devices the CPU cannot address (the cuda device) also hand out host staging memory
// (pinned, through the driver). Staging is host memory, so it never counts against the
// device's capacity: each staging block is one live "staging" handle on the device ledger
// (so leak checks on handles and owners see it) and its bytes are accounted on a separate
// staging ledger (StagingLedger(), dm_device_staging_totals in the C API). The CPU
// reference engines and the streaming pipeline compute on such host shadows and copy to
// and from device memory (Context::Execute, Stream); on the host device none of this
// exists and every path is as before.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include "core/ledger.h"
#include "core/memory.h"
#include "faults/faults.h"

namespace dm {

// What the device's driver reports about its memory (cuMemGetInfo for a GPU).
struct DriverMemory {
  uint64_t free_bytes = 0;
  uint64_t total_bytes = 0;
};

// Milliseconds `iterations` copies of `bytes` took each way (device-timed on a GPU).
struct CopyTiming {
  double h2d_ms = 0;
  double d2h_ms = 0;
};

class Device {
 public:
  Device(uint64_t capacity, std::shared_ptr<FaultRegistry> faults)
      : ledger_(capacity),
        staging_(std::numeric_limits<uint64_t>::max()),
        faults_(std::move(faults)) {}
  virtual ~Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  virtual std::string Describe() const = 0;
  // True when device pointers can be dereferenced by the CPU (the host device).
  virtual bool HostAccessible() const = 0;

  // Backend memory operations. RawAlloc returns zero-filled memory of `bytes` bytes,
  // 64-byte aligned, or throws kOutOfMemory; RawFree never throws.
  virtual void* RawAlloc(size_t bytes) = 0;
  virtual void RawFree(void* ptr, size_t bytes) noexcept = 0;
  virtual void CopyToDevice(void* dst, const void* src, size_t n) = 0;
  virtual void CopyToHost(void* dst, const void* src, size_t n) const = 0;

  // The driver's view of free and total memory. The host device reports its ledger
  // (capacity − used, capacity); the cuda device calls cuMemGetInfo.
  virtual DriverMemory QueryDriverMemory() const;

  // Host staging memory (pinned on a GPU): zero-filled, 64-byte aligned, or throws.
  // Not device memory: callers account it with StagingBuffer, never against capacity.
  virtual void* StagingAlloc(size_t bytes);
  virtual void StagingFree(void* ptr, size_t bytes) noexcept;

  // Times `iterations` host-to-device then device-to-host copies of n bytes between a
  // device pointer and a staging pointer (the GPU check's throughput figures).
  virtual CopyTiming TimeCopies(void* device_ptr, void* staging_ptr, size_t n, int iterations);

  Ledger& ledger() { return ledger_; }
  const Ledger& ledger() const { return ledger_; }
  // Bytes of host staging memory, per owner, with no capacity of its own.
  Ledger& staging_ledger() { return staging_; }
  const Ledger& staging_ledger() const { return staging_; }
  FaultRegistry* faults() const { return faults_.get(); }

 private:
  Ledger ledger_;
  Ledger staging_;
  // Shared with the dm_faults handle (and every other device given it), so freeing the
  // handle first leaves the device a live registry, not a dangling pointer.
  std::shared_ptr<FaultRegistry> faults_;
};

// Creates a device of the given dm_device_kind. Throws on failure.
std::shared_ptr<Device> CreateDevice(int kind, uint64_t capacity, int ordinal,
                                     std::shared_ptr<FaultRegistry> faults);

// Device memory owned by one object: reserved on the ledger, allocated, and released in
// reverse on destruction. Copy is deleted; the memory moves only with the owning pointer.
class DeviceBuffer final : public Block {
 public:
  DeviceBuffer(std::shared_ptr<Device> device, HandleKind kind, std::string owner, size_t bytes);
  ~DeviceBuffer() override;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() override { return ptr_; }
  size_t size() const override { return bytes_; }
  const void* data() const { return ptr_; }
  Device& device() const { return *device_; }

  void Write(size_t offset, const void* src, size_t n);
  void Read(size_t offset, void* dst, size_t n) const;

 private:
  std::shared_ptr<Device> device_;
  HandleKind kind_;
  std::string owner_;
  size_t bytes_;
  void* ptr_ = nullptr;
};

// One live handle of `kind` on the ledger for as long as the token lives.
class HandleToken {
 public:
  HandleToken(std::shared_ptr<Device> device, HandleKind kind, std::string owner);
  ~HandleToken();
  HandleToken(const HandleToken&) = delete;
  HandleToken& operator=(const HandleToken&) = delete;

 private:
  std::shared_ptr<Device> device_;
  HandleKind kind_;
  std::string owner_;
};

// An Allocator whose blocks are DeviceBuffers of one kind and owner.
class DeviceAllocator final : public Allocator {
 public:
  DeviceAllocator(std::shared_ptr<Device> device, HandleKind kind, std::string owner)
      : device_(std::move(device)), kind_(kind), owner_(std::move(owner)) {}
  std::unique_ptr<Block> Allocate(size_t bytes, const char* /*what*/) override {
    return std::make_unique<DeviceBuffer>(device_, kind_, owner_, bytes);
  }

 private:
  std::shared_ptr<Device> device_;
  HandleKind kind_;
  std::string owner_;
};

// Host staging memory owned by one object: one live "staging" handle of `owner` on the
// device ledger, its bytes on the staging ledger (never against the device capacity), and
// the memory from Device::StagingAlloc. Released in reverse on destruction. Not a fault
// point: device.alloc fires only for device memory.
class StagingBuffer final : public Block {
 public:
  StagingBuffer(std::shared_ptr<Device> device, std::string owner, size_t bytes);
  ~StagingBuffer() override;
  StagingBuffer(const StagingBuffer&) = delete;
  StagingBuffer& operator=(const StagingBuffer&) = delete;

  void* data() override { return ptr_; }
  size_t size() const override { return bytes_; }

 private:
  std::shared_ptr<Device> device_;
  std::string owner_;
  size_t bytes_;
  HandleToken token_;
  void* ptr_ = nullptr;
};

// Device memory with a host shadow, for state the CPU computes on but that must occupy
// (and be admitted against) the device: data() is the host staging copy; the device copy
// is reserved first, so an out-of-memory refusal comes from the device ledger before any
// host memory is taken. SyncToDevice copies a range of the shadow to the device.
class MirroredBlock final : public Block {
 public:
  MirroredBlock(std::shared_ptr<Device> device, HandleKind kind, const std::string& owner,
                size_t bytes)
      : device_copy_(device, kind, owner, bytes), host_(std::move(device), owner, bytes) {}

  void* data() override { return host_.data(); }
  size_t size() const override { return host_.size(); }
  // Copies shadow bytes [offset, offset+n) to the device copy. Allocates nothing.
  void SyncToDevice(size_t offset, size_t n) {
    device_copy_.Write(offset, static_cast<char*>(host_.data()) + offset, n);
  }

 private:
  DeviceBuffer device_copy_;  // acquired first, released last
  StagingBuffer host_;
};

// An Allocator of MirroredBlocks (the stream's allocator on a non-host-accessible device).
class MirroredAllocator final : public Allocator {
 public:
  MirroredAllocator(std::shared_ptr<Device> device, HandleKind kind, std::string owner)
      : device_(std::move(device)), kind_(kind), owner_(std::move(owner)) {}
  std::unique_ptr<Block> Allocate(size_t bytes, const char* /*what*/) override {
    return std::make_unique<MirroredBlock>(device_, kind_, owner_, bytes);
  }

 private:
  std::shared_ptr<Device> device_;
  HandleKind kind_;
  std::string owner_;
};

// Validates an owner tag: non-empty, printable, at most 95 bytes.
void CheckOwner(const char* owner);

}  // namespace dm

// Devices: where every native object's memory comes from, with a ledger that accounts it.
//
// Device is shared (std::shared_ptr) by everything allocated on it, so freeing the device
// handle before its objects never leaves them pointing at freed state; their bytes simply
// stay on the ledger until they are freed, which is exactly what a leak test should see.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "core/ledger.h"
#include "core/memory.h"
#include "faults/faults.h"

namespace dm {

class Device {
 public:
  Device(uint64_t capacity, FaultRegistry* faults) : ledger_(capacity), faults_(faults) {}
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

  Ledger& ledger() { return ledger_; }
  const Ledger& ledger() const { return ledger_; }
  FaultRegistry* faults() const { return faults_; }

 private:
  Ledger ledger_;
  FaultRegistry* faults_;  // borrowed; outlives the device (demon.h contract)
};

// Creates a device of the given dm_device_kind. Throws on failure.
std::shared_ptr<Device> CreateDevice(int kind, uint64_t capacity, int ordinal,
                                     FaultRegistry* faults);

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

// Validates an owner tag: non-empty, printable, at most 95 bytes.
void CheckOwner(const char* owner);

}  // namespace dm

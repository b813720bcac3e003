// The host device: real host memory with a configured capacity, accounted like a GPU.
//
// Allocations of 1 MiB and more are anonymous private mappings with MAP_NORESERVE: the
// kernel commits pages only when they are touched, so a test can give the device a 24 GiB
// capacity and "allocate" a 13.5 GB engine footprint on a 24 GiB machine without using it.
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "device/device.h"

namespace dm {
namespace host_detail {

constexpr size_t kMapThreshold = 1 << 20;

class HostDevice final : public Device {
 public:
  HostDevice(uint64_t capacity, std::shared_ptr<FaultRegistry> faults)
      : Device(capacity, std::move(faults)) {}

  std::string Describe() const override {
    return "host device (capacity " + FormatBytes(ledger().capacity()) + ")";
  }
  bool HostAccessible() const override { return true; }

  void* RawAlloc(size_t bytes) override {
    if (bytes >= kMapThreshold) {
      void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) {
        Fail(Status::kOutOfMemory, "out of memory: host mapping of %s failed",
             FormatBytes(bytes).c_str());
      }
      return p;
    }
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr) throw std::bad_alloc();
    std::memset(p, 0, rounded);
    return p;
  }

  void RawFree(void* ptr, size_t bytes) noexcept override {
    if (ptr == nullptr) return;
    if (bytes >= kMapThreshold) {
      munmap(ptr, bytes);
    } else {
      std::free(ptr);
    }
  }

  void CopyToDevice(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }
  void CopyToHost(void* dst, const void* src, size_t n) const override { std::memcpy(dst, src, n); }
};

}  // namespace host_detail

std::shared_ptr<Device> CreateCudaDevice(int ordinal, std::shared_ptr<FaultRegistry> faults);

std::shared_ptr<Device> CreateDevice(int kind, uint64_t capacity, int ordinal,
                                     std::shared_ptr<FaultRegistry> faults) {
  switch (kind) {
    case 0:  // DM_DEVICE_HOST
      if (capacity == 0) {
        Fail(Status::kInvalidArgument, "host device capacity must be greater than 0 bytes");
      }
      HitFault(faults.get(), "device.create");
      return std::make_shared<host_detail::HostDevice>(capacity, std::move(faults));
    case 1:  // DM_DEVICE_CUDA
      HitFault(faults.get(), "device.create");
      return CreateCudaDevice(ordinal, std::move(faults));
    default: Fail(Status::kInvalidArgument, "unknown device kind %d (want 0 host or 1 cuda)", kind);
  }
}

}  // namespace dm

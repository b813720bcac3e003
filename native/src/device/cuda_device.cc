// The CUDA device kind. Until the driver-API backend lands, creating one reports clearly
// that this build cannot, so configuration errors surface at start, not at first use.
#include "device/device.h"

namespace dm {

std::shared_ptr<Device> CreateCudaDevice(int ordinal, FaultRegistry* /*faults*/) {
  Fail(Status::kUnsupported,
       "cuda device %d: this build has no CUDA device backend yet; use --device host", ordinal);
}

}  // namespace dm

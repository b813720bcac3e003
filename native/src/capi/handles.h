// The structs behind the opaque handles of demon.h. Each owns its C++ object; freeing the
// handle runs the object's destructor, which releases everything in reverse order.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "device/device.h"
#include "engine/engine.h"
#include "stream/stream.h"
#include "faults/faults.h"

#define DM_SHIM_VERSION "0.1.0"

namespace dm {

// The body of every dm_*_free (demon.h: "NULL-safe and idempotent"): frees the handle the
// caller's variable holds, if any, and clears the variable, so a second free of the same
// variable finds NULL and does nothing. Handle destructors do not throw.
template <typename Handle>
void FreeHandle(Handle** handle) noexcept {
  if (handle == nullptr) return;
  delete std::exchange(*handle, nullptr);
}

}  // namespace dm

// Shared: every device created with the registry holds a reference, so dm_faults_free
// before dm_device_free only drops the handle's (demon.h, dm_device_options.faults).
struct dm_faults {
  std::shared_ptr<dm::FaultRegistry> registry;
};

struct dm_device {
  std::shared_ptr<dm::Device> device;
};

// Members in acquisition order: the token counts the handle, then the memory is reserved;
// destruction releases the memory first, then the handle.
struct dm_buffer {
  dm_buffer(std::shared_ptr<dm::Device> device, const char* owner, size_t bytes)
      : token(device, dm::HandleKind::kBuffer, owner),
        memory(device, dm::HandleKind::kBuffer, owner, bytes) {}
  dm::HandleToken token;
  dm::DeviceBuffer memory;
};

struct dm_engine {
  std::shared_ptr<dm::Engine> engine;
};

struct dm_context {
  std::unique_ptr<dm::Context> context;
};

struct dm_stream {
  std::unique_ptr<dm::Stream> stream;
};

// The decoder seam: anything that predicts a flow velocity from the DiT's four inputs.
//
// Reference engines (oracle, tiny DiT) implement it on host memory; a TensorRT engine
// would implement the same contract on device memory. Shapes follow spec/engine.md §2.2:
// hidden_states [B,T,64], timestep [B], encoder_hidden_states [B,L,2048],
// context_latents [B,T,128] -> velocity [B,T,64]; T is the padded (even) length.
#pragma once

#include <cstddef>
#include <functional>

namespace dm {

// Executes fn(i) for i in [0, n), possibly on several threads; returns when all are done.
// Implementations must not allocate on the steady-state path.
class Parallel {
 public:
  virtual ~Parallel() = default;
  virtual void For(int n, const std::function<void(int)>& fn) = 0;
  virtual int Workers() const = 0;
};

// Runs everything inline on the calling thread.
class SerialParallel final : public Parallel {
 public:
  void For(int n, const std::function<void(int)>& fn) override {
    for (int i = 0; i < n; ++i) fn(i);
  }
  int Workers() const override { return 1; }
};

struct DecoderInputs {
  int batch = 0;                                 // B
  int frames = 0;                                // T (even)
  int cond_len = 0;                              // L
  const float* hidden_states = nullptr;          // [B,T,64]
  const float* timestep = nullptr;               // [B]
  const float* encoder_hidden_states = nullptr;  // [B,L,2048]
  const float* context_latents = nullptr;        // [B,T,128]
};

class VelocityModel {
 public:
  virtual ~VelocityModel() = default;
  // Bytes of scratch memory forward() needs for the given shape; the caller provides it so
  // that every byte is allocated (and accounted) before the first tick.
  virtual size_t ScratchBytes(int batch, int frames, int cond_len) const = 0;
  // Writes velocity [B,T,64]. scratch has at least ScratchBytes(...) bytes, 64-byte aligned.
  // Must not allocate heap memory.
  virtual void Forward(const DecoderInputs& in, float* velocity, void* scratch,
                       Parallel& par) const = 0;
};

}  // namespace dm

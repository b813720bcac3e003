// "Oracle" decoder (spec/engine.md §7.2): a velocity whose x0 prediction is known in closed
// form, for exact sampler tests.
//   C[b,τ,c]        = context_latents[b,τ,c] + 0.1 · mean_l encoder_hidden_states[b,l,c]   (c < 64)
//   velocity[b,τ,c] = (hidden_states[b,τ,c] − C[b,τ,c]) / max(timestep[b], 1e-4)
// Zero-padded encoder tokens count in the mean on purpose (padding-sensitive like the DiT).
#pragma once

#include "ref/velocity_model.h"

namespace dm {
namespace ref {

class OracleDecoder final : public VelocityModel {
 public:
  size_t ScratchBytes(int /*batch*/, int /*frames*/, int /*cond_len*/) const override { return 0; }
  // Any T >= 1 (odd is fine). scratch may be null. Throws kInvalidArgument on bad shapes.
  void Forward(const DecoderInputs& in, float* velocity, void* scratch,
               Parallel& par) const override;
  // The closed-form target C for row b, frame τ, channel c (what the sampler converges to).
  static float Target(const DecoderInputs& in, int b, int tau, int c);
};

}  // namespace ref
}  // namespace dm

// Guidance primitives on one request's [T,64] velocity arrays (spec/engine.md §4.6).
// Pure functions: no allocation, no state beyond what the caller passes in.
#pragma once

#include "pipeline/curve.h"

namespace dm {
namespace pipe {

inline constexpr float kApgNormThreshold = 2.5f;  // norm clip of the APG running average
inline constexpr float kDefaultApgMomentum = -0.75f;

// out = Σ_i w_i⊙v_i / max(Σ_i w_i, 1e-8) over n velocities [T,64]; an unset weight reads 1.
// out may alias none of v[i].
void BlendVelocities(const float* const* v, const Curve* weights, int n, int frames, float* out);

// Adaptive projected guidance (ode_steps.apg_forward, eta = 0), per channel, norms over T:
//   d = v_pos − v_neg;  R = d + m⊙R_prev  (running is updated in place and kept UNclipped)
//   R' = R·min(1, 2.5/‖R‖_T);  u = v_pos/max(‖v_pos‖_T, 1e-12)
//   R_orth = R' − (Σ_T R'⊙u)⊙u  (double precision)
//   out = v_pos + (g − 1)⊙R_orth
// guidance g and momentum m are per-frame curves (unset g reads 1, unset m reads −0.75).
// out may alias neither input nor running.
void ApgStep(const float* v_pos, const float* v_neg, int frames, const Curve& guidance,
             const Curve& momentum, float* running, float* out);

// CFG rescale (per channel, fp32-or-better norms over T):
//   σ = ‖v_pos‖_T / max(‖v‖_T, 1e-12);  v ← r⊙(v⊙σ) + (1 − r)⊙v.   No-op when r is unset.
void CfgRescale(float* v, const float* v_pos, int frames, const Curve& rescale);

}  // namespace pipe
}  // namespace dm

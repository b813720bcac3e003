// DCW — Differential Correction in the Wavelet domain (spec/engine.md §4.7), applied to the
// integrated latent after every step: x' ← DCW(x', denoised, t_curr).
//
// Implemented: wavelet "haar" (closed form), modes low / high / double / pix, scalar or per-frame
// scalers (resampled to the band length ceil(T/2) with linear, align_corners=False), and the
// soft-threshold fader. mult_blend and mag_phase faders are a seam: ValidateDcw rejects them
// with kUnsupported until someone implements them in dcw.cc (see ApplyDcwBands).
#pragma once

#include "pipeline/curve.h"

namespace dm {
namespace pipe {

enum class DcwMode { kLow, kHigh, kDouble, kPix };
enum class Wavelet { kHaar };

struct DcwAdvanced {
  float mult_blend = 0.f;   // seam: not implemented (must be 0)
  float mag_phase = 0.f;    // seam: not implemented (must be 0)
  float soft_thresh = 0.f;  // τ: band diff ← sign(diff)·relu(|diff| − τ)
};

struct DcwConfig {
  bool enabled = true;
  DcwMode mode = DcwMode::kDouble;
  Curve scaler = Curve::Scalar(0.05f);       // scalar or per-frame curve
  Curve high_scaler = Curve::Scalar(0.02f);  // used by mode double only
  Wavelet wavelet = Wavelet::kHaar;
  DcwAdvanced advanced;
};

// Throws dm::Error(kUnsupported) for faders this build lacks.
void ValidateDcw(const DcwConfig& cfg);

// False when disabled or every scaler relevant to the mode is zero.
bool DcwActive(const DcwConfig& cfg);

// x [T,64] is corrected in place against denoised [T,64] at flow time t. Curves of the config
// must have len 0, 1 or any length >= 2 (resampled). No allocation.
void ApplyDcw(const DcwConfig& cfg, float t, float* x, const float* denoised, int frames);

}  // namespace pipe
}  // namespace dm

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

// The haar closed form's band scalers at one flow time, for a caller that fuses the
// correction into its own loop over frame pairs (band k = frames 2k, 2k+1):
//   x[2k] += (sl·(δa+δb) + sh·(δa−δb)) / 2;   x[2k+1] += (sl·(δa+δb) − sh·(δa−δb)) / 2
// (odd T: the last band has one frame, x += (sl·δa + sh·δa) / 2), δ = x − denoised.
struct HaarScalers {
  float scale_low = 0.f;
  float scale_high = 0.f;
  const Curve* low = nullptr;
  const Curve* high = nullptr;
  float sl(int k, int bands) const {
    return scale_low == 0.f ? 0.f : scale_low * low->resampled(k, bands);
  }
  float sh(int k, int bands) const {
    return scale_high == 0.f ? 0.f : scale_high * high->resampled(k, bands);
  }
};

// True, with *out set, when ApplyDcw(cfg, t, ...) is exactly the closed form above: DCW
// active in mode low, high or double without the soft-threshold fader. The config must
// outlive *out.
bool PlanHaarClosedForm(const DcwConfig& cfg, float t, HaarScalers* out);

}  // namespace pipe
}  // namespace dm

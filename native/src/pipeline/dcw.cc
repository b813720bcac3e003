#include "pipeline/dcw.h"

#include <cmath>

#include "core/constants.h"
#include "core/error.h"
#include "pipeline/loops.h"

namespace dm {
namespace pipe {
namespace dcw_detail {

constexpr int D = kLatentDim;

// Haar closed form, with δ = x − denoised on the pair (a = 2k, b = 2k+1):
//   x[a] += (s_L·(δa+δb) + s_H·(δa−δb)) / 2;   x[b] += (s_L·(δa+δb) − s_H·(δa−δb)) / 2
// Odd T: δ[T] = 0 and the extra output sample is dropped.
void HaarClosedForm(const HaarScalers& h, float* x, const float* den, int frames) {
  const int bands = (frames + 1) / 2;
  for (int k = 0; k < bands; ++k) {
    const float sl = h.sl(k, bands);
    const float sh = h.sh(k, bands);
    const int a = 2 * k;
    const int b = 2 * k + 1;
    float* xa = x + static_cast<long>(a) * D;
    const float* ya = den + static_cast<long>(a) * D;
    if (b < frames) {
      float* xb = x + static_cast<long>(b) * D;
      const float* yb = den + static_cast<long>(b) * D;
      DM_INDEPENDENT_ITERATIONS
      for (int c = 0; c < D; ++c) {
        const float da = xa[c] - ya[c];
        const float db = xb[c] - yb[c];
        const float lo = sl * (da + db);
        const float hi = sh * (da - db);
        xa[c] += (lo + hi) * 0.5f;
        xb[c] += (lo - hi) * 0.5f;
      }
    } else {
      for (int c = 0; c < D; ++c) {
        const float da = xa[c] - ya[c];
        xa[c] += (sl * da + sh * da) * 0.5f;
      }
    }
  }
}

// Band scalers: s_L = t·scaler (low, double); s_H = (1−t)·scaler (high) or (1−t)·high (double).
void BandScalers(const DcwConfig& cfg, float t, HaarScalers* h) {
  *h = HaarScalers{};
  h->low = &cfg.scaler;
  h->high = &cfg.scaler;
  if (cfg.mode == DcwMode::kLow) {
    h->scale_low = t;
  } else if (cfg.mode == DcwMode::kHigh) {
    h->scale_high = 1.f - t;
  } else {
    h->scale_low = t;
    h->scale_high = 1.f - t;
    h->high = &cfg.high_scaler;
  }
  if (!h->low->set()) h->scale_low = 0.f;
  if (!h->high->set()) h->scale_high = 0.f;
}

float SoftThreshold(float d, float tau) {
  const float m = std::fabs(d) - tau;
  return m > 0.f ? std::copysign(m, d) : 0.f;
}

// Explicit band-domain path (orthonormal haar analysis/synthesis), used when a fader is on.
// This is where mult_blend / mag_phase belong when implemented.
void ApplyDcwBands(const DcwAdvanced& adv, const DcwConfig& cfg, float t, float* x,
                   const float* den, int frames) {
  constexpr float kInvSqrt2 = 0.70710678118654752f;
  HaarScalers h;
  BandScalers(cfg, t, &h);
  const int bands = (frames + 1) / 2;
  for (int k = 0; k < bands; ++k) {
    const float sl = h.sl(k, bands);
    const float sh = h.sh(k, bands);
    const int a = 2 * k;
    const int b = 2 * k + 1;
    float* xa = x + static_cast<long>(a) * D;
    const float* ya = den + static_cast<long>(a) * D;
    float* xb = b < frames ? x + static_cast<long>(b) * D : nullptr;
    const float* yb = b < frames ? den + static_cast<long>(b) * D : nullptr;
    for (int c = 0; c < D; ++c) {
      const float da = xa[c] - ya[c];
      const float db = xb ? xb[c] - yb[c] : 0.f;
      const float dl = SoftThreshold((da + db) * kInvSqrt2, adv.soft_thresh);
      const float dh = SoftThreshold((da - db) * kInvSqrt2, adv.soft_thresh);
      const float delta_l = sl * dl;  // x_L += s_L·diff_L
      const float delta_h = sh * dh;
      xa[c] += (delta_l + delta_h) * kInvSqrt2;
      if (xb) xb[c] += (delta_l - delta_h) * kInvSqrt2;
    }
  }
}

}  // namespace dcw_detail

void ValidateDcw(const DcwConfig& cfg) {
  if (cfg.wavelet != Wavelet::kHaar) Fail(Status::kUnsupported, "dcw: only the haar wavelet");
  if (cfg.advanced.mult_blend != 0.f)
    Fail(Status::kUnsupported, "dcw: advanced.mult_blend is not implemented");
  if (cfg.advanced.mag_phase != 0.f)
    Fail(Status::kUnsupported, "dcw: advanced.mag_phase is not implemented");
  if (cfg.advanced.soft_thresh < 0.f)
    Fail(Status::kInvalidArgument, "dcw: soft_thresh must be >= 0");
}

bool DcwActive(const DcwConfig& cfg) {
  if (!cfg.enabled) return false;
  switch (cfg.mode) {
    case DcwMode::kDouble: return cfg.scaler.any_nonzero() || cfg.high_scaler.any_nonzero();
    case DcwMode::kLow:
    case DcwMode::kHigh:
    case DcwMode::kPix: return cfg.scaler.any_nonzero();
  }
  return false;
}

void ApplyDcw(const DcwConfig& cfg, float t, float* x, const float* denoised, int frames) {
  if (!DcwActive(cfg)) return;
  constexpr int D = kLatentDim;
  if (cfg.mode == DcwMode::kPix) {
    for (int f = 0; f < frames; ++f) {
      const float s = cfg.scaler.resampled(f, frames);
      float* xf = x + static_cast<long>(f) * D;
      const float* yf = denoised + static_cast<long>(f) * D;
      for (int c = 0; c < D; ++c) xf[c] += s * (xf[c] - yf[c]);
    }
    return;
  }
  HaarScalers h;
  if (PlanHaarClosedForm(cfg, t, &h)) {
    dcw_detail::HaarClosedForm(h, x, denoised, frames);
    return;
  }
  dcw_detail::ApplyDcwBands(cfg.advanced, cfg, t, x, denoised, frames);
}

bool PlanHaarClosedForm(const DcwConfig& cfg, float t, HaarScalers* out) {
  if (!DcwActive(cfg) || cfg.mode == DcwMode::kPix || cfg.advanced.soft_thresh != 0.f) return false;
  dcw_detail::BandScalers(cfg, t, out);
  return true;
}

}  // namespace pipe
}  // namespace dm

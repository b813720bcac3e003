// Per-frame knobs ("curves", spec/engine.md §4 notation): a value that is either unset, one
// scalar for every frame, or one value per latent frame [T]. Batch is always 1 per request,
// so DEMON's [B,T] / [B,T,1] shapes collapse to [T]; all products broadcast over channels.
#pragma once

#include <cmath>

namespace dm {
namespace pipe {

struct Curve {
  int len = 0;                    // 0 = unset, 1 = scalar, >1 = one value per frame
  float value = 0.f;              // the scalar, when len == 1
  const float* frames = nullptr;  // [len], when len > 1 (caller memory, or pipeline storage)

  static Curve None() { return Curve{}; }
  static Curve Scalar(float v) {
    Curve c;
    c.len = 1;
    c.value = v;
    return c;
  }
  // A length-1 array is stored as a scalar; a null pointer or n <= 0 is "unset".
  static Curve Frames(const float* p, int n) {
    if (p == nullptr || n <= 0) return None();
    if (n == 1) return Scalar(p[0]);
    Curve c;
    c.len = n;
    c.frames = p;
    return c;
  }

  bool set() const { return len > 0; }
  // Value at frame t (t < len when per-frame). Unset curves read as 0; callers apply defaults.
  float at(int t) const { return len > 1 ? frames[t] : value; }
  float at_or(int t, float dflt) const { return len == 0 ? dflt : at(t); }
  bool any_nonzero() const {
    if (len == 0) return false;
    if (len == 1) return value != 0.f;
    for (int i = 0; i < len; ++i)
      if (frames[i] != 0.f) return true;
    return false;
  }
  // Value at index k of the curve linearly resampled to n_out points, like
  // torch.nn.functional.interpolate(mode="linear", align_corners=False). len == n_out is exact.
  float resampled(int k, int n_out) const {
    if (len <= 1) return value;
    if (len == n_out) return frames[k];
    double scale = static_cast<double>(len) / n_out;
    double src = scale * (k + 0.5) - 0.5;
    if (src < 0) src = 0;
    int i0 = static_cast<int>(src);
    if (i0 > len - 1) i0 = len - 1;
    int i1 = i0 + 1 < len ? i0 + 1 : len - 1;
    double lambda = src - i0;
    return static_cast<float>((1.0 - lambda) * frames[i0] + lambda * frames[i1]);
  }
};

}  // namespace pipe
}  // namespace dm

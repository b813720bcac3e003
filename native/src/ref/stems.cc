#include "ref/stems.h"

#include <algorithm>
#include <cmath>

#include "core/constants.h"
#include "core/error.h"

namespace dm {
namespace ref {

namespace stems_detail {
constexpr double kHighPassHz = 150.0;
constexpr double kLowPassHz = 4000.0;
constexpr double kTwoPi = 6.283185307179586;

// Returns (v, i) with v + i == x exactly in float32 and v as close to `want` as that allows.
// Where x is much smaller than want (near zero crossings of the mix) an exact split with
// |v| >> |x| is impossible in float32, so v is limited to [min(0,x), max(0,x)] there.
inline void ExactSplit(float x, float want, float* v, float* i) {
  if (x == 0.0f || !std::isfinite(x)) {  // ±0 + ±0 keeps the sign of zero
    *v = x == 0.0f ? x : -0.0f;
    *i = x;
    return;
  }
  {
    const volatile float inst = x - want;  // volatile: keep float32 rounding explicit
    const volatile float voc = x - inst;
    const volatile float sum = voc + inst;
    if (sum == x && std::isfinite(voc) && std::isfinite(inst)) {
      *v = voc;
      *i = inst;
      return;
    }
  }
  // v on the grid of ulp(x), same sign as x and no larger: then x - v is exact.
  const double ulp = std::ldexp(1.0, std::max(std::ilogb(x), -126) - 23);
  const double lo = std::min(0.0, static_cast<double>(x)),
               hi = std::max(0.0, static_cast<double>(x));
  const double vq = std::trunc(std::min(hi, std::max(lo, static_cast<double>(want))) / ulp) * ulp;
  const volatile float voc = static_cast<float>(vq);
  const volatile float inst = x - voc;
  const volatile float sum = voc + inst;
  if (sum == x) {
    *v = voc;
    *i = inst;
  } else {
    *v = -0.0f;  // -0 + x == x for every x
    *i = x;
  }
}
}  // namespace stems_detail

void SeparateStems(const float* audio, long samples, float* vocals, float* instruments) {
  if (samples < 0 || (samples > 0 && (!audio || !vocals || !instruments)))
    Fail(Status::kInvalidArgument, "separate stems: bad arguments (S=%ld)", samples);
  const double a_hp = 1.0 / (1.0 + stems_detail::kTwoPi * stems_detail::kHighPassHz / kSampleRate);
  const double b_lp =
      1.0 - std::exp(-stems_detail::kTwoPi * stems_detail::kLowPassHz / kSampleRate);
  double hp = 0.0, prev = 0.0, lp = 0.0;
  const float* left = audio;
  const float* right = audio + samples;
  for (long n = 0; n < samples; ++n) {
    const double mid = 0.5 * (static_cast<double>(left[n]) + static_cast<double>(right[n]));
    hp = a_hp * (hp + mid - prev);
    prev = mid;
    lp += b_lp * (hp - lp);
    const float want = std::isfinite(lp) ? static_cast<float>(lp) : 0.0f;
    stems_detail::ExactSplit(left[n], want, vocals + n, instruments + n);
    stems_detail::ExactSplit(right[n], want, vocals + samples + n, instruments + samples + n);
  }
}

}  // namespace ref
}  // namespace dm

#include "pipeline/schedule.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/bf16.h"
#include "core/error.h"

namespace dm {
namespace pipe {
namespace schedule_detail {

void Validate(int steps, float shift, float denoise) {
  if (steps < 1) Fail(Status::kInvalidArgument, "schedule: steps %d < 1", steps);
  if (!(shift > 0.f) || !std::isfinite(shift))
    Fail(Status::kInvalidArgument, "schedule: shift %g must be > 0", static_cast<double>(shift));
  if (!std::isfinite(denoise)) Fail(Status::kInvalidArgument, "schedule: denoise is not finite");
}

// t0 = 1 for denoise >= 1, else S / floor(S / d) (Python float math, i.e. double).
double StartTime(int steps, float denoise) {
  if (denoise >= 1.f) return 1.0;
  return static_cast<double>(steps) / std::floor(static_cast<double>(steps) / denoise);
}

// One arithmetic policy: identity for fp32, bf16 rounding after every op for the emulation.
template <bool kBf16>
float R(float x) {
  if constexpr (kBf16) {
    return RoundBf16(x);
  } else {
    return x;
  }
}

// torch.linspace(start, 0, n) then the shift map, each op rounded through R.
// torch's CPU kernel: step = (end-start)/(n-1); first half start + i*step, second half
// end - (n-1-i)*step.
template <bool kBf16>
int Build(int steps, float shift, float denoise, float* out) {
  Validate(steps, shift, denoise);
  if (denoise <= 1e-6f) {
    out[0] = 0.f;
    out[1] = 0.f;
    return 2;
  }
  const int n = steps + 1;
  const float start = R<kBf16>(static_cast<float>(StartTime(steps, denoise)));
  const float end = 0.f;
  const float step = (end - start) / static_cast<float>(steps);  // accumulate type (fp32)
  const int half = n / 2;
  for (int i = 0; i < n; ++i) {
    float v = i < half ? start + step * static_cast<float>(i)
                       : end - step * static_cast<float>(n - 1 - i);
    out[i] = R<kBf16>(v);
  }
  if (shift != 1.f) {
    const float s = R<kBf16>(shift);
    const float sm1 = R<kBf16>(s - 1.f);
    for (int i = 0; i < n; ++i) {
      const float t = out[i];
      const float num = R<kBf16>(s * t);
      const float den = R<kBf16>(1.f + R<kBf16>(sm1 * t));
      out[i] = R<kBf16>(num / den);
    }
  }
  return n;
}

}  // namespace schedule_detail

float RoundBf16(float x) { return dm::RoundBf16(x); }

int BuildScheduleInto(int steps, float shift, float denoise, float* out) {
  return schedule_detail::Build<false>(steps, shift, denoise, out);
}

int BuildScheduleBf16Into(int steps, float shift, float denoise, float* out) {
  return schedule_detail::Build<true>(steps, shift, denoise, out);
}

std::vector<float> BuildSchedule(int steps, float shift, float denoise) {
  schedule_detail::Validate(steps, shift, denoise);
  std::vector<float> out(static_cast<size_t>(ScheduleCapacity(steps)));
  out.resize(static_cast<size_t>(BuildScheduleInto(steps, shift, denoise, out.data())));
  return out;
}

std::vector<float> BuildScheduleBf16(int steps, float shift, float denoise) {
  schedule_detail::Validate(steps, shift, denoise);
  std::vector<float> out(static_cast<size_t>(ScheduleCapacity(steps)));
  out.resize(static_cast<size_t>(BuildScheduleBf16Into(steps, shift, denoise, out.data())));
  return out;
}

}  // namespace pipe
}  // namespace dm

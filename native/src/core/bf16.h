// bfloat16 <-> float32, as torch and TensorRT convert them: the top 16 bits of the float32,
// rounded to nearest, ties to even. NaN stays NaN (quieted); values past the largest bf16
// round to infinity. Shared by the schedule emulation (pipeline/schedule.h) and engines whose
// I/O tensors are bf16 (engine/cpu_ref_engines.cc).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace dm {

inline uint16_t Bf16FromFloat(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // keep sign, quiet
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float FloatFromBf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// x rounded to the nearest bf16 value, as a float32.
inline float RoundBf16(float x) { return std::isnan(x) ? x : FloatFromBf16(Bf16FromFloat(x)); }

inline void Bf16FromFloats(const float* src, size_t n, uint16_t* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = Bf16FromFloat(src[i]);
}

inline void FloatsFromBf16(const uint16_t* src, size_t n, float* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = FloatFromBf16(src[i]);
}

}  // namespace dm

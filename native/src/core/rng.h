// Counter-based random numbers: value i of stream (seed, stream) is a pure function of
// (seed, stream, i), so any slice of a noise tensor can be produced independently and the
// same seed always gives the same audio (spec/engine.md §4.11: demon defines its own RNG).
#pragma once

#include <cmath>
#include <cstdint>

namespace dm {

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in (0, 1): 53 random bits, never exactly 0.
inline double CounterUniform(uint64_t seed, uint64_t stream, uint64_t i) {
  uint64_t h = SplitMix64(seed ^ SplitMix64(stream ^ SplitMix64(i)));
  return (static_cast<double>(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// Standard normal via Box-Muller over two counter uniforms.
inline float CounterNormal(uint64_t seed, uint64_t stream, uint64_t i) {
  double u1 = CounterUniform(seed, stream, 2 * i);
  double u2 = CounterUniform(seed, stream, 2 * i + 1);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

// Fills out[0..n) with N(0,1) values i0..i0+n of the stream.
inline void FillNormal(float* out, long n, uint64_t seed, uint64_t stream, uint64_t i0 = 0) {
  for (long k = 0; k < n; ++k) out[k] = CounterNormal(seed, stream, i0 + static_cast<uint64_t>(k));
}

}  // namespace dm

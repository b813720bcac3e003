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

// Standard normals come in Box-Muller pairs: pair k uses uniforms (2k, 2k+1) and gives
// value 2k = r·cos(θ) and value 2k+1 = r·sin(θ). CounterNormal computes one value;
// FillNormal computes both values of each pair at once (half the transcendental work) and
// returns exactly what CounterNormal would for every index.
inline void CounterNormalPair(uint64_t seed, uint64_t stream, uint64_t k, float* even, float* odd) {
  double u1 = CounterUniform(seed, stream, 2 * k);
  double u2 = CounterUniform(seed, stream, 2 * k + 1);
  double r = std::sqrt(-2.0 * std::log(u1));
  double th = 6.283185307179586 * u2;
  *even = static_cast<float>(r * std::cos(th));
  *odd = static_cast<float>(r * std::sin(th));
}

inline float CounterNormal(uint64_t seed, uint64_t stream, uint64_t i) {
  float e, o;
  CounterNormalPair(seed, stream, i / 2, &e, &o);
  return (i % 2 == 0) ? e : o;
}

// Fills out[0..n) with N(0,1) values i0..i0+n of the stream.
inline void FillNormal(float* out, long n, uint64_t seed, uint64_t stream, uint64_t i0 = 0) {
  long k = 0;
  if (n > 0 && i0 % 2 == 1) {
    out[k++] = CounterNormal(seed, stream, i0);
  }
  for (; k + 1 < n; k += 2) {
    CounterNormalPair(seed, stream, (i0 + static_cast<uint64_t>(k)) / 2, &out[k], &out[k + 1]);
  }
  if (k < n) out[k] = CounterNormal(seed, stream, i0 + static_cast<uint64_t>(k));
}

}  // namespace dm

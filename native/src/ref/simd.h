// Portable 8-lane float vectors (GCC/Clang vector extensions) for the reference kernels.
//
// Kernels are written once as always_inline bodies over V8 and instantiated twice: in a
// function compiled with target("avx2,fma") and in a plain x86-64 one (where GCC lowers V8
// to SSE pairs). HasAvx2Fma() picks at run time, so no -march flag is needed globally.
#pragma once

#include <cstdint>

// V8 values are only passed between always_inline functions, never across an ABI boundary,
// so the AVX-ABI note GCC emits for the generic instantiations is noise. (Template bodies are
// instantiated at the end of the translation unit, hence no push/pop here.)
#pragma GCC diagnostic ignored "-Wpsabi"

namespace dm {
namespace ref {
namespace simd {

typedef float V8 __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));

inline __attribute__((always_inline)) V8 Load8(const float* p) {
  V8 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

inline __attribute__((always_inline)) void Store8(float* p, const V8& v) {
  __builtin_memcpy(p, &v, sizeof v);
}

inline __attribute__((always_inline)) V8 Splat8(float x) {
  return __builtin_shuffle(V8{x}, V8i{});  // vbroadcastss
}

inline __attribute__((always_inline)) float HSum8(const V8& v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// Max over lanes via a shuffle tree (no scalar dependency chain).
inline __attribute__((always_inline)) float HMax8(const V8& in) {
  V8 v = in;
  V8 w = __builtin_shuffle(v, V8i{4, 5, 6, 7, 0, 1, 2, 3});
  v = v > w ? v : w;
  w = __builtin_shuffle(v, V8i{2, 3, 0, 1, 6, 7, 4, 5});
  v = v > w ? v : w;
  w = __builtin_shuffle(v, V8i{1, 0, 3, 2, 5, 4, 7, 6});
  v = v > w ? v : w;
  return v[0];
}

// 2^x for x <= 0 (inputs above 0 are clamped to 0); exactly 0 below -126 and for -inf.
// Relative error ~2e-7 (degree-6 polynomial on [-0.5, 0.5]).
inline __attribute__((always_inline)) V8 Exp2NonPos8(const V8& x) {
  const V8 zero = Splat8(0.0f);
  V8 xc = x > zero ? zero : x;
  xc = xc < Splat8(-126.0f) ? Splat8(-126.0f) : xc;
  const V8i ji = __builtin_convertvector(xc - Splat8(0.5f), V8i);  // trunc toward 0
  const V8 f = xc - __builtin_convertvector(ji, V8);               // in [-0.5, 0.5]
  const V8 y = f * Splat8(0.6931471805599453f);
  V8 p = Splat8(1.0f / 720.0f);
  p = p * y + Splat8(1.0f / 120.0f);
  p = p * y + Splat8(1.0f / 24.0f);
  p = p * y + Splat8(1.0f / 6.0f);
  p = p * y + Splat8(0.5f);
  p = p * y + Splat8(1.0f);
  p = p * y + Splat8(1.0f);
  const V8i bits = (V8i)p + (ji << 23);
  const V8 r = (V8)bits;
  return x < Splat8(-126.0f) ? zero : r;
}

// True when the CPU has AVX2 and FMA (checked once) and the generic path is not forced.
bool HasAvx2Fma();
// Tests only: force the baseline x86-64 kernels (true) or return to auto-detection.
void ForceGenericKernelsForTesting(bool force);

}  // namespace simd
}  // namespace ref
}  // namespace dm

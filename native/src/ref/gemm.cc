#include "ref/gemm.h"

#include <algorithm>
#include <atomic>

#include "ref/simd.h"

namespace dm {
namespace ref {

namespace simd {
namespace {
std::atomic<bool> g_force_generic{false};
}  // namespace
bool HasAvx2Fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has && !g_force_generic.load(std::memory_order_relaxed);
}
void ForceGenericKernelsForTesting(bool force) { g_force_generic.store(force); }
}  // namespace simd

namespace gemm_detail {

using simd::Load8;
using simd::Splat8;
using simd::Store8;
using simd::V8;

constexpr int kMr = 6;    // rows per micro-tile
constexpr int kKc = 256;  // k-block: a 6x256 A strip and a 256x16 B panel stay in L1/L2
constexpr int kNc = 256;  // n-block

// MR rows x NV*8 columns, k in [0,K): C tile (+)= A·B (+bias on the first k-block).
template <int MR, int NV>
inline __attribute__((always_inline)) void MicroTile(int K, const float* A, long lda,
                                                     const float* B, long ldb, float* C, long ldc,
                                                     const float* bias, bool load_c) {
  V8 acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[r][v] = load_c ? Load8(C + r * ldc + 8 * v) : Splat8(0.0f);
  for (int k = 0; k < K; ++k) {
    V8 b[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) b[v] = Load8(B + k * ldb + 8 * v);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const V8 a = Splat8(A[r * lda + k]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  if (bias != nullptr)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] += Load8(bias + 8 * v);
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) Store8(C + r * ldc + 8 * v, acc[r][v]);
}

// Scalar columns (fewer than 8 left).
inline __attribute__((always_inline)) void ScalarTile(int mr, int nr, int K, const float* A,
                                                      long lda, const float* B, long ldb, float* C,
                                                      long ldc, const float* bias, bool load_c) {
  for (int r = 0; r < mr; ++r) {
    for (int c = 0; c < nr; ++c) {
      float s = load_c ? C[r * ldc + c] : 0.0f;
      for (int k = 0; k < K; ++k) s += A[r * lda + k] * B[k * ldb + c];
      if (bias != nullptr) s += bias[c];
      C[r * ldc + c] = s;
    }
  }
}

template <int NV>
inline __attribute__((always_inline)) void RowTile(int mr, int K, const float* A, long lda,
                                                   const float* B, long ldb, float* C, long ldc,
                                                   const float* bias, bool load_c) {
  switch (mr) {
    case 6: MicroTile<6, NV>(K, A, lda, B, ldb, C, ldc, bias, load_c); break;
    case 5: MicroTile<5, NV>(K, A, lda, B, ldb, C, ldc, bias, load_c); break;
    case 4: MicroTile<4, NV>(K, A, lda, B, ldb, C, ldc, bias, load_c); break;
    case 3: MicroTile<3, NV>(K, A, lda, B, ldb, C, ldc, bias, load_c); break;
    case 2: MicroTile<2, NV>(K, A, lda, B, ldb, C, ldc, bias, load_c); break;
    default: MicroTile<1, NV>(K, A, lda, B, ldb, C, ldc, bias, load_c); break;
  }
}

inline __attribute__((always_inline)) void GemmBody(int M, int N, int K, const float* A, long lda,
                                                    const float* B, long ldb, float* C, long ldc,
                                                    const float* bias, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        float s = accumulate ? C[i * ldc + j] : 0.0f;
        C[i * ldc + j] = bias != nullptr ? s + bias[j] : s;
      }
    return;
  }
  for (int j0 = 0; j0 < N; j0 += kNc) {
    const int nc = std::min(kNc, N - j0);
    for (int k0 = 0; k0 < K; k0 += kKc) {
      const int kc = std::min(kKc, K - k0);
      const bool load_c = accumulate || k0 > 0;
      const float* bias_k = k0 + kc >= K ? bias : nullptr;  // add bias once, at the end
      const float* Bk = B + static_cast<long>(k0) * ldb;
      for (int i0 = 0; i0 < M; i0 += kMr) {
        const int mr = std::min(kMr, M - i0);
        const float* Ai = A + static_cast<long>(i0) * lda + k0;
        float* Ci = C + static_cast<long>(i0) * ldc;
        int j = j0;
        for (; j + 16 <= j0 + nc; j += 16)
          RowTile<2>(mr, kc, Ai, lda, Bk + j, ldb, Ci + j, ldc, bias_k ? bias_k + j : nullptr,
                     load_c);
        for (; j + 8 <= j0 + nc; j += 8)
          RowTile<1>(mr, kc, Ai, lda, Bk + j, ldb, Ci + j, ldc, bias_k ? bias_k + j : nullptr,
                     load_c);
        if (j < j0 + nc)
          ScalarTile(mr, j0 + nc - j, kc, Ai, lda, Bk + j, ldb, Ci + j, ldc,
                     bias_k ? bias_k + j : nullptr, load_c);
      }
    }
  }
}

__attribute__((target("avx2,fma"))) void GemmAvx2(int M, int N, int K, const float* A, long lda,
                                                  const float* B, long ldb, float* C, long ldc,
                                                  const float* bias, bool accumulate) {
  GemmBody(M, N, K, A, lda, B, ldb, C, ldc, bias, accumulate);
}

void GemmGeneric(int M, int N, int K, const float* A, long lda, const float* B, long ldb, float* C,
                 long ldc, const float* bias, bool accumulate) {
  GemmBody(M, N, K, A, lda, B, ldb, C, ldc, bias, accumulate);
}

struct GemmJob {
  int M, N, K;
  const float* A;
  long lda;
  const float* B;
  long ldb;
  float* C;
  long ldc;
  const float* bias;
  bool accumulate;
  int row_block;
  void Run(int i) const {
    const int r0 = i * row_block;
    const int rows = std::min(row_block, M - r0);
    Gemm(rows, N, K, A + static_cast<long>(r0) * lda, lda, B, ldb, C + static_cast<long>(r0) * ldc,
         ldc, bias, accumulate);
  }
};

}  // namespace gemm_detail

void Gemm(int M, int N, int K, const float* A, long lda, const float* B, long ldb, float* C,
          long ldc, const float* bias, bool accumulate) {
  if (simd::HasAvx2Fma())
    gemm_detail::GemmAvx2(M, N, K, A, lda, B, ldb, C, ldc, bias, accumulate);
  else
    gemm_detail::GemmGeneric(M, N, K, A, lda, B, ldb, C, ldc, bias, accumulate);
}

void ParallelGemm(Parallel& par, int M, int N, int K, const float* A, long lda, const float* B,
                  long ldb, float* C, long ldc, const float* bias, bool accumulate, int row_block) {
  if (M <= 0) return;
  if (row_block < 1) row_block = 48;
  const gemm_detail::GemmJob job{M, N, K, A, lda, B, ldb, C, ldc, bias, accumulate, row_block};
  const int blocks = (M + row_block - 1) / row_block;
  par.For(blocks, [&job](int i) { job.Run(i); });
}

const char* GemmKernelName() { return simd::HasAvx2Fma() ? "avx2+fma" : "generic"; }

}  // namespace ref
}  // namespace dm

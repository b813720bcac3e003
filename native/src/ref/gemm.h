// Cache-blocked fp32 matrix multiply for the reference backend (row-major, any strides).
#pragma once

#include "ref/velocity_model.h"

namespace dm {
namespace ref {

// C[M,N] = (accumulate ? C : 0) + A[M,K] · B[K,N] (+ bias[N] when bias != nullptr).
// Row-major with leading dimensions lda/ldb/ldc (in elements). Single-threaded; each output
// element is summed in k order, so results do not depend on how rows are split.
void Gemm(int M, int N, int K, const float* A, long lda, const float* B, long ldb, float* C,
          long ldc, const float* bias, bool accumulate);

// Same, with rows split over par in blocks of row_block rows (a multiple of 6 works best).
// Bitwise identical to Gemm() for any worker count. Does not allocate.
void ParallelGemm(Parallel& par, int M, int N, int K, const float* A, long lda, const float* B,
                  long ldb, float* C, long ldc, const float* bias, bool accumulate,
                  int row_block = 48);

// "avx2+fma" or "generic": which kernel Gemm() runs on this CPU.
const char* GemmKernelName();

}  // namespace ref
}  // namespace dm

#include <gtest/gtest.h>

#include <vector>

#include "core/rng.h"
#include "ref/gemm.h"
#include "ref/thread_pool.h"

namespace dm {
namespace ref {
namespace {

TEST(RefGemm, MatchesNaiveOnOddShapes) {
  ThreadPool pool(2);
  for (int M : {1, 5, 6, 7, 50}) {
    for (int N : {1, 7, 8, 15, 16, 17, 40, 300}) {
      for (int K : {1, 3, 64, 300}) {
        const long lda = K + 3, ldb = N + 5, ldc = N + 2;
        std::vector<float> A(M * lda), B(K * ldb), bias(N), C(M * ldc), C2;
        FillNormal(A.data(), static_cast<long>(A.size()), M, 1);
        FillNormal(B.data(), static_cast<long>(B.size()), N, 2);
        FillNormal(bias.data(), N, K, 3);
        FillNormal(C.data(), static_cast<long>(C.size()), 4, 4);
        C2 = C;
        for (bool acc : {false, true}) {
          std::vector<float> want = C;
          for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j) {
              double s = acc ? C[i * ldc + j] : 0.0;
              for (int k = 0; k < K; ++k) s += static_cast<double>(A[i * lda + k]) * B[k * ldb + j];
              want[i * ldc + j] = static_cast<float>(s + bias[j]);
            }
          std::vector<float> got = C, got2 = C;
          Gemm(M, N, K, A.data(), lda, B.data(), ldb, got.data(), ldc, bias.data(), acc);
          ParallelGemm(pool, M, N, K, A.data(), lda, B.data(), ldb, got2.data(), ldc, bias.data(),
                       acc, 6);
          for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j) {
              ASSERT_NEAR(got[i * ldc + j], want[i * ldc + j], 1e-3) << M << "x" << N << "x" << K;
              ASSERT_EQ(got[i * ldc + j], got2[i * ldc + j]);  // split-invariant
            }
          // padding columns untouched
          for (int i = 0; i < M; ++i)
            for (long j = N; j < ldc; ++j) ASSERT_EQ(got[i * ldc + j], C[i * ldc + j]);
        }
      }
    }
  }
}

}  // namespace
}  // namespace ref
}  // namespace dm

#include <gtest/gtest.h>

#include <vector>

#include "core/constants.h"
#include "core/rng.h"
#include "ref/oracle.h"

namespace dm {
namespace ref {
namespace {

TEST(RefOracle, ClosedForm) {
  const int B = 2, T = 7, L = 33;
  std::vector<float> x(B * T * 64), ctx(B * T * 128), enc(static_cast<size_t>(B) * L * 2048),
      v(x.size());
  FillNormal(x.data(), static_cast<long>(x.size()), 5, 1);
  FillNormal(ctx.data(), static_cast<long>(ctx.size()), 5, 2);
  FillNormal(enc.data(), static_cast<long>(enc.size()), 5, 3);
  const float ts[B] = {0.5f, 0.0f};
  DecoderInputs in;
  in.batch = B;
  in.frames = T;
  in.cond_len = L;
  in.hidden_states = x.data();
  in.timestep = ts;
  in.encoder_hidden_states = enc.data();
  in.context_latents = ctx.data();
  OracleDecoder o;
  SerialParallel par;
  EXPECT_EQ(o.ScratchBytes(B, T, L), 0u);
  o.Forward(in, v.data(), nullptr, par);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < 64; ++c) {
        double mean = 0;
        for (int l = 0; l < L; ++l) mean += enc[(static_cast<size_t>(b) * L + l) * 2048 + c];
        mean /= L;
        const double C = ctx[(b * T + t) * 128 + c] + 0.1 * mean;
        const double want = (x[(b * T + t) * 64 + c] - C) / std::max(ts[b], 1e-4f);
        const double got = v[(b * T + t) * 64 + c];
        EXPECT_NEAR(got, want, 1e-6 / std::max(ts[b], 1e-4f) + 1e-5 * std::abs(want))
            << b << " " << t << " " << c;
        EXPECT_NEAR(OracleDecoder::Target(in, b, t, c), C, 1e-5);
      }
  // One Euler step from the flow path x_t = t n + (1-t) C lands on x_t'.
  const float t0 = 0.8f, t1 = 0.3f;
  std::vector<float> xt(x.size()), n(x.size());
  FillNormal(n.data(), static_cast<long>(n.size()), 9, 9);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < 64; ++c) {
        const size_t i = (b * T + t) * 64 + c;
        xt[i] = t0 * n[i] + (1 - t0) * OracleDecoder::Target(in, b, t, c);
      }
  const float tsb[B] = {t0, t0};
  in.hidden_states = xt.data();
  in.timestep = tsb;
  o.Forward(in, v.data(), nullptr, par);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < 64; ++c) {
        const size_t i = (b * T + t) * 64 + c;
        const float next = xt[i] + (t1 - t0) * v[i];
        EXPECT_NEAR(next, t1 * n[i] + (1 - t1) * OracleDecoder::Target(in, b, t, c), 1e-4);
      }
}

TEST(RefOracle, RejectsBadShapes) {
  OracleDecoder o;
  SerialParallel par;
  DecoderInputs in;
  float v[64];
  EXPECT_THROW(o.Forward(in, v, nullptr, par), std::exception);
}

}  // namespace
}  // namespace ref
}  // namespace dm

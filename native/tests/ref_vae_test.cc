#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/constants.h"
#include "core/rng.h"
#include "ref/semantic.h"
#include "ref/vae.h"

namespace dm {
namespace ref {
namespace {

std::vector<float> RandomLatents(int T, uint64_t seed) {  // [64, T]
  std::vector<float> z(static_cast<size_t>(64) * T);
  FillNormal(z.data(), static_cast<long>(z.size()), seed, 77);
  return z;
}

TEST(RefVae, EncodeDecodeIsIdentityOnLatents) {
  const RefVae vae;
  const int T = 60;
  const auto z = RandomLatents(T, 1);
  std::vector<float> audio(2L * kHop * T), moments(128L * T);
  vae.Decode(z.data(), T, audio.data());
  vae.Encode(audio.data(), static_cast<long>(kHop) * T, moments.data());
  double err = 0;
  for (int c = 0; c < 64; ++c)
    for (int k = 0; k < T; ++k) {
      err = std::max(err, static_cast<double>(std::fabs(moments[c * T + k] - z[c * T + k])));
      EXPECT_EQ(moments[(64 + c) * T + k], -20.0f);
    }
  EXPECT_LT(err, 1e-4);
  // Frame-major variant agrees.
  std::vector<float> tc(64L * T);
  vae.EncodeFrameMajor(audio.data(), static_cast<long>(kHop) * T, tc.data());
  for (int c = 0; c < 64; ++c)
    for (int k = 0; k < T; ++k) EXPECT_EQ(tc[k * 64 + c], moments[c * T + k]);
}

TEST(RefVae, DecodeEncodeIsIdempotentProjection) {
  const RefVae vae;
  const int T = 10;
  const long S = static_cast<long>(kHop) * T;
  std::vector<float> a(2 * S), m(128 * T), p1(2 * S), p2(2 * S), z(64 * T);
  FillNormal(a.data(), static_cast<long>(a.size()), 3, 3);
  for (float& v : a) v *= 0.3f;
  auto project = [&](const std::vector<float>& in, std::vector<float>& out) {
    vae.Encode(in.data(), S, m.data());
    std::memcpy(z.data(), m.data(), 64 * T * sizeof(float));
    vae.Decode(z.data(), T, out.data());
  };
  project(a, p1);
  project(p1, p2);
  double err = 0, norm_a = 0, norm_p = 0, dot_resid = 0;
  for (long i = 0; i < 2 * S; ++i) {
    err = std::max(err, static_cast<double>(std::fabs(p1[i] - p2[i])));
    norm_a += a[i] * a[i];
    norm_p += p1[i] * p1[i];
    dot_resid += (a[i] - p1[i]) * p1[i];  // residual ⟂ range (orthogonal projection)
  }
  EXPECT_LT(err, 1e-5);
  EXPECT_LT(norm_p, norm_a);
  EXPECT_LT(std::fabs(dot_resid), 1e-3 * norm_a);
}

TEST(RefVae, WindowedDecodeEqualsSliceOfFullDecodeBitwise) {
  const RefVae vae;
  const int T = 130, F = kWindowFrames, left = 8;
  const auto z = RandomLatents(T, 5);
  std::vector<float> full(2L * kHop * T), win(2L * kHop * F);
  vae.Decode(z.data(), T, full.data());
  const long S = static_cast<long>(kHop) * T, W = static_cast<long>(kHop) * F;
  for (int ks : {0, 3, 8, 60, 121, 125, 129}) {  // includes cyclic wrap at both ends
    int idx[F];
    for (int i = 0; i < F; ++i) idx[i] = ((ks - left + i) % T + T) % T;
    vae.DecodeFrames(z.data(), T, idx, F, win.data());
    for (int i = 0; i < F; ++i)
      for (int c = 0; c < 2; ++c)
        ASSERT_EQ(std::memcmp(win.data() + c * W + static_cast<long>(i) * kHop,
                              full.data() + c * S + static_cast<long>(idx[i]) * kHop,
                              kHop * sizeof(float)),
                  0)
            << "ks=" << ks << " i=" << i << " c=" << c;
  }
  // DecodeFrame primitive: channel-major within a frame.
  float zf[64], out[2 * kHop];
  for (int c = 0; c < 64; ++c) zf[c] = z[c * T + 17];
  vae.DecodeFrame(zf, 17, out);
  EXPECT_EQ(std::memcmp(out, full.data() + 17L * kHop, kHop * 4), 0);
  EXPECT_EQ(std::memcmp(out + kHop, full.data() + S + 17L * kHop, kHop * 4), 0);
  int bad = T;
  EXPECT_THROW(vae.DecodeFrames(z.data(), T, &bad, 1, win.data()), std::exception);
}

TEST(RefVae, SilenceMapsToZeros) {
  const RefVae vae;
  const int T = 5;
  std::vector<float> z(64 * T, 0.0f), audio(2L * kHop * T, 1.0f), m(128 * T, 1.0f);
  vae.Decode(z.data(), T, audio.data());
  for (float v : audio) ASSERT_EQ(v, 0.0f);
  vae.Encode(audio.data(), static_cast<long>(kHop) * T, m.data());
  for (int i = 0; i < 64 * T; ++i) ASSERT_EQ(m[i], 0.0f);
}

TEST(RefVae, ConstantLatentIsContinuousMusic) {
  const RefVae vae;
  const int T = 20;
  std::vector<float> z(64 * T), audio(2L * kHop * T);
  float zc[64];
  FillNormal(zc, 64, 8, 8);
  for (int c = 0; c < 64; ++c)
    for (int k = 0; k < T; ++k) z[c * T + k] = zc[c];
  vae.Decode(z.data(), T, audio.data());
  const long S = static_cast<long>(kHop) * T;
  for (int ch = 0; ch < 2; ++ch) {
    const float* a = audio.data() + ch * S;
    double max_within = 0, max_boundary = 0;
    for (long n = 1; n < S; ++n) {
      const double jump = std::fabs(a[n] - a[n - 1]);
      if (n % kHop == 0)
        max_boundary = std::max(max_boundary, jump);
      else
        max_within = std::max(max_within, jump);
    }
    EXPECT_GT(max_within, 0.0);
    EXPECT_LE(max_boundary, max_within * 1.0001) << "click at a frame boundary";
    // Periodic: frame k == frame 0 (steady chord).
    for (int k = 1; k < T; ++k)
      ASSERT_EQ(std::memcmp(a + static_cast<long>(k) * kHop, a, kHop * 4), 0);
  }
  // Tonal, not noise: energy sits on the partial frequencies (25 Hz bins of the chord).
  EXPECT_EQ(vae.PartialHz(0), 75.0);
  EXPECT_EQ(vae.PartialHz(RefVae::kPartials - 1), 5400.0);
}

TEST(RefVae, AmplitudeOfNormalLatents) {
  const RefVae vae;
  const int T = 250;  // 10 s
  const auto z = RandomLatents(T, 21);
  std::vector<float> audio(2L * kHop * T);
  vae.Decode(z.data(), T, audio.data());
  double ss = 0, peak = 0;
  for (float v : audio) {
    ss += v * v;
    peak = std::max(peak, static_cast<double>(std::fabs(v)));
  }
  const double rms = std::sqrt(ss / audio.size());
  EXPECT_GT(rms, 0.12);
  EXPECT_LT(rms, 0.35);
  EXPECT_LT(peak, 1.2);
  std::printf("N(0,1) latents: rms %.3f peak %.3f\n", rms, peak);
}

TEST(RefSemantic, PoolRepeatCrop) {
  const int T = 12;
  std::vector<float> lat(T * 64), hints(T * 64), ctx(T * 128);
  for (int k = 0; k < T; ++k)
    for (int c = 0; c < 64; ++c) lat[k * 64 + c] = static_cast<float>(k * 100 + c);
  SemanticHints(lat.data(), T, hints.data());
  for (int k = 0; k < T; ++k) {
    const int g0 = k / 5 * 5, g1 = std::min(T, g0 + 5);
    for (int c = 0; c < 64; ++c) {
      double mean = 0;
      for (int j = g0; j < g1; ++j) mean += lat[j * 64 + c];
      mean /= (g1 - g0);
      EXPECT_NEAR(hints[k * 64 + c], mean, 1e-3);
    }
  }
  ContextLatents(hints.data(), T, ctx.data());
  for (int k = 0; k < T; ++k)
    for (int c = 0; c < 128; ++c) EXPECT_EQ(ctx[k * 128 + c], c < 64 ? hints[k * 64 + c] : 1.0f);
}

}  // namespace
}  // namespace ref
}  // namespace dm

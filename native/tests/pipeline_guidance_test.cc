// Guidance primitives (spec/engine.md §4.6) and DCW (§4.7) on synthetic inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/constants.h"
#include "core/error.h"
#include "core/rng.h"
#include "pipeline/dcw.h"
#include "pipeline/guidance.h"

namespace {

using dm::kLatentDim;
using dm::pipe::Curve;

constexpr int D = kLatentDim;

// [T,64] array with channel 0 set to `ch0` and every other channel 0.
std::vector<float> Channel0(const std::vector<float>& ch0) {
  std::vector<float> a(ch0.size() * D, 0.f);
  for (size_t t = 0; t < ch0.size(); ++t) a[t * D] = ch0[t];
  return a;
}

TEST(PipelineApg, ProjectionAndMomentumRecurrence) {
  // v_pos = [3,4] (‖·‖=5, u=[.6,.8]), v_neg = [2,6] → d = [1,−2] (‖d‖≈2.24 < 2.5: no clip).
  auto vp = Channel0({3, 4});
  auto vn = Channel0({2, 6});
  std::vector<float> R(vp.size(), 0.f), out(vp.size());
  // Step 1: R = d; Σ R·u = −1 → R_par = [−.6,−.8], R_orth = [1.6,−1.2]; g=3 → v = [6.2, 1.6].
  dm::pipe::ApgStep(vp.data(), vn.data(), 2, Curve::Scalar(3.f), Curve::None(), R.data(),
                    out.data());
  EXPECT_NEAR(R[0], 1.f, 1e-6);
  EXPECT_NEAR(R[D], -2.f, 1e-6);
  EXPECT_NEAR(out[0], 6.2f, 1e-5);
  EXPECT_NEAR(out[D], 1.6f, 1e-5);
  // Step 2, default m = −0.75: R = d − .75·d = [.25,−.5]; Σ R·u = −.25; R_orth = [.4,−.3];
  // v = [3.8, 3.4].
  dm::pipe::ApgStep(vp.data(), vn.data(), 2, Curve::Scalar(3.f), Curve::None(), R.data(),
                    out.data());
  EXPECT_NEAR(R[0], .25f, 1e-6);
  EXPECT_NEAR(R[D], -.5f, 1e-6);
  EXPECT_NEAR(out[0], 3.8f, 1e-5);
  EXPECT_NEAR(out[D], 3.4f, 1e-5);
  // Zero channels stay zero (u = 0, R = 0).
  for (int c = 1; c < D; ++c) EXPECT_EQ(out[c], 0.f);
}

TEST(PipelineApg, NormClipAndUnclippedRunningAverage) {
  // d = [10,−20], ‖d‖ = √500 → R' = d·2.5/√500 = [1.1180,−2.2361];
  // Σ R'·u = .6·1.1180 − .8·2.2361 = −1.1180 → R_orth = [1.7889,−1.3416]; g=2 → v = v_pos + R_orth.
  auto vp = Channel0({3, 4});
  auto vn = Channel0({-7, 24});
  std::vector<float> R(vp.size(), 0.f), out(vp.size());
  const double k = 2.5 / std::sqrt(500.0);
  const double r0 = 10 * k, r1 = -20 * k;
  const double par = .6 * r0 + .8 * r1;
  const double o0 = r0 - par * .6, o1 = r1 - par * .8;
  dm::pipe::ApgStep(vp.data(), vn.data(), 2, Curve::Scalar(2.f), Curve::Scalar(.5f), R.data(),
                    out.data());
  EXPECT_NEAR(out[0], 3 + o0, 1e-5);
  EXPECT_NEAR(out[D], 4 + o1, 1e-5);
  EXPECT_NEAR(o0, 1.78885, 1e-4);
  EXPECT_NEAR(o1, -1.34164, 1e-4);
  // The stored running average is the UNclipped R.
  EXPECT_NEAR(R[0], 10.f, 1e-6);
  EXPECT_NEAR(R[D], -20.f, 1e-6);
  // Step 2 with d = 0, m = .5: R = .5·[10,−20] = [5,−10] (from the unclipped value), clipped to
  // the same R' as step 1 → the same output. A clipped store would give R = [.56,−1.12] instead.
  dm::pipe::ApgStep(vp.data(), vp.data(), 2, Curve::Scalar(2.f), Curve::Scalar(.5f), R.data(),
                    out.data());
  EXPECT_NEAR(R[0], 5.f, 1e-6);
  EXPECT_NEAR(R[D], -10.f, 1e-6);
  EXPECT_NEAR(out[0], 3 + o0, 1e-5);
  EXPECT_NEAR(out[D], 4 + o1, 1e-5);
}

TEST(PipelineApg, GuidanceOneIsIdentityAndCurvesArePerFrame) {
  auto vp = Channel0({3, 4});
  auto vn = Channel0({2, 6});
  std::vector<float> R(vp.size(), 0.f), out(vp.size());
  dm::pipe::ApgStep(vp.data(), vn.data(), 2, Curve::Scalar(1.f), Curve::None(), R.data(),
                    out.data());
  EXPECT_EQ(out, vp);
  // Per-frame guidance [3, 1]: frame 0 guided, frame 1 untouched.
  std::fill(R.begin(), R.end(), 0.f);
  const float g[2] = {3.f, 1.f};
  dm::pipe::ApgStep(vp.data(), vn.data(), 2, Curve::Frames(g, 2), Curve::None(), R.data(),
                    out.data());
  EXPECT_NEAR(out[0], 6.2f, 1e-5);
  EXPECT_EQ(out[D], 4.f);
}

TEST(PipelineGuidance, CfgRescale) {
  // σ = ‖v_pos‖/‖v‖ = 5/10; r = .5 → v = .5·(v·σ) + .5·v = [4.5, 6].
  auto vp = Channel0({3, 4});
  auto v = Channel0({6, 8});
  dm::pipe::CfgRescale(v.data(), vp.data(), 2, Curve::Scalar(.5f));
  EXPECT_NEAR(v[0], 4.5f, 1e-6);
  EXPECT_NEAR(v[D], 6.f, 1e-6);
  auto w = Channel0({6, 8});
  dm::pipe::CfgRescale(w.data(), vp.data(), 2, Curve::None());  // unset: no-op
  EXPECT_EQ(w, Channel0({6, 8}));
  dm::pipe::CfgRescale(w.data(), vp.data(), 2, Curve::Scalar(1.f));  // full rescale
  EXPECT_NEAR(w[0], 3.f, 1e-6);
  EXPECT_NEAR(w[D], 4.f, 1e-6);
}

TEST(PipelineGuidance, BlendVelocities) {
  auto a = Channel0({1, 1, 1});
  auto b = Channel0({5, 5, 5});
  const float wa[3] = {1.f, 0.f, 0.f};
  const float wb[3] = {1.f, 2.f, 0.f};
  const float* v[2] = {a.data(), b.data()};
  Curve w[2] = {Curve::Frames(wa, 3), Curve::Frames(wb, 3)};
  std::vector<float> out(a.size());
  dm::pipe::BlendVelocities(v, w, 2, 3, out.data());
  EXPECT_NEAR(out[0], 3.f, 1e-6);  // (1+5)/2
  EXPECT_NEAR(out[D], 5.f, 1e-6);  // (0+10)/2
  EXPECT_EQ(out[2 * D], 0.f);      // Σw = 0 → divide by 1e-8 of a zero sum
  Curve unset[2];
  dm::pipe::BlendVelocities(v, unset, 2, 3, out.data());  // unset weights read 1
  EXPECT_NEAR(out[2 * D], 3.f, 1e-6);
}

// ---------------------------------------------------------------------------------------------
// DCW: closed form vs an explicit orthonormal haar DWT/IDWT (mode "zero", odd T padded).

void ReferenceDcw(const dm::pipe::DcwConfig& cfg, float t, std::vector<float>& x,
                  const std::vector<float>& y, int T) {
  const int Tb = (T + 1) / 2;
  const double s = std::sqrt(0.5);
  auto at = [&](const std::vector<float>& a, int f, int c) { return f < T ? a[f * D + c] : 0.f; };
  for (int c = 0; c < D; ++c) {
    for (int k = 0; k < Tb; ++k) {
      double xl = (at(x, 2 * k, c) + at(x, 2 * k + 1, c)) * s;
      double xh = (at(x, 2 * k, c) - at(x, 2 * k + 1, c)) * s;
      const double yl = (at(y, 2 * k, c) + at(y, 2 * k + 1, c)) * s;
      const double yh = (at(y, 2 * k, c) - at(y, 2 * k + 1, c)) * s;
      double sl = 0, sh = 0;
      const double base = cfg.scaler.resampled(k, Tb);
      if (cfg.mode == dm::pipe::DcwMode::kLow) sl = t * base;
      if (cfg.mode == dm::pipe::DcwMode::kHigh) sh = (1 - t) * base;
      if (cfg.mode == dm::pipe::DcwMode::kDouble) {
        sl = t * base;
        sh = (1 - t) * cfg.high_scaler.resampled(k, Tb);
      }
      auto soft = [&](double d) {
        const double m = std::fabs(d) - cfg.advanced.soft_thresh;
        return m > 0 ? std::copysign(m, d) : 0.0;
      };
      xl += sl * soft(xl - yl);
      xh += sh * soft(xh - yh);
      x[2 * k * D + c] = static_cast<float>((xl + xh) * s);
      if (2 * k + 1 < T) x[(2 * k + 1) * D + c] = static_cast<float>((xl - xh) * s);
    }
  }
}

std::vector<float> Noise(int T, uint64_t stream) {
  std::vector<float> a(static_cast<size_t>(T) * D);
  dm::FillNormal(a.data(), static_cast<long>(a.size()), 7, stream);
  return a;
}

TEST(PipelineDcw, HaarClosedFormMatchesGenericDwt) {
  for (int T : {8, 9, 2, 1}) {
    std::vector<float> curve_vals(static_cast<size_t>(T));
    for (int i = 0; i < T; ++i) curve_vals[static_cast<size_t>(i)] = 0.1f * (i + 1);
    for (auto mode :
         {dm::pipe::DcwMode::kLow, dm::pipe::DcwMode::kHigh, dm::pipe::DcwMode::kDouble}) {
      for (int use_curve = 0; use_curve < 2; ++use_curve) {
        for (float tau : {0.f, 0.3f}) {
          dm::pipe::DcwConfig cfg;
          cfg.mode = mode;
          cfg.scaler = use_curve ? Curve::Frames(curve_vals.data(), T) : Curve::Scalar(0.5f);
          cfg.high_scaler = Curve::Scalar(0.25f);
          cfg.advanced.soft_thresh = tau;
          auto x = Noise(T, 1), y = Noise(T, 2);
          auto ref = x;
          ReferenceDcw(cfg, 0.7f, ref, y, T);
          dm::pipe::ApplyDcw(cfg, 0.7f, x.data(), y.data(), T);
          for (size_t i = 0; i < x.size(); ++i)
            ASSERT_NEAR(x[i], ref[i], 1e-5) << "T=" << T << " mode=" << static_cast<int>(mode)
                                            << " curve=" << use_curve << " tau=" << tau;
        }
      }
    }
  }
}

TEST(PipelineDcw, HandComputedPairAndPix) {
  // T=2, one channel: x = [1, 0], denoised = [0, 0] → δ = [1, 0]; double, t=.5, scaler .2, high .4:
  // s_L = .1, s_H = .2 → x[0] += (.1·1 + .2·1)/2 = .15, x[1] += (.1 − .2)/2 = −.05.
  std::vector<float> x = Channel0({1, 0}), y = Channel0({0, 0});
  dm::pipe::DcwConfig cfg;
  cfg.scaler = Curve::Scalar(.2f);
  cfg.high_scaler = Curve::Scalar(.4f);
  dm::pipe::ApplyDcw(cfg, .5f, x.data(), y.data(), 2);
  EXPECT_NEAR(x[0], 1.15f, 1e-6);
  EXPECT_NEAR(x[D], -.05f, 1e-6);
  // pix: x += s·(x − denoised).
  cfg.mode = dm::pipe::DcwMode::kPix;
  x = Channel0({1, 2});
  y = Channel0({0, 1});
  dm::pipe::ApplyDcw(cfg, .5f, x.data(), y.data(), 2);
  EXPECT_NEAR(x[0], 1.2f, 1e-6);
  EXPECT_NEAR(x[D], 2.2f, 1e-6);
}

TEST(PipelineDcw, ActivityAndValidation) {
  dm::pipe::DcwConfig cfg;
  EXPECT_TRUE(dm::pipe::DcwActive(cfg));
  cfg.scaler = Curve::Scalar(0.f);
  EXPECT_TRUE(dm::pipe::DcwActive(cfg));  // double: high scaler still on
  cfg.high_scaler = Curve::Scalar(0.f);
  EXPECT_FALSE(dm::pipe::DcwActive(cfg));
  cfg = dm::pipe::DcwConfig{};
  cfg.enabled = false;
  EXPECT_FALSE(dm::pipe::DcwActive(cfg));
  auto x = Noise(4, 3), y = Noise(4, 4);
  auto before = x;
  dm::pipe::ApplyDcw(cfg, .5f, x.data(), y.data(), 4);
  EXPECT_EQ(x, before);
  cfg = dm::pipe::DcwConfig{};
  cfg.advanced.mult_blend = .5f;
  EXPECT_THROW(dm::pipe::ValidateDcw(cfg), dm::Error);
  cfg = dm::pipe::DcwConfig{};
  EXPECT_NO_THROW(dm::pipe::ValidateDcw(cfg));
}

TEST(PipelineDcw, CurveResampledToBandLength) {
  // align_corners=False linear: 4 → 2 points samples at 0.5 and 2.5.
  const float v[4] = {0, 1, 2, 3};
  Curve c = Curve::Frames(v, 4);
  EXPECT_FLOAT_EQ(c.resampled(0, 2), .5f);
  EXPECT_FLOAT_EQ(c.resampled(1, 2), 2.5f);
  // 5 → 3 (odd T): scale 5/3; k=0 → 1/3, k=2 → 3.666...
  const float w[5] = {0, 1, 2, 3, 4};
  Curve d = Curve::Frames(w, 5);
  EXPECT_NEAR(d.resampled(0, 3), 1.0 / 3, 1e-6);
  EXPECT_NEAR(d.resampled(1, 3), 2.0, 1e-6);
  EXPECT_NEAR(d.resampled(2, 3), 11.0 / 3, 1e-6);
}

}  // namespace

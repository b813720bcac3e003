#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
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

std::vector<float> Decoded(const RefVae& vae, const std::vector<float>& z, int T,
                           RefVae::Edge edge = RefVae::Edge::kReplicate) {
  std::vector<float> audio(2L * kHop * T);
  vae.Decode(z.data(), T, audio.data(), edge);
  return audio;
}

// Frame f (both channels) of planar audio [2, frames·1920] equals frame g of another, bit for bit.
bool SameFrame(const std::vector<float>& a, int a_frames, int f, const std::vector<float>& b,
               int b_frames, int g) {
  for (int c = 0; c < 2; ++c) {
    const float* x = a.data() + (static_cast<long>(c) * a_frames + f) * kHop;
    const float* y = b.data() + (static_cast<long>(c) * b_frames + g) * kHop;
    if (std::memcmp(x, y, kHop * sizeof(float)) != 0) return false;
  }
  return true;
}

// Encode ∘ Decode is the identity on every latent, steady or changing: the per-frame analysis
// followed by the block-tridiagonal deconvolution undoes the crossfade exactly. Short latents
// exercise the edge rows of the block LU before its factors converge.
TEST(RefVae, EncodeInvertsDecodeOnChangingLatents) {
  const RefVae vae;
  for (int T : {1, 2, 3, 7, 16, 17, 60}) {
    const auto z = RandomLatents(T, 1 + T);
    const auto audio = Decoded(vae, z, T);
    std::vector<float> moments(128L * T);
    vae.Encode(audio.data(), static_cast<long>(kHop) * T, moments.data());
    double err = 0;
    for (int c = 0; c < 64; ++c)
      for (int k = 0; k < T; ++k) {
        err = std::max(err, static_cast<double>(std::fabs(moments[c * T + k] - z[c * T + k])));
        ASSERT_EQ(moments[(64 + c) * T + k], -20.0f);
      }
    EXPECT_LT(err, 5e-5) << "T=" << T;
    if (T == 60) std::printf("encode(decode(z)) vs z, N(0,1) latents, T=60: max error %.2e\n", err);
    // Frame-major variant agrees bit for bit.
    std::vector<float> tc(64L * T);
    vae.EncodeFrameMajor(audio.data(), static_cast<long>(kHop) * T, tc.data());
    for (int c = 0; c < 64; ++c)
      for (int k = 0; k < T; ++k) ASSERT_EQ(tc[k * 64 + c], moments[c * T + k]);
  }
}

TEST(RefVae, EncodeIsExactForASteadyLatent) {
  const RefVae vae;
  const int T = 40;
  float zc[64];
  FillNormal(zc, 64, 4, 4);
  std::vector<float> z(64 * T);
  for (int c = 0; c < 64; ++c)
    for (int k = 0; k < T; ++k) z[c * T + k] = zc[c];
  const auto audio = Decoded(vae, z, T);
  std::vector<float> moments(128L * T);
  vae.Encode(audio.data(), static_cast<long>(kHop) * T, moments.data());
  for (int c = 0; c < 64; ++c)
    for (int k = 0; k < T; ++k) ASSERT_NEAR(moments[c * T + k], zc[c], 1e-5) << c << "," << k;
}

// Decode ∘ Encode projects audio onto what the decoder can say: idempotent (an oblique
// projection; the residual is exactly what the analysis cannot see), never amplifying.
TEST(RefVae, DecodeEncodeIsIdempotentProjection) {
  const RefVae vae;
  const int T = 10;
  const long S = static_cast<long>(kHop) * T;
  std::vector<float> a(2 * S), p1(2 * S), p2(2 * S), resid(2 * S), z1(64 * T), z2(64 * T),
      zr(64 * T);
  FillNormal(a.data(), static_cast<long>(a.size()), 3, 3);
  for (float& v : a) v *= 0.3f;
  vae.EncodeFrameMajor(a.data(), S, z1.data());
  std::vector<float> m(128 * T);
  vae.Encode(a.data(), S, m.data());
  vae.Decode(m.data(), T, p1.data());
  vae.EncodeFrameMajor(p1.data(), S, z2.data());
  vae.Encode(p1.data(), S, m.data());
  vae.Decode(m.data(), T, p2.data());
  double err = 0, norm_a = 0, norm_p = 0, dot_resid = 0;
  for (long i = 0; i < 2 * S; ++i) {
    err = std::max(err, static_cast<double>(std::fabs(p1[i] - p2[i])));
    norm_a += a[i] * a[i];
    norm_p += p1[i] * p1[i];
    resid[i] = a[i] - p1[i];
    dot_resid += resid[i] * p1[i];
  }
  EXPECT_LT(err, 1e-5);
  EXPECT_LT(norm_p, 0.05 * norm_a) << "64 of 3840 dimensions per frame";
  EXPECT_GT(norm_p, 0.0);
  double zerr = 0, rmax = 0;
  vae.EncodeFrameMajor(resid.data(), S, zr.data());
  for (int i = 0; i < 64 * T; ++i) {
    zerr = std::max(zerr, static_cast<double>(std::fabs(z1[i] - z2[i])));
    rmax = std::max(rmax, static_cast<double>(std::fabs(zr[i])));
  }
  EXPECT_LT(zerr, 1e-5) << "encode(decode(encode(a))) == encode(a)";
  EXPECT_LT(rmax, 1e-5) << "the residual is invisible to the analysis";
  std::printf("projection of noise: kept %.4f of the energy, <resid, proj> = %.2e of |a|^2\n",
              norm_p / norm_a, dot_resid / norm_a);
}

// The reason for the crossfade: latents that change every frame (real music, diffusion
// output) used to step at every frame boundary, a 25 Hz buzz (the per-frame codec measured a
// mean boundary jump 13× the mean jump within a frame on this very input).
TEST(RefVae, ChangingLatentsHaveNoFrameBoundaryClicks) {
  const RefVae vae;
  const int T = 250;
  const auto audio = Decoded(vae, RandomLatents(T, 21), T);
  const long S = static_cast<long>(kHop) * T;
  for (int ch = 0; ch < 2; ++ch) {
    const float* a = audio.data() + ch * S;
    double sum_boundary = 0, sum_within = 0, max_boundary = 0, max_within = 0;
    long n_boundary = 0, n_within = 0;
    for (long n = 1; n < S; ++n) {
      const double jump = std::fabs(a[n] - a[n - 1]);
      if (n % kHop == 0) {
        sum_boundary += jump;
        max_boundary = std::max(max_boundary, jump);
        ++n_boundary;
      } else {
        sum_within += jump;
        max_within = std::max(max_within, jump);
        ++n_within;
      }
    }
    const double ratio = (sum_boundary / n_boundary) / (sum_within / n_within);
    std::printf("channel %d: mean jump at frame boundaries / within frames = %.2f\n", ch, ratio);
    EXPECT_LT(ratio, 1.5);
    EXPECT_LT(max_boundary, max_within);
  }
}

// Frame k's audio depends on latent frames k−1, k, k+1 and nothing else: the first half on
// k−1 and k, the second half on k and k+1.
TEST(RefVae, ReceptiveFieldIsExactlyOneFrame) {
  const RefVae vae;
  const int T = 12, k0 = 5;
  auto z = RandomLatents(T, 9);
  const auto before = Decoded(vae, z, T);
  for (int c = 0; c < 64; ++c) z[c * T + k0] += 1.0f;
  const auto after = Decoded(vae, z, T);
  const long S = static_cast<long>(kHop) * T;
  for (int ch = 0; ch < 2; ++ch)
    for (int f = 0; f < T; ++f)
      for (int half = 0; half < 2; ++half) {
        const long off = ch * S + static_cast<long>(f) * kHop + half * (kHop / 2);
        const bool same =
            std::memcmp(before.data() + off, after.data() + off, kHop / 2 * sizeof(float)) == 0;
        const bool reached = f == k0 || (f == k0 - 1 && half == 1) || (f == k0 + 1 && half == 0);
        EXPECT_EQ(same, !reached) << "channel " << ch << " frame " << f << " half " << half;
      }
}

// A windowed decode is the decode of the gathered window as a latent of its own. Every frame
// whose neighbours are in the window is bit for bit that frame of the full decode (cyclic:
// the latent as a loop); the window's two edge frames are not, since they see a replicated
// edge instead of their real neighbour, which is why the stream keeps 8-frame margins.
TEST(RefVae, WindowedDecodeEqualsSliceOfFullDecodeBitwise) {
  const RefVae vae;
  const int T = 130, F = kWindowFrames, left = 8;
  const auto z = RandomLatents(T, 5);
  const auto full = Decoded(vae, z, T);
  const auto loop = Decoded(vae, z, T, RefVae::Edge::kCyclic);
  // The two edge rules differ only at the latent's first and last frame.
  for (int f = 0; f < T; ++f) EXPECT_EQ(SameFrame(full, T, f, loop, T, f), f != 0 && f != T - 1);
  std::vector<float> window(64L * F), audio(2L * kHop * F);
  for (int ks : {0, 3, 8, 60, 121, 125, 129}) {  // includes cyclic wrap at both ends
    int idx[F];
    for (int i = 0; i < F; ++i) {
      idx[i] = ((ks - left + i) % T + T) % T;
      for (int c = 0; c < 64; ++c) window[i * 64 + c] = z[c * T + idx[i]];
    }
    vae.DecodeFrameMajor(window.data(), F, audio.data());
    for (int i = 1; i + 1 < F; ++i)
      ASSERT_TRUE(SameFrame(audio, F, i, loop, T, idx[i])) << "ks=" << ks << " i=" << i;
    EXPECT_FALSE(SameFrame(audio, F, 0, loop, T, idx[0])) << "ks=" << ks;
    EXPECT_FALSE(SameFrame(audio, F, F - 1, loop, T, idx[F - 1])) << "ks=" << ks;
  }
  // A window that does not wrap, at the start of the latent: its first frame is the latent's
  // first frame, and both replicate it.
  for (int i = 0; i < F; ++i)
    for (int c = 0; c < 64; ++c) window[i * 64 + c] = z[c * T + i];
  vae.DecodeFrameMajor(window.data(), F, audio.data());
  for (int i = 0; i + 1 < F; ++i) ASSERT_TRUE(SameFrame(audio, F, i, full, T, i)) << i;
  EXPECT_THROW(vae.DecodeFrameMajor(window.data(), 0, audio.data()), std::exception);
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

TEST(RefVae, ConstantLatentIsASteadyChordOnThePartials) {
  const RefVae vae;
  const int T = 20;
  std::vector<float> z(64 * T);
  float zc[64];
  FillNormal(zc, 64, 8, 8);
  for (int c = 0; c < 64; ++c)
    for (int k = 0; k < T; ++k) z[c * T + k] = zc[c];
  const auto audio = Decoded(vae, z, T);
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
    // Periodic: frame k == frame 0 (steady chord), including the replicated edges.
    for (int k = 1; k < T; ++k)
      ASSERT_EQ(std::memcmp(a + static_cast<long>(k) * kHop, a, kHop * 4), 0);

    // Tonal, not noise: the DFT of a frame (one period) has its energy on the declared
    // partials, cycles m_p per frame, with amplitude gain·pan·|(cos, sin) amplitudes|.
    std::vector<double> cos_t(kHop), sin_t(kHop);
    for (int n = 0; n < kHop; ++n) {
      cos_t[n] = std::cos(2 * M_PI * n / kHop);
      sin_t[n] = std::sin(2 * M_PI * n / kHop);
    }
    std::vector<double> amplitude(kHop / 2 + 1);
    double total = 0, off_partials = 0;
    for (int m = 0; m <= kHop / 2; ++m) {
      std::complex<double> x = 0;
      for (int n = 0; n < kHop; ++n) {
        const int ph = static_cast<int>((static_cast<long>(m) * n) % kHop);
        x += static_cast<double>(a[n]) * std::complex<double>(cos_t[ph], -sin_t[ph]);
      }
      amplitude[m] = 2.0 * std::abs(x) / kHop;
      total += amplitude[m] * amplitude[m];
    }
    std::vector<bool> declared(kHop / 2 + 1, false);
    for (int p = 0; p < RefVae::kPartials; ++p) {
      const int m = vae.PartialCyclesPerFrame(p);
      declared[m] = true;
      const double pan = ch == 0 ? vae.PartialPanLeft(p) : vae.PartialPanRight(p);
      const double want = vae.PartialGain(p) * pan * std::hypot(zc[2 * p], zc[2 * p + 1]);
      EXPECT_NEAR(amplitude[m], want, 1e-4 * want + 1e-6) << "partial " << p;
    }
    for (int m = 0; m <= kHop / 2; ++m)
      if (!declared[m]) off_partials += amplitude[m] * amplitude[m];
    EXPECT_LT(off_partials, 1e-9 * total) << "energy off the declared partials";
  }
}

// Musical pitches on the 25 Hz grid: pure 5-limit intervals over a 25 Hz root, every one
// within 14 cents of an equal-tempered semitone and in the major hexatonic C D E G A B.
TEST(RefVae, PartialsAreAMusicalScale) {
  const RefVae vae;
  EXPECT_EQ(vae.PartialHz(0), 75.0);
  EXPECT_EQ(vae.PartialHz(RefVae::kPartials - 1), 5400.0);
  for (int p = 0; p < RefVae::kPartials; ++p) {
    if (p > 0) EXPECT_GT(vae.PartialHz(p), vae.PartialHz(p - 1));
    EXPECT_DOUBLE_EQ(vae.PartialHz(p), 25.0 * vae.PartialCyclesPerFrame(p));
    const double semitones = 12.0 * std::log2(vae.PartialHz(p) / 25.0);
    const double nearest = std::round(semitones);
    EXPECT_LT(std::fabs(semitones - nearest) * 100.0, 14.0) << "partial " << p;
    const int pitch_class = static_cast<int>(nearest) % 12;
    EXPECT_TRUE(pitch_class == 0 || pitch_class == 2 || pitch_class == 4 || pitch_class == 7 ||
                pitch_class == 9 || pitch_class == 11)
        << "partial " << p << " pitch class " << pitch_class;
  }
}

TEST(RefVae, AmplitudeOfNormalLatents) {
  const RefVae vae;
  const int T = 250;  // 10 s
  const auto audio = Decoded(vae, RandomLatents(T, 21), T);
  const long S = static_cast<long>(kHop) * T;
  for (int ch = 0; ch < 2; ++ch) {
    double ss = 0, peak = 0;
    for (long n = 0; n < S; ++n) {
      const double v = audio[ch * S + n];
      ss += v * v;
      peak = std::max(peak, std::fabs(v));
    }
    const double rms = std::sqrt(ss / S);
    EXPECT_GT(rms, 0.17);
    EXPECT_LT(rms, 0.23);
    EXPECT_LT(peak, 1.0);
    std::printf("N(0,1) latents, channel %d: rms %.3f peak %.3f\n", ch, rms, peak);
  }
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

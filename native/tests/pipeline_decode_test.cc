// Windowed-decode index math (spec/engine.md §4.9) with the reference VAE (§7.4),
// crossfade/patch (§4.10 step 7), float16.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/constants.h"
#include "core/rng.h"
#include "pipeline/decode.h"
#include "ref/vae.h"

namespace {

using dm::kHop;
using dm::pipe::PlanWindow;
using dm::pipe::WindowPlan;

std::vector<int> Frames(const WindowPlan& p) {
  return std::vector<int>(p.frames, p.frames + p.num_frames);
}

std::vector<int> Range(int a, int n, int mod) {
  std::vector<int> v;
  for (int j = 0; j < n; ++j) v.push_back(((a + j) % mod + mod) % mod);
  return v;
}

TEST(PipelineDecodePlan, CyclicMiddle) {
  // T=1500, 0.36 s → K=9, left=8; t_start=10 s → ks=250.
  WindowPlan p = PlanWindow(1500, 0.36, 10.0, true);
  EXPECT_FALSE(p.full);
  EXPECT_EQ(p.num_frames, 25);
  EXPECT_EQ(Frames(p), Range(242, 25, 1500));
  EXPECT_EQ(p.pre, 8);
  EXPECT_EQ(p.kept, 9);
  EXPECT_EQ(p.ks, 250);
  EXPECT_EQ(p.ke, 259);
  EXPECT_EQ(p.start_sample, 250L * kHop);
  EXPECT_EQ(p.num_samples(), 9L * kHop);
}

TEST(PipelineDecodePlan, CyclicWrapAtStartAndEnd) {
  // ks = int(0.1·25) = 2 → frames −6..18 mod 1500.
  WindowPlan a = PlanWindow(1500, 0.36, 0.1, true);
  std::vector<int> want = {1494, 1495, 1496, 1497, 1498, 1499};
  for (int f = 0; f <= 18; ++f) want.push_back(f);
  EXPECT_EQ(Frames(a), want);
  EXPECT_EQ(a.pre, 8);
  EXPECT_EQ(a.start_sample, 2L * kHop);
  // t_start = 59.9 → int(1497.5) = 1497; ke = min(1500, 1506) = 1500; ks = 1491.
  WindowPlan b = PlanWindow(1500, 0.36, 59.9, true);
  EXPECT_EQ(b.ks, 1491);
  EXPECT_EQ(b.ke, 1500);
  EXPECT_EQ(Frames(b), Range(1483, 25, 1500));
  EXPECT_EQ(b.frames[16], 1499);
  EXPECT_EQ(b.frames[17], 0);
  EXPECT_EQ(b.frames[24], 7);
  EXPECT_EQ(b.pre, 8);
  EXPECT_EQ(b.kept, 9);
  // A small cyclic latent (T=12 < 25) repeats frames.
  WindowPlan c = PlanWindow(12, 0.36, 0.0, true);
  EXPECT_EQ(Frames(c), Range(-8, 25, 12));
  EXPECT_EQ(c.pre, 8);
}

TEST(PipelineDecodePlan, NonCyclicClampsToLatent) {
  WindowPlan a = PlanWindow(1500, 0.36, 0.1, false);  // ds = max(0, min(−6, 1475)) = 0
  EXPECT_EQ(Frames(a), Range(0, 25, 1500));
  EXPECT_EQ(a.pre, 2);
  WindowPlan b = PlanWindow(1500, 0.36, 59.9, false);  // ds = min(1483, 1475) = 1475
  EXPECT_EQ(Frames(b), Range(1475, 25, 1500));
  EXPECT_EQ(b.pre, 16);
  EXPECT_EQ(b.kept, 9);
  WindowPlan c = PlanWindow(1500, 0.36, 10.0, false);  // ds = 242
  EXPECT_EQ(c.frames[0], 242);
  EXPECT_EQ(c.pre, 8);
  WindowPlan d = PlanWindow(20, 0.36, 0.2, false);  // T < 25: decode the 20 frames there are
  EXPECT_EQ(d.num_frames, 20);
  EXPECT_EQ(d.pre, 5);
  EXPECT_EQ(d.kept, 9);
}

TEST(PipelineDecodePlan, FullDecodeAndClamps) {
  EXPECT_TRUE(PlanWindow(1500, 0.0, 3.0, true).full);
  EXPECT_TRUE(PlanWindow(1500, -1.0, 3.0, true).full);
  WindowPlan small = PlanWindow(9, 0.36, 0.0, true);  // T <= K
  EXPECT_TRUE(small.full);
  EXPECT_EQ(small.num_frames, 9);
  EXPECT_EQ(small.kept, 9);
  EXPECT_EQ(small.start_sample, 0);
  EXPECT_FALSE(PlanWindow(10, 0.36, 0.0, true).full);
  // 3 s window is clamped to 0.36 s (K=9); 0.01 s to 0.04 s (K=1, left=12).
  EXPECT_EQ(PlanWindow(1500, 3.0, 1.0, true).kept, 9);
  WindowPlan tiny = PlanWindow(1500, 0.01, 1.0, true);
  EXPECT_EQ(tiny.kept, 1);
  EXPECT_EQ(tiny.pre, 12);
  EXPECT_EQ(tiny.frames[0], 25 - 12);
  // 0.2 s → K=5, left=10; negative t_start → ks=0.
  WindowPlan w = PlanWindow(1500, 0.2, -0.5, true);
  EXPECT_EQ(w.kept, 5);
  EXPECT_EQ(w.pre, 10);
  EXPECT_EQ(w.ks, 0);
}

// Windows arrive as float32 (dm_stream_options.vae_window): 0.12f·25 = 2.99999993 must still
// keep 3 frames, as 0.12 s does in DEMON's double arithmetic.
TEST(PipelineDecodePlan, Float32WindowsKeepTheirFrameCount) {
  EXPECT_EQ(PlanWindow(1500, 0.12f, 10.0, true).kept, 3);
  EXPECT_EQ(PlanWindow(1500, 0.32f, 10.0, true).kept, 8);
  for (int k = 1; k <= 9; ++k) {
    const float w = static_cast<float>(k / 25.0);
    const WindowPlan p = PlanWindow(1500, w, 10.0, true);
    EXPECT_EQ(p.kept, k) << w;
    EXPECT_EQ(p.pre, (25 - k) / 2) << w;
    EXPECT_EQ(PlanWindow(1500, static_cast<double>(k) / 25.0, 10.0, true).kept, k) << k;
  }
  // Truncation still applies away from a frame boundary: 0.119 s → int(2.975) = 2.
  EXPECT_EQ(PlanWindow(1500, 0.119f, 10.0, true).kept, 2);
  EXPECT_EQ(PlanWindow(1500, 0.35, 10.0, true).kept, 8);
}

// out[s][ch] = z[s % 64] + 1000·frame + ch/2: depends on the frame's latent and its index.
class TagDecoder final : public dm::pipe::FrameDecoder {
 public:
  void DecodeFrame(const float* z64, long frame, float* out) const override {
    ++calls;
    for (int s = 0; s < kHop; ++s)
      for (int ch = 0; ch < 2; ++ch) out[s * 2 + ch] = z64[s % 64] + 1000.f * frame + 0.5f * ch;
  }
  mutable int calls = 0;
};

TEST(PipelineDecodeWindow, KeptSliceEqualsFullDecode) {
  const int T = 60;
  std::vector<float> lat(static_cast<size_t>(T) * 64);
  for (size_t i = 0; i < lat.size(); ++i) lat[i] = static_cast<float>(i % 977) * 0.01f;
  TagDecoder dec;
  WindowPlan full = PlanWindow(T, 0.0, 0.0, true);
  std::vector<float> full_audio(static_cast<size_t>(T) * kHop * 2);
  dm::pipe::DecodeWindow(lat.data(), T, full, dec, full_audio.data());
  EXPECT_EQ(dec.calls, T);
  for (bool cyclic : {true, false}) {
    for (double ts : {0.0, 0.1, 1.0, 2.3, 2.39}) {
      WindowPlan p = PlanWindow(T, 0.36, ts, cyclic);
      std::vector<float> win(static_cast<size_t>(p.num_frames) * kHop * 2);
      dec.calls = 0;
      dm::pipe::DecodeWindow(lat.data(), T, p, dec, win.data());
      EXPECT_EQ(dec.calls, 25);
      const float* kept = win.data() + static_cast<long>(p.pre) * kHop * 2;
      ASSERT_EQ(std::memcmp(kept, full_audio.data() + p.start_sample * 2,
                            static_cast<size_t>(p.num_samples()) * 2 * sizeof(float)),
                0)
          << "cyclic=" << cyclic << " t=" << ts;
    }
  }
}

// The streaming path end to end with the reference VAE, whose ±1-frame receptive field makes
// the margins matter (spec §7.4): plan, gather (wrapping), decode the 25-frame window as the
// windowed engine does, keep [pre, pre + K) — bit for bit the same samples as a full decode
// of the latent (as a loop when cyclic) at start_sample. The same window gathered one frame
// off, or without its margin frames' real values, does not match, so the index math is
// what is being tested.
TEST(PipelineDecodeWindow, RefVaeKeptSliceEqualsFullDecodeBitwise) {
  const dm::ref::RefVae vae;
  for (int T : {60, 20, 12}) {
    std::vector<float> lat(static_cast<size_t>(T) * 64), lat_ct(lat.size());  // [T,64], [64,T]
    dm::FillNormal(lat.data(), static_cast<long>(lat.size()), 11, static_cast<uint64_t>(T));
    for (int f = 0; f < T; ++f)
      for (int c = 0; c < 64; ++c) lat_ct[static_cast<size_t>(c) * T + f] = lat[f * 64 + c];
    const long S = static_cast<long>(T) * kHop;
    std::vector<float> line(2 * S), loop(2 * S);  // planar [2, S]
    vae.Decode(lat_ct.data(), T, line.data(), dm::ref::RefVae::Edge::kReplicate);
    vae.Decode(lat_ct.data(), T, loop.data(), dm::ref::RefVae::Edge::kCyclic);
    const double duration = static_cast<double>(T) / dm::kFrameRate;
    for (bool cyclic : {true, false}) {
      for (double ts : {0.0, 0.3, 1.0, duration - 0.1}) {
        const WindowPlan p = PlanWindow(T, 0.36, ts, cyclic);
        if (p.full) continue;
        SCOPED_TRACE(testing::Message() << "T=" << T << " cyclic=" << cyclic << " t=" << ts);
        const std::vector<float>& want = cyclic ? loop : line;
        const int n = p.num_frames;
        std::vector<float> z(static_cast<size_t>(n) * 64), audio(2L * n * kHop);
        auto kept_matches = [&]() {
          vae.DecodeFrameMajor(z.data(), n, audio.data());
          for (int c = 0; c < 2; ++c) {
            const float* got = audio.data() + (static_cast<long>(c) * n + p.pre) * kHop;
            if (std::memcmp(got, want.data() + c * S + p.start_sample,
                            p.num_samples() * sizeof(float)) != 0)
              return false;
          }
          return true;
        };
        dm::pipe::GatherWindow(lat.data(), T, p, z.data());
        ASSERT_TRUE(kept_matches());
        if (T != 60) continue;  // the negative checks once, on the long latent
        // Off by one frame: the window is gathered starting one frame later.
        WindowPlan shifted = p;
        for (int j = 0; j < n; ++j) shifted.frames[j] = (p.frames[j] + 1) % T;
        dm::pipe::GatherWindow(lat.data(), T, shifted, z.data());
        EXPECT_FALSE(kept_matches()) << "a window one frame off still matched";
        // The margin frame next to the kept slice is part of its receptive field.
        dm::pipe::GatherWindow(lat.data(), T, p, z.data());
        if (p.pre > 0) {
          for (int c = 0; c < 64; ++c) z[(p.pre - 1) * 64 + c] = 0.f;
          EXPECT_FALSE(kept_matches()) << "the margin frame before the slice did not matter";
        }
      }
    }
  }
}

TEST(PipelineDecodeWindow, GatherWindowWraps) {
  const int T = 30;
  std::vector<float> lat(static_cast<size_t>(T) * 64);
  for (int f = 0; f < T; ++f)
    for (int c = 0; c < 64; ++c) lat[static_cast<size_t>(f) * 64 + c] = f * 100.f + c;
  WindowPlan p = PlanWindow(T, 0.36, 0.0, true);  // frames −8..16 mod 30
  std::vector<float> z(25 * 64);
  dm::pipe::GatherWindow(lat.data(), T, p, z.data());
  EXPECT_EQ(z[0], 22 * 100.f);
  EXPECT_EQ(z[7 * 64 + 5], 29 * 100.f + 5);
  EXPECT_EQ(z[8 * 64], 0.f);
  EXPECT_EQ(z[24 * 64 + 63], 16 * 100.f + 63);
}

TEST(PipelineAudio, CrossfadeRampsAgainstExistingBuffer) {
  const long S = 48000, n = 4800;  // xf = min(1200, 1200) = 1200
  std::vector<float> play(static_cast<size_t>(S) * 2, 1.f);
  std::vector<float> slice(static_cast<size_t>(n) * 2, 0.f);
  dm::pipe::CrossfadeSlice(play.data(), S, 1000, slice.data(), n);
  EXPECT_FLOAT_EQ(slice[0], 1.f);         // starts on the existing audio
  EXPECT_FLOAT_EQ(slice[1199 * 2], 0.f);  // ends the ramp on the new audio
  EXPECT_NEAR(slice[600 * 2 + 1], 1.f - 600.f / 1199, 1e-6);
  EXPECT_FLOAT_EQ(slice[2000 * 2], 0.f);         // middle untouched
  EXPECT_FLOAT_EQ(slice[(n - 1200) * 2], 0.f);   // tail ramp starts on new
  EXPECT_FLOAT_EQ(slice[(n - 1) * 2 + 1], 1.f);  // and ends on existing
  // Short slice: xf = n/4; wraps around the looping buffer.
  std::vector<float> loop(20, 0.f);  // S = 10 stereo samples
  for (int s = 0; s < 10; ++s) loop[s * 2] = loop[s * 2 + 1] = static_cast<float>(s);
  std::vector<float> sl(16, 100.f);  // n = 8 → xf = 2, start 8 → existing 8,9,0,1,...
  dm::pipe::CrossfadeSlice(loop.data(), 10, 8, sl.data(), 8);
  EXPECT_FLOAT_EQ(sl[0], 8.f);
  EXPECT_FLOAT_EQ(sl[2], 100.f);
  EXPECT_FLOAT_EQ(sl[12], 100.f);
  EXPECT_FLOAT_EQ(sl[14], 5.f);  // sample 7 → playback (8+7) mod 10 = 5
}

TEST(PipelineAudio, PatchWindowWraps) {
  std::vector<float> loop(20, 0.f);
  const float sl[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  dm::pipe::PatchWindow(loop.data(), 10, 18, sl, 4);  // 18 mod 10 = 8 → 8, 9, 0, 1
  EXPECT_EQ(loop[16], 1.f);
  EXPECT_EQ(loop[19], 4.f);
  EXPECT_EQ(loop[0], 5.f);
  EXPECT_EQ(loop[3], 8.f);
  EXPECT_EQ(loop[4], 0.f);
}

TEST(PipelineF16, RoundTripAllHalves) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = dm::pipe::HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(dm::pipe::HalfToFloat(dm::pipe::FloatToHalf(f))));
      continue;
    }
    ASSERT_EQ(dm::pipe::FloatToHalf(f), h) << std::hex << h;
  }
}

TEST(PipelineF16, RoundingAndSpecials) {
  using dm::pipe::FloatToHalf;
  using dm::pipe::HalfToFloat;
  EXPECT_EQ(FloatToHalf(1.f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.f), 0xC000);
  EXPECT_EQ(FloatToHalf(65504.f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65519.f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.f), 0x7C00);  // tie → even → inf
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(FloatToHalf(1.f + std::ldexp(1.f, -11)), 0x3C00);      // tie → even (down)
  EXPECT_EQ(FloatToHalf(1.f + 3 * std::ldexp(1.f, -11)), 0x3C02);  // tie → even (up)
  EXPECT_EQ(FloatToHalf(1.f + std::ldexp(1.2f, -11)), 0x3C01);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.f, -25)), 0x0000);  // tie → even (0)
  EXPECT_EQ(FloatToHalf(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(3.f, -25)), 0x0002);      // 1.5 ulp tie → even (2)
  EXPECT_EQ(FloatToHalf(std::ldexp(1023.5f, -24)), 0x0400);  // rounds up into the normals
  EXPECT_EQ(FloatToHalf(-0.f), 0x8000);
  EXPECT_EQ(FloatToHalf(1e-10f), 0x0000);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.f, -24));
  std::vector<float> in = {0.f, .5f, -1.25f, 3.14159f};
  std::vector<uint16_t> h(4);
  std::vector<float> out(4);
  dm::pipe::FloatsToHalf(in.data(), h.data(), 4);
  dm::pipe::HalfsToFloat(h.data(), out.data(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[i], in[i], std::fabs(in[i]) * 1e-3);
}

}  // namespace

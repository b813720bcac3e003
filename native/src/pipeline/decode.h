// Turning a finished latent into playback audio (spec/engine.md §4.9, §4.10 steps 6–7):
// windowed-decode index math, the per-frame decoder seam, the crossfaded patch into the looping
// playback buffer, and float16 conversion for the wire. Audio is interleaved stereo float32.
#pragma once

#include <cstdint>

#include "core/constants.h"

namespace dm {
namespace pipe {

inline constexpr double kMinVaeWindow = 0.04;  // s (paths.py WINDOWED_VAE_*)
inline constexpr double kMaxVaeWindow = 0.36;
inline constexpr int kMaxCrossfade = 1200;  // samples (25 ms)

// The VAE seam: decodes latent frame `absolute_frame` (its 64 values at z64) into
// kHop interleaved stereo samples, out[kHop][2]. A windowed decode is kWindowFrames calls.
class FrameDecoder {
 public:
  virtual ~FrameDecoder() = default;
  virtual void DecodeFrame(const float* z64, long absolute_frame, float* out) const = 0;
};

struct WindowPlan {
  bool full = false;   // decode the whole latent (vae_window <= 0, or T <= K)
  int num_frames = 0;  // frames to decode: kWindowFrames, fewer only if non-cyclic T < 25,
                       // or T when full
  int frames[kWindowFrames] = {};  // absolute latent frame of each decoded frame (unused if full)
  int pre = 0;                     // decoded frames before the kept slice
  int kept = 0;                    // kept frames (ke − ks); T when full
  int ks = 0, ke = 0;              // kept latent frame range [ks, ke)
  long start_sample = 0;           // ks·kHop: where the kept slice goes in the playback buffer
  long num_samples() const { return static_cast<long>(kept) * kHop; }  // per channel
};

// §4.9: w = clamp(vae_window, 0.04, 0.36); K = max(1, min(int(w·25), 25)) (k/25 s → k frames
// also when the window arrived as a float32); F = 25;
// ks = max(0, int(t_start·25)); ke = min(T, ks+K); ks = max(0, ke−K); left = (F−K)/2;
// cyclic: frames (ks−left+j) mod T, pre = left; else ds = max(0, min(ks−left, T−F)), pre = ks−ds.
// Throws kInvalidArgument for T < 1.
WindowPlan PlanWindow(int frames_total, double vae_window, double t_start, bool cyclic);

// Decodes the plan's frames (25 DecodeFrame calls, or T when full) from latent [T,64] into
// window_audio [num_frames·kHop][2]. The kept slice starts at window_audio + pre·kHop·2.
void DecodeWindow(const float* latent, int frames_total, const WindowPlan& plan,
                  const FrameDecoder& dec, float* window_audio);

// Copies the plan's frames (wrap applied) into z_out [num_frames, 64] — the input of a decoder
// that needs the whole window at once (a real VAE, or the §7.4 stand-in with its ±1-frame
// receptive field). The kept slice of its output starts at pre·kHop samples.
void GatherWindow(const float* latent, int frames_total, const WindowPlan& plan, float* z_out);

// Crossfades slice [n][2] in place against the looping playback buffer [S][2] at
// start_sample (wrapping mod S): xf = min(1200, n/4); w_i = i/(xf−1) (linspace 0..1; w = 1 for
// xf == 1); the first xf samples go existing→new, the last xf new→existing.
void CrossfadeSlice(const float* playback, long playback_samples, long start_sample, float* slice,
                    long n);

// Writes slice [n][2] into the looping playback buffer [S][2] at start_sample, wrapping mod S.
void PatchWindow(float* playback, long playback_samples, long start_sample, const float* slice,
                 long n);

// IEEE binary16 conversion, round-to-nearest-even, with subnormals, ±inf and NaN.
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
void FloatsToHalf(const float* in, uint16_t* out, long n);
void HalfsToFloat(const uint16_t* in, float* out, long n);
// FloatToHalf into 2·n bytes, little-endian whatever the host order (the wire's layout).
void FloatsToHalfLE(const float* in, uint8_t* out, long n);

}  // namespace pipe
}  // namespace dm

// Reference VAE stand-in (spec/engine.md §2.3-2.5, §7.4): a linear frame codec that makes
// music rather than noise.
//
// Latent channel 2p / 2p+1 is the cos / sin amplitude of partial p (32 partials). Partial p
// sits on an exact bin of the 1920-sample frame (f_p = 25·m_p Hz, m_p in a 5-limit just-
// intonation set spanning 75 Hz..5.4 kHz, i.e. the C-major-hexatonic pitch classes over a
// 25 Hz root), has a gently falling gain and an equal-power pan position. Because every
// partial completes a whole number of cycles per frame, the basis is the same for every frame
// and a constant latent decodes to a steady, phase-continuous chord with no frame-boundary
// clicks. The 64 basis columns (over 2×1920 samples) are mutually orthogonal, so:
//   * Encode (per-frame least squares == scaled transpose) ∘ Decode == identity on latents
//     (to float rounding, ~1e-6), and Decode ∘ Encode is an orthogonal projection on audio;
//   * the receptive field is 0 frames: frame k of the audio depends only on latent frame k,
//     so any windowed decode equals the same slice of a full decode bitwise (the
//     absolute_frame argument is accepted for API stability and currently unused);
//   * silence ↦ zeros both ways; N(0,1) latents give RMS ≈ 0.2 per channel, peak < 1.
//
// Layouts: audio is planar/channel-major [2, S] exactly as the engine contract [1, 2, S]
// (left samples, then right); latents are channel-major [64, T] ([1,64,T]) for the
// whole-tensor calls, and a single frame's latent is 64 contiguous values.
#pragma once

#include <cstddef>
#include <vector>

#include "core/constants.h"

namespace dm {
namespace ref {

class RefVae {
 public:
  static constexpr int kPartials = kLatentDim / 2;
  RefVae();

  // One frame: z[64] → out[c * channel_stride + n], c in {0 (L), 1 (R)}, n in [0, 1920).
  // Default stride 1920 = channel-major within the frame (3840 floats).
  void DecodeFrame(const float* z, long absolute_frame, float* out,
                   long channel_stride = kHop) const;
  // One frame of audio (same layout as DecodeFrame's output) → z[64] (least squares).
  void EncodeFrame(const float* audio, long channel_stride, float* z) const;

  // latents [64, T] → audio [2, 1920·T].
  void Decode(const float* latents, int frames, float* audio) const;
  // Decodes the listed frames (absolute indices into latents [64, T], e.g. the cyclic
  // window (ks−8 … ks+16) mod T) into audio [2, 1920·count]; frame i of the output is
  // latent frame frame_index[i]. Throws kInvalidArgument on an index outside [0, T).
  void DecodeFrames(const float* latents, int frames, const int* frame_index, int count,
                    float* audio) const;
  // audio [2, S] (S a multiple of 1920) → moments [128, S/1920]: mean ‖ logvar (−20).
  void Encode(const float* audio, long samples, float* moments) const;
  // audio [2, S] → latents [T, 64] frame-major (the pipeline's [1,T,64]), means only.
  void EncodeFrameMajor(const float* audio, long samples, float* latents_tc) const;

  // Partial p: frequency (Hz), overall gain, left/right gains (gl² + gr² = 1).
  double PartialHz(int p) const { return 25.0 * bins_[p]; }
  float PartialGain(int p) const { return gain_[p]; }

 private:
  int bins_[kPartials];
  float gain_[kPartials];
  float pan_l_[kPartials], pan_r_[kPartials];
  std::vector<float> basis_;    // [64, 1920]: row 2p = cos, 2p+1 = sin of partial p
  std::vector<float> basis_t_;  // [1920, 64]
};

}  // namespace ref
}  // namespace dm

// Reference VAE stand-in (spec/engine.md §2.3-2.5, §7.4): a linear codec with a ±1-frame
// receptive field that makes music rather than noise.
//
// Pitches. Latent channel 2p / 2p+1 is the cos / sin amplitude of partial p (32 partials).
// Partial p sits on an exact bin of the 1920-sample frame, f_p = 25·m_p Hz, with m_p in a
// 5-limit just-intonation set (m = 2^a·3^b·5^c: the pitch classes C D E G A B of a major
// hexatonic scale over a 25 Hz root) spanning 75 Hz..5.4 kHz, i.e. pure intervals that lie
// within 14 cents of equal temperament. Why not equal-tempered semitones: the carriers must
// complete whole cycles per frame (below), so every pitch is a multiple of 25 Hz, and rounding
// semitones to that grid is off by up to 53 cents at 400 Hz and 21 at 1 kHz, while the
// harmonic set is exact. Each partial has a gently falling gain and an equal-power pan.
//
// Decode. Frame k's amplitudes c_k (latent × gain × pan) sit at the frame centre; between
// two centres each partial's cos/sin amplitude is crossfaded with a raised cosine,
//   audio(n) = Σ_p Σ_k h(n − centre_k) · c_{k,p} · carrier_p(n),   h = Hann of width 2 frames,
// whose shifted copies sum to one, so the amplitude envelope is smooth (C¹) and a changing
// latent gives no step at frame boundaries. The first half of frame k therefore depends on
// frames k−1 and k, the second half on k and k+1: the receptive field is exactly ±1 frame.
// Every carrier completes a whole number of cycles per frame, so the carriers are the same in
// every frame (the absolute frame index does not matter) and a constant latent decodes to a
// steady, phase-continuous chord.
// Edge rule: outside the latent the edge frame is replicated (z_{−1} = z_0, z_T = z_{T−1}),
// so a constant latent stays steady up to both ends and encode stays exact there (spec §7.4's
// stand-in takes zero outside, which would fade the ends in and out). A windowed decode is the
// decode of the gathered window as a latent of its own: every frame whose neighbours are inside
// the window (the kept slice with its 8-frame margins) is bitwise that frame of a full decode,
// because each half frame is computed by the same operations from the same two latent frames;
// the window's own edge frames are not. Edge::kCyclic decodes a latent as a loop
// (z_{−1} = z_{T−1}, z_T = z_0), which is what a cyclic window (ks − 8 … ks + 16) mod T,
// wrapping at the loop point, reproduces.
// Energy: crossfading two independent amplitudes keeps 3/4 of their power on average (1/2 at
// a frame boundary), which the gains make up for; correlated frames (real music) lose less.
//
// Encode (the matching analysis). Per frame, the least-squares fit of the static chord basis
// (the scaled transpose; the 64 columns are orthogonal) gives y_k = B₋·z_{k−1} + B₀·z_k +
// B₊·z_{k+1}, where the 64×64 blocks B are the analysis of the crossfaded atoms (they also couple
// neighbouring partials, since the envelope widens each partial's spectrum by about a bin);
// B₋ + B₀ + B₊ = I. Encode solves that block-tridiagonal system, with the same edge rule, by
// block LU whose factors stop changing after 15 frames and are precomputed, so:
//   * Encode ∘ Decode == identity on every latent, changing or not (to float rounding: ~6e-6
//     for N(0,1) latents), in ~20 ms for 60 s of audio (about the cost of the analysis alone);
//   * Decode ∘ Encode is an idempotent (oblique) projection of audio onto the decoder's range;
//   * silence ↦ zeros both ways; N(0,1) latents give RMS ≈ 0.2 per channel, peak < 1.
//
// Layouts: audio is planar/channel-major [2, S] exactly as the engine contract [1, 2, S]
// (left samples, then right); latents are channel-major [64, T] ([1,64,T]) for the
// whole-tensor calls and frame-major [T, 64] (the pipeline's [1,T,64]) for the others.
#pragma once

#include <cstddef>
#include <vector>

#include "core/constants.h"

namespace dm {
namespace ref {

class RefVae {
 public:
  static constexpr int kPartials = kLatentDim / 2;
  // What lies outside the decoded latent.
  enum class Edge {
    kReplicate,  // the edge frame repeats: a latent on its own (every engine decode)
    kCyclic,     // the latent is a loop: frame −1 is frame T−1 (the playback buffer)
  };
  // Cheap: the codec is a fixed function, so its tables (bases, deconvolution factors) are
  // computed once per process, on first use, and shared by every RefVae.
  RefVae();

  // latents [64, T] → audio [2, 1920·T].
  void Decode(const float* latents, int frames, float* audio, Edge edge = Edge::kReplicate) const;
  // z [T, 64] frame-major (a gathered window) → audio [2, 1920·T], edges replicated. Does not
  // allocate.
  void DecodeFrameMajor(const float* z, int frames, float* audio) const;
  // audio [2, S] (S a multiple of 1920) → moments [128, S/1920]: mean ‖ logvar (−20).
  void Encode(const float* audio, long samples, float* moments) const;
  // audio [2, S] → latents [T, 64] frame-major (the pipeline's [1,T,64]), means only.
  void EncodeFrameMajor(const float* audio, long samples, float* latents_tc) const;

  // Partial p: whole cycles per frame (its frequency is 25 Hz times that), overall gain,
  // left/right gains (gl² + gr² = 1).
  int PartialCyclesPerFrame(int p) const;
  double PartialHz(int p) const {
    return static_cast<double>(kFrameRate) * PartialCyclesPerFrame(p);
  }
  float PartialGain(int p) const;
  float PartialPanLeft(int p) const;
  float PartialPanRight(int p) const;

 private:
  struct Tables;
  static const Tables& SharedTables();

  // One frame from its latent and its neighbours' (each 64 values, element j at z[j·stride])
  // into out[c·channel_stride + n].
  void DecodeOneFrame(const float* prev, const float* cur, const float* next, long dim_stride,
                      float* out, long channel_stride) const;
  void DecodeStrided(const float* z, int frames, long frame_stride, long dim_stride, Edge edge,
                     float* audio) const;
  // Per-frame least squares of one frame of audio against the static chord basis → y[64].
  void AnalyzeFrame(const float* audio, long channel_stride, float* y) const;
  // Solves B₋·z_{k−1} + B₀·z_k + B₊·z_{k+1} = y_k (edges replicated) in place, y [T, 64].
  void Deconvolve(float* y, long frames) const;

  const Tables& tables_;
};

}  // namespace ref
}  // namespace dm

#include "ref/vae.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ref/gemm.h"

namespace dm {
namespace ref {

namespace vae_detail {
// 5-limit multiples of the 25 Hz frame rate (2^a·3^b·5^c): pitch classes C D E G A B.
constexpr int kBins[RefVae::kPartials] = {3,  4,  5,  6,   8,   9,   10,  12,  15,  16, 18,
                                          20, 24, 27, 30,  32,  36,  40,  48,  54,  60, 64,
                                          72, 80, 96, 108, 120, 128, 144, 160, 192, 216};
constexpr double kTargetRms = 0.2;  // per channel for N(0,1) latents
constexpr float kLogVar = -20.0f;
constexpr double kPi = 3.14159265358979323846;
}  // namespace vae_detail

RefVae::RefVae() : basis_(static_cast<size_t>(kLatentDim) * kHop), basis_t_(basis_.size()) {
  double sum_w2 = 0.0;
  double w[kPartials];
  for (int p = 0; p < kPartials; ++p) {
    bins_[p] = vae_detail::kBins[p];
    const double hz = 25.0 * bins_[p];
    w[p] = std::min(1.5, std::sqrt(400.0 / hz));  // gentle spectral tilt
    sum_w2 += w[p] * w[p];
    const double pan = 0.5 + 0.35 * std::sin(2.399963229728653 * p);  // golden-angle spread
    pan_l_[p] = static_cast<float>(std::cos(pan * vae_detail::kPi / 2));
    pan_r_[p] = static_cast<float>(std::sin(pan * vae_detail::kPi / 2));
  }
  // E[power per channel] = sum_p g_p² / 2 for N(0,1) cos/sin amplitudes.
  const double norm = std::sqrt(2.0 * vae_detail::kTargetRms * vae_detail::kTargetRms / sum_w2);
  for (int p = 0; p < kPartials; ++p) gain_[p] = static_cast<float>(w[p] * norm);
  for (int p = 0; p < kPartials; ++p) {
    for (int n = 0; n < kHop; ++n) {
      // Exact phase: (m·n mod 1920) keeps the argument small.
      const double ph = 2.0 * vae_detail::kPi *
                        static_cast<double>((static_cast<long>(bins_[p]) * n) % kHop) / kHop;
      const float c = static_cast<float>(std::cos(ph)), s = static_cast<float>(std::sin(ph));
      basis_[static_cast<size_t>(2 * p) * kHop + n] = c;
      basis_[static_cast<size_t>(2 * p + 1) * kHop + n] = s;
      basis_t_[static_cast<size_t>(n) * kLatentDim + 2 * p] = c;
      basis_t_[static_cast<size_t>(n) * kLatentDim + 2 * p + 1] = s;
    }
  }
}

void RefVae::DecodeFrame(const float* z, long /*absolute_frame*/, float* out,
                         long channel_stride) const {
  float coef[2 * kLatentDim];  // [2 channels, 64]
  for (int j = 0; j < kLatentDim; ++j) {
    const int p = j / 2;
    coef[j] = z[j] * gain_[p] * pan_l_[p];
    coef[kLatentDim + j] = z[j] * gain_[p] * pan_r_[p];
  }
  Gemm(2, kHop, kLatentDim, coef, kLatentDim, basis_.data(), kHop, out, channel_stride, nullptr,
       false);
}

void RefVae::EncodeFrame(const float* audio, long channel_stride, float* z) const {
  float proj[2 * kLatentDim];  // <a_c, φ_j>
  Gemm(2, kLatentDim, kHop, audio, channel_stride, basis_t_.data(), kLatentDim, proj, kLatentDim,
       nullptr, false);
  for (int j = 0; j < kLatentDim; ++j) {
    const int p = j / 2;
    z[j] = (pan_l_[p] * proj[j] + pan_r_[p] * proj[kLatentDim + j]) / (gain_[p] * (kHop / 2.0f));
  }
}

void RefVae::Decode(const float* latents, int frames, float* audio) const {
  if (frames < 1 || !latents || !audio)
    Fail(Status::kInvalidArgument, "ref vae decode: bad arguments (T=%d)", frames);
  const long S = static_cast<long>(frames) * kHop;
  float z[kLatentDim];
  for (int k = 0; k < frames; ++k) {
    for (int c = 0; c < kLatentDim; ++c) z[c] = latents[static_cast<long>(c) * frames + k];
    DecodeFrame(z, k, audio + static_cast<long>(k) * kHop, S);
  }
}

void RefVae::DecodeFrames(const float* latents, int frames, const int* frame_index, int count,
                          float* audio) const {
  if (frames < 1 || count < 1 || !latents || !frame_index || !audio)
    Fail(Status::kInvalidArgument, "ref vae decode frames: bad arguments (T=%d count=%d)", frames,
         count);
  const long S = static_cast<long>(count) * kHop;
  float z[kLatentDim];
  for (int i = 0; i < count; ++i) {
    const int k = frame_index[i];
    if (k < 0 || k >= frames)
      Fail(Status::kInvalidArgument, "ref vae decode frames: index %d outside [0,%d)", k, frames);
    for (int c = 0; c < kLatentDim; ++c) z[c] = latents[static_cast<long>(c) * frames + k];
    DecodeFrame(z, k, audio + static_cast<long>(i) * kHop, S);
  }
}

void RefVae::Encode(const float* audio, long samples, float* moments) const {
  if (samples < kHop || samples % kHop != 0 || !audio || !moments)
    Fail(Status::kInvalidArgument, "ref vae encode: %ld samples is not a positive multiple of %d",
         samples, kHop);
  const long T = samples / kHop;
  float z[kLatentDim];
  for (long k = 0; k < T; ++k) {
    EncodeFrame(audio + k * kHop, samples, z);
    for (int c = 0; c < kLatentDim; ++c) {
      moments[c * T + k] = z[c];
      moments[(kLatentDim + c) * T + k] = vae_detail::kLogVar;
    }
  }
}

void RefVae::EncodeFrameMajor(const float* audio, long samples, float* latents_tc) const {
  if (samples < kHop || samples % kHop != 0 || !audio || !latents_tc)
    Fail(Status::kInvalidArgument, "ref vae encode: %ld samples is not a positive multiple of %d",
         samples, kHop);
  const long T = samples / kHop;
  for (long k = 0; k < T; ++k) EncodeFrame(audio + k * kHop, samples, latents_tc + k * kLatentDim);
}

}  // namespace ref
}  // namespace dm

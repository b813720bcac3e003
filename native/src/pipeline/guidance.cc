#include "pipeline/guidance.h"

#include <algorithm>
#include <cmath>

#include "core/constants.h"

namespace dm {
namespace pipe {

void BlendVelocities(const float* const* v, const Curve* weights, int n, int frames, float* out) {
  constexpr int D = kLatentDim;
  for (int t = 0; t < frames; ++t) {
    float wsum = 0.f;
    for (int i = 0; i < n; ++i) wsum += weights[i].at_or(t, 1.f);
    const float inv = 1.f / std::max(wsum, 1e-8f);
    float* o = out + static_cast<long>(t) * D;
    for (int c = 0; c < D; ++c) o[c] = 0.f;
    for (int i = 0; i < n; ++i) {
      const float w = weights[i].at_or(t, 1.f);
      const float* vi = v[i] + static_cast<long>(t) * D;
      for (int c = 0; c < D; ++c) o[c] += w * vi[c];
    }
    for (int c = 0; c < D; ++c) o[c] *= inv;
  }
}

void ApgStep(const float* v_pos, const float* v_neg, int frames, const Curve& guidance,
             const Curve& momentum, float* running, float* out) {
  constexpr int D = kLatentDim;
  double r2[D] = {};
  double p2[D] = {};
  double rp[D] = {};
  for (int t = 0; t < frames; ++t) {
    const float m = momentum.at_or(t, kDefaultApgMomentum);
    const long o = static_cast<long>(t) * D;
    for (int c = 0; c < D; ++c) {
      const float r = (v_pos[o + c] - v_neg[o + c]) + m * running[o + c];
      running[o + c] = r;
      r2[c] += static_cast<double>(r) * r;
      p2[c] += static_cast<double>(v_pos[o + c]) * v_pos[o + c];
      rp[c] += static_cast<double>(r) * v_pos[o + c];
    }
  }
  double clip[D];
  double inv_p[D];
  double coef[D];  // Σ_T R'⊙u
  for (int c = 0; c < D; ++c) {
    const double nrm = std::sqrt(r2[c]);
    clip[c] = nrm > 0.0 ? std::min(1.0, static_cast<double>(kApgNormThreshold) / nrm) : 1.0;
    inv_p[c] = 1.0 / std::max(std::sqrt(p2[c]), 1e-12);
    coef[c] = clip[c] * rp[c] * inv_p[c];
  }
  for (int t = 0; t < frames; ++t) {
    const double gm1 = static_cast<double>(guidance.at_or(t, 1.f)) - 1.0;
    const long o = static_cast<long>(t) * D;
    for (int c = 0; c < D; ++c) {
      const double r = clip[c] * running[o + c];
      const double u = v_pos[o + c] * inv_p[c];
      const float orth = static_cast<float>(r - coef[c] * u);
      out[o + c] = v_pos[o + c] + static_cast<float>(gm1) * orth;
    }
  }
}

void CfgRescale(float* v, const float* v_pos, int frames, const Curve& rescale) {
  if (!rescale.set()) return;
  constexpr int D = kLatentDim;
  double np[D] = {};
  double nv[D] = {};
  for (int t = 0; t < frames; ++t) {
    const long o = static_cast<long>(t) * D;
    for (int c = 0; c < D; ++c) {
      np[c] += static_cast<double>(v_pos[o + c]) * v_pos[o + c];
      nv[c] += static_cast<double>(v[o + c]) * v[o + c];
    }
  }
  float sigma[D];
  for (int c = 0; c < D; ++c)
    sigma[c] = static_cast<float>(std::sqrt(np[c]) / std::max(std::sqrt(nv[c]), 1e-12));
  for (int t = 0; t < frames; ++t) {
    const float r = rescale.at(t);
    const long o = static_cast<long>(t) * D;
    for (int c = 0; c < D; ++c) v[o + c] = r * (v[o + c] * sigma[c]) + (1.f - r) * v[o + c];
  }
}

}  // namespace pipe
}  // namespace dm

#include "ref/vae.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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
constexpr int kDim = kLatentDim;
constexpr int kHalf = kHop / 2;
constexpr int kPair = 2 * kLatentDim;  // a frame's 64 coefficients ‖ a neighbour's 64
constexpr int kMaxFactors = 64;        // the block LU converges in far fewer frames (15)

// The crossfade: weight of frame k's own amplitudes at sample t of frame k, a raised cosine
// that is 1 at the frame centre and ½ at the frame edges; the neighbour on that side gets the
// rest (1 − own). d = (t + ½)/1920 − ½ is the distance from the centre in frames.
double OwnWeight(int t) {
  const double d = (t + 0.5) / kHop - 0.5;
  return 0.5 + 0.5 * std::cos(kPi * d);
}
double NeighbourWeight(int t) {
  const double d = (t + 0.5) / kHop - 0.5;
  return 0.5 - 0.5 * std::cos(kPi * d);
}

using Block = std::vector<double>;  // 64×64 row-major

Block Zero() { return Block(static_cast<size_t>(kDim) * kDim, 0.0); }

Block Mul(const Block& a, const Block& b) {
  Block c = Zero();
  for (int i = 0; i < kDim; ++i)
    for (int k = 0; k < kDim; ++k) {
      const double aik = a[i * kDim + k];
      for (int j = 0; j < kDim; ++j) c[i * kDim + j] += aik * b[k * kDim + j];
    }
  return c;
}

Block Add(const Block& a, const Block& b, double sb = 1.0) {
  Block c(a.size());
  for (size_t i = 0; i < a.size(); ++i) c[i] = a[i] + sb * b[i];
  return c;
}

// Gauss-Jordan with partial pivoting; the blocks are diagonally dominant, so a tiny pivot
// means a construction error.
Block Inverse(Block a) {
  Block inv = Zero();
  for (int i = 0; i < kDim; ++i) inv[i * kDim + i] = 1.0;
  for (int col = 0; col < kDim; ++col) {
    int piv = col;
    for (int r = col + 1; r < kDim; ++r)
      if (std::fabs(a[r * kDim + col]) > std::fabs(a[piv * kDim + col])) piv = r;
    if (std::fabs(a[piv * kDim + col]) < 1e-6)
      Fail(Status::kInternal, "ref vae: singular deconvolution block (column %d)", col);
    if (piv != col)
      for (int j = 0; j < kDim; ++j) {
        std::swap(a[piv * kDim + j], a[col * kDim + j]);
        std::swap(inv[piv * kDim + j], inv[col * kDim + j]);
      }
    const double s = 1.0 / a[col * kDim + col];
    for (int j = 0; j < kDim; ++j) {
      a[col * kDim + j] *= s;
      inv[col * kDim + j] *= s;
    }
    for (int r = 0; r < kDim; ++r) {
      const double f = a[r * kDim + col];
      if (r == col || f == 0.0) continue;
      for (int j = 0; j < kDim; ++j) {
        a[r * kDim + j] -= f * a[col * kDim + j];
        inv[r * kDim + j] -= f * inv[col * kDim + j];
      }
    }
  }
  return inv;
}

// Appends mᵀ as floats (the solver multiplies row vectors: v·mᵀ = (m·v)ᵀ), scaled by sign.
void AppendTransposed(const Block& m, double sign, std::vector<float>* out) {
  for (int j = 0; j < kDim; ++j)
    for (int i = 0; i < kDim; ++i) out->push_back(static_cast<float>(sign * m[i * kDim + j]));
}

const float* BlockAt(const std::vector<float>& blocks, long index) {
  return blocks.data() + index * kDim * kDim;
}
}  // namespace vae_detail

// Everything the codec needs, computed once (RefVae::SharedTables).
struct RefVae::Tables {
  int bins[kPartials];
  float gain[kPartials];
  float pan_l[kPartials], pan_r[kPartials];
  float amp_l[kLatentDim], amp_r[kLatentDim];  // gain · pan per latent channel
  // Crossfaded synthesis bases, [128, 960] each: rows 0..63 are carrier j × the own frame's
  // weight, rows 64..127 carrier j × the neighbour's (the previous frame's in the head half,
  // the next frame's in the tail half).
  std::vector<float> head_basis, tail_basis;
  std::vector<float> basis_t;  // [1920, 64]: the static carriers, for the analysis
  // Block LU of the deconvolution, as transposed 64×64 blocks (row vector × block), indexed
  // by min(k, factor_count − 1): the factors no longer change after factor_count frames.
  int factor_count = 0;
  std::vector<float> neg_lower_t;       // −(B₋·S_{k−1}⁻¹)ᵀ, forward elimination
  std::vector<float> inv_pivot_t;       // (S_k⁻¹)ᵀ
  std::vector<float> neg_inv_upper_t;   // −(S_k⁻¹·B₊)ᵀ
  std::vector<float> inv_last_pivot_t;  // ((S_k + B₊)⁻¹)ᵀ, when frame k is the last

  Tables();

 private:
  void PrecomputeDeconvolution();
};

const RefVae::Tables& RefVae::SharedTables() {
  static const Tables tables;
  return tables;
}

RefVae::RefVae() : tables_(SharedTables()) {}

int RefVae::PartialCyclesPerFrame(int p) const { return tables_.bins[p]; }
float RefVae::PartialGain(int p) const { return tables_.gain[p]; }
float RefVae::PartialPanLeft(int p) const { return tables_.pan_l[p]; }
float RefVae::PartialPanRight(int p) const { return tables_.pan_r[p]; }

RefVae::Tables::Tables()
    : head_basis(static_cast<size_t>(vae_detail::kPair) * vae_detail::kHalf),
      tail_basis(head_basis.size()),
      basis_t(static_cast<size_t>(kHop) * kLatentDim) {
  using vae_detail::kHalf;
  using vae_detail::kPi;
  // Mean over a frame of own² + neighbour²: the crossfade of two independent amplitudes has
  // this fraction of their power (0.75), which the gains make up for.
  double crossfade_power = 0.0;
  for (int t = 0; t < kHop; ++t) {
    const double o = vae_detail::OwnWeight(t), nb = vae_detail::NeighbourWeight(t);
    crossfade_power += (o * o + nb * nb) / kHop;
  }
  double sum_w2 = 0.0;
  double w[kPartials];
  for (int p = 0; p < kPartials; ++p) {
    bins[p] = vae_detail::kBins[p];
    const double hz = static_cast<double>(kFrameRate) * bins[p];
    w[p] = std::min(1.5, std::sqrt(400.0 / hz));  // gentle spectral tilt
    sum_w2 += w[p] * w[p];
    const double pan = 0.5 + 0.35 * std::sin(2.399963229728653 * p);  // golden-angle spread
    pan_l[p] = static_cast<float>(std::cos(pan * kPi / 2));
    pan_r[p] = static_cast<float>(std::sin(pan * kPi / 2));
  }
  // E[power per channel] = crossfade_power · sum_p g_p² / 2 for N(0,1) cos/sin amplitudes.
  const double norm =
      std::sqrt(2.0 * vae_detail::kTargetRms * vae_detail::kTargetRms / (crossfade_power * sum_w2));
  for (int p = 0; p < kPartials; ++p) gain[p] = static_cast<float>(w[p] * norm);
  for (int j = 0; j < kLatentDim; ++j) {
    amp_l[j] = gain[j / 2] * pan_l[j / 2];
    amp_r[j] = gain[j / 2] * pan_r[j / 2];
  }
  for (int p = 0; p < kPartials; ++p) {
    for (int n = 0; n < kHop; ++n) {
      // Exact phase: (m·n mod 1920) keeps the argument small.
      const double ph =
          2.0 * kPi * static_cast<double>((static_cast<long>(bins[p]) * n) % kHop) / kHop;
      const double carrier[2] = {std::cos(ph), std::sin(ph)};
      const double own = vae_detail::OwnWeight(n), nb = vae_detail::NeighbourWeight(n);
      std::vector<float>& half = n < kHalf ? head_basis : tail_basis;
      const long col = n % kHalf;
      for (int q = 0; q < 2; ++q) {
        const int j = 2 * p + q;
        basis_t[static_cast<size_t>(n) * kLatentDim + j] = static_cast<float>(carrier[q]);
        half[static_cast<size_t>(j) * kHalf + col] = static_cast<float>(carrier[q] * own);
        half[static_cast<size_t>(kLatentDim + j) * kHalf + col] =
            static_cast<float>(carrier[q] * nb);
      }
    }
  }
  PrecomputeDeconvolution();
}

void RefVae::Tables::PrecomputeDeconvolution() {
  using namespace vae_detail;
  // The analysis of the crossfaded atoms. For an envelope e(t) over one frame, with
  // C(m) = (1/H)·Σ e(t)·cos(2πmt/H) and S(m) likewise with sin:
  //   (2/H)·Σ e·cos(a)cos(b) = C(a−b) + C(a+b),   (2/H)·Σ e·sin(a)sin(b) = C(a−b) − C(a+b),
  //   (2/H)·Σ e·cos(a)sin(b) = S(a+b) − S(a−b),   (2/H)·Σ e·sin(a)cos(b) = S(a+b) + S(a−b),
  // and channel i of the analysis sees channel j of the synthesis through the pans and gains:
  //   B[i][j] = g_j/g_i · (pl_i·pl_j + pr_i·pr_j) · (2/H)·Σ e·carrier_i·carrier_j.
  const int max_m = 2 * *std::max_element(bins, bins + kPartials);
  std::vector<double> cos_table(kHop), sin_table(kHop);
  for (int t = 0; t < kHop; ++t) {
    cos_table[t] = std::cos(2.0 * kPi * t / kHop);
    sin_table[t] = std::sin(2.0 * kPi * t / kHop);
  }
  // Envelopes: the own weight over the frame (B₀), the previous frame's over the head half
  // (B₋), the next frame's over the tail half (B₊).
  auto envelope_block = [&](auto envelope) {
    std::vector<double> e(kHop), c(max_m + 1, 0.0), s(max_m + 1, 0.0);
    for (int t = 0; t < kHop; ++t) e[t] = envelope(t) / kHop;
    for (int m = 0; m <= max_m; ++m)
      for (int t = 0; t < kHop; ++t) {
        const long ph = (static_cast<long>(m) * t) % kHop;
        c[m] += e[t] * cos_table[ph];
        s[m] += e[t] * sin_table[ph];
      }
    auto C = [&](int m) { return c[std::abs(m)]; };
    auto S = [&](int m) { return m < 0 ? -s[-m] : s[m]; };
    Block b = Zero();
    for (int i = 0; i < kDim; ++i)
      for (int j = 0; j < kDim; ++j) {
        const int pi = i / 2, pj = j / 2, a = bins[pi], bb = bins[pj];
        double v;
        if (i % 2 == 0 && j % 2 == 0)
          v = C(a - bb) + C(a + bb);
        else if (i % 2 == 1 && j % 2 == 1)
          v = C(a - bb) - C(a + bb);
        else if (i % 2 == 0)
          v = S(a + bb) - S(a - bb);
        else
          v = S(a + bb) + S(a - bb);
        const double coupling =
            static_cast<double>(pan_l[pi]) * pan_l[pj] + static_cast<double>(pan_r[pi]) * pan_r[pj];
        b[i * kDim + j] = static_cast<double>(gain[pj]) / gain[pi] * coupling * v;
      }
    return b;
  };
  const Block own = envelope_block([](int t) { return OwnWeight(t); });
  const Block prev = envelope_block([](int t) { return t < kHalf ? NeighbourWeight(t) : 0.0; });
  const Block next = envelope_block([](int t) { return t >= kHalf ? NeighbourWeight(t) : 0.0; });

  // Block LU of the tridiagonal system: S_0 = B₀ + B₋ (the replicated left edge),
  // S_k = B₀ − L_k·B₊ with L_k = B₋·S_{k−1}⁻¹; the last frame's pivot is S_k + B₊ (the
  // replicated right edge). S_k converges geometrically (B₀ dominates), so from some frame on
  // every factor is the same.
  AppendTransposed(Zero(), 1.0, &neg_lower_t);  // frame 0 has nothing to eliminate
  Block pivot = Add(own, prev);                 // S_0
  bool converged = false;
  for (int k = 0;; ++k) {
    const Block pivot_inv = Inverse(pivot);
    AppendTransposed(pivot_inv, 1.0, &inv_pivot_t);
    AppendTransposed(Mul(pivot_inv, next), -1.0, &neg_inv_upper_t);
    AppendTransposed(Inverse(Add(pivot, next)), 1.0, &inv_last_pivot_t);
    if (converged) {
      factor_count = k + 1;
      return;
    }
    if (k + 1 >= kMaxFactors)
      Fail(Status::kInternal, "ref vae: deconvolution did not converge in %d frames", k + 1);
    const Block lower = Mul(prev, pivot_inv);  // L_{k+1}
    AppendTransposed(lower, -1.0, &neg_lower_t);
    const Block next_pivot = Add(own, Mul(lower, next), -1.0);
    double change = 0.0;
    for (size_t i = 0; i < pivot.size(); ++i)
      change = std::max(change, std::fabs(next_pivot[i] - pivot[i]));
    converged = change < 1e-12;
    pivot = next_pivot;
  }
}

void RefVae::DecodeOneFrame(const float* prev, const float* cur, const float* next, long dim_stride,
                            float* out, long channel_stride) const {
  using vae_detail::kHalf;
  using vae_detail::kPair;
  // Coefficients per half frame, [channel][own 64 ‖ neighbour 64], then one GEMM each half.
  float head[2 * kPair], tail[2 * kPair];
  for (int j = 0; j < kLatentDim; ++j) {
    const float zc = cur[j * dim_stride], zp = prev[j * dim_stride], zn = next[j * dim_stride];
    head[j] = tail[j] = zc * tables_.amp_l[j];
    head[kPair + j] = tail[kPair + j] = zc * tables_.amp_r[j];
    head[kLatentDim + j] = zp * tables_.amp_l[j];
    head[kPair + kLatentDim + j] = zp * tables_.amp_r[j];
    tail[kLatentDim + j] = zn * tables_.amp_l[j];
    tail[kPair + kLatentDim + j] = zn * tables_.amp_r[j];
  }
  Gemm(2, kHalf, kPair, head, kPair, tables_.head_basis.data(), kHalf, out, channel_stride, nullptr,
       false);
  Gemm(2, kHalf, kPair, tail, kPair, tables_.tail_basis.data(), kHalf, out + kHalf, channel_stride,
       nullptr, false);
}

void RefVae::DecodeStrided(const float* z, int frames, long frame_stride, long dim_stride,
                           Edge edge, float* audio) const {
  const long S = static_cast<long>(frames) * kHop;
  const bool cyclic = edge == Edge::kCyclic;
  for (int k = 0; k < frames; ++k) {
    const int prev = k > 0 ? k - 1 : (cyclic ? frames - 1 : 0);
    const int next = k + 1 < frames ? k + 1 : (cyclic ? 0 : frames - 1);
    DecodeOneFrame(z + prev * frame_stride, z + k * frame_stride, z + next * frame_stride,
                   dim_stride, audio + static_cast<long>(k) * kHop, S);
  }
}

void RefVae::Decode(const float* latents, int frames, float* audio, Edge edge) const {
  if (frames < 1 || !latents || !audio)
    Fail(Status::kInvalidArgument, "ref vae decode: bad arguments (T=%d)", frames);
  DecodeStrided(latents, frames, 1, frames, edge, audio);
}

void RefVae::DecodeFrameMajor(const float* z, int frames, float* audio) const {
  if (frames < 1 || !z || !audio)
    Fail(Status::kInvalidArgument, "ref vae decode: bad arguments (T=%d)", frames);
  DecodeStrided(z, frames, kLatentDim, 1, Edge::kReplicate, audio);
}

void RefVae::AnalyzeFrame(const float* audio, long channel_stride, float* y) const {
  float proj[2 * kLatentDim];  // <a_c, carrier_j>
  Gemm(2, kLatentDim, kHop, audio, channel_stride, tables_.basis_t.data(), kLatentDim, proj,
       kLatentDim, nullptr, false);
  for (int j = 0; j < kLatentDim; ++j) {
    const int p = j / 2;
    y[j] = (tables_.pan_l[p] * proj[j] + tables_.pan_r[p] * proj[kLatentDim + j]) /
           (tables_.gain[p] * (kHop / 2.0f));
  }
}

void RefVae::Deconvolve(float* y, long frames) const {
  using vae_detail::BlockAt;
  constexpr int D = kLatentDim;
  const long last = tables_.factor_count - 1;
  for (long k = 1; k < frames; ++k)  // r_k = y_k − L_k·r_{k−1}
    Gemm(1, D, D, y + (k - 1) * D, D, BlockAt(tables_.neg_lower_t, std::min(k, last)), D, y + k * D,
         D, nullptr, true);
  float z[D];
  Gemm(1, D, D, y + (frames - 1) * D, D,
       BlockAt(tables_.inv_last_pivot_t, std::min(frames - 1, last)), D, z, D, nullptr, false);
  std::memcpy(y + (frames - 1) * D, z, sizeof z);
  for (long k = frames - 2; k >= 0; --k) {  // z_k = S_k⁻¹·r_k − S_k⁻¹·B₊·z_{k+1}
    const long i = std::min(k, last);
    Gemm(1, D, D, y + k * D, D, BlockAt(tables_.inv_pivot_t, i), D, z, D, nullptr, false);
    Gemm(1, D, D, y + (k + 1) * D, D, BlockAt(tables_.neg_inv_upper_t, i), D, z, D, nullptr, true);
    std::memcpy(y + k * D, z, sizeof z);
  }
}

void RefVae::EncodeFrameMajor(const float* audio, long samples, float* latents_tc) const {
  if (samples < kHop || samples % kHop != 0 || !audio || !latents_tc)
    Fail(Status::kInvalidArgument, "ref vae encode: %ld samples is not a positive multiple of %d",
         samples, kHop);
  const long T = samples / kHop;
  for (long k = 0; k < T; ++k) AnalyzeFrame(audio + k * kHop, samples, latents_tc + k * kLatentDim);
  Deconvolve(latents_tc, T);
}

void RefVae::Encode(const float* audio, long samples, float* moments) const {
  if (samples < kHop || samples % kHop != 0 || !audio || !moments)
    Fail(Status::kInvalidArgument, "ref vae encode: %ld samples is not a positive multiple of %d",
         samples, kHop);
  const long T = samples / kHop;
  // The logvar half holds exactly one frame-major latent: solve there, then transpose.
  float* frame_major = moments + kLatentDim * T;
  EncodeFrameMajor(audio, samples, frame_major);
  for (long k = 0; k < T; ++k)
    for (int c = 0; c < kLatentDim; ++c) moments[c * T + k] = frame_major[k * kLatentDim + c];
  std::fill(frame_major, frame_major + kLatentDim * T, vae_detail::kLogVar);
}

}  // namespace ref
}  // namespace dm

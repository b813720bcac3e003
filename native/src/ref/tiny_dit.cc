#include "ref/tiny_dit.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "core/error.h"
#include "core/rng.h"
#include "ref/gemm.h"
#include "ref/simd.h"

namespace dm {
namespace ref {

namespace dit_detail {

constexpr int kInChannels = 192;  // context (128) ‖ hidden states (64)
constexpr int kCtxChannels = 128;
constexpr int kLatent = 64;
constexpr int kEncDim = 2048;
constexpr int kFreqDim = 256;  // sinusoidal timestep features
constexpr float kNormEps = 1e-6f;
constexpr double kRopeTheta = 1e6;
constexpr char kMagic[8] = {'D', 'M', 'T', 'D', 'I', 'T', '0', '1'};
constexpr uint32_t kVersion = 1;
constexpr int kQueryBlock = 32;  // query rows per attention task
constexpr int kKeyBlock = 64;    // keys per online-softmax step
constexpr int kRowChunk = 64;    // rows per task in element-wise passes

inline uint64_t Fnv1a64(const uint8_t* p, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

inline size_t Align16(size_t n) { return (n + 15) / 16 * 16; }
inline long RoundUp(long n, long m) { return (n + m - 1) / m * m; }

// Runs f(begin, end) over [0, rows) in chunks of `chunk` rows on par. The std::function
// wraps a 16-byte closure (reference + two ints), which libstdc++ stores inline.
template <class F>
void ParRows(Parallel& par, int rows, int chunk, const F& f) {
  if (rows <= 0) return;
  const int n = (rows + chunk - 1) / chunk;
  struct Range {
    int rows, chunk;
  } const r{rows, chunk};
  static_assert(sizeof(Range) == 8, "closure must stay small");
  const F* fp = &f;
  par.For(n, [fp, r](int i) {
    const int b = i * r.chunk;
    (*fp)(b, std::min(r.rows, b + r.chunk));
  });
}

template <class F>
void ParFor(Parallel& par, int n, const F& f) {
  const F* fp = &f;
  par.For(n, [fp](int i) { (*fp)(i); });
}

// ---- vector kernels (instantiated for avx2+fma and for baseline x86-64) -----------------

using simd::Exp2NonPos8;
using simd::HMax8;
using simd::HSum8;
using simd::Load8;
using simd::Splat8;
using simd::Store8;
using simd::V8;
using simd::V8i;

struct AttendArgs {
  int r0, r1;      // query rows [r0, r1) (token indices)
  const float* q;  // row r at q + r*ldq (pre-scaled by log2(e)/sqrt(hd))
  long ldq;
  const float* kt;  // keys transposed: kt[d*ldk + j], zero beyond nk up to ldk
  long ldk;
  const float* v;  // row j at v + j*ldv
  long ldv;
  int nk;      // number of keys
  int window;  // < 0: full attention; else |i-j| <= window
  float* o;    // row r at o + r*ldo
  long ldo;
};

// Flash-style attention for a block of query rows (at most kQueryBlock) against one
// key/value head. Key blocks are the outer loop so a 64-key slice of K^T and V stays in L1
// while every query row of the block consumes it; per-row softmax state (running max m,
// running sum l, unnormalised output acc) lives in small stack arrays.
template <int HD>
inline __attribute__((always_inline)) void AttendBody(const AttendArgs& a) {
  constexpr int NV = HD / 8;
  constexpr int NG = kKeyBlock / 8;
  const float kNegInf = -std::numeric_limits<float>::infinity();
  const V8 ninf = Splat8(kNegInf);
  const V8i lane = V8i{0, 1, 2, 3, 4, 5, 6, 7};
  alignas(32) float pbuf[kKeyBlock];
  alignas(32) float accs[kQueryBlock][HD];
  float ms[kQueryBlock], ls[kQueryBlock];
  const int nrows = a.r1 - a.r0;
  for (int r = 0; r < nrows; ++r) {
    ms[r] = kNegInf;
    ls[r] = 0.0f;
    for (int d = 0; d < HD; ++d) accs[r][d] = 0.0f;
  }
  auto lo_of = [&a](int i) { return a.window < 0 ? 0 : std::max(0, i - a.window); };
  auto hi_of = [&a](int i) { return a.window < 0 ? a.nk : std::min(a.nk, i + a.window + 1); };
  const int kb_begin = lo_of(a.r0) & ~7, kb_end = hi_of(a.r1 - 1);
  for (int jb = kb_begin; jb < kb_end; jb += kKeyBlock) {
    for (int r = 0; r < nrows; ++r) {
      const int i = a.r0 + r;
      const int jlo = lo_of(i), jhi = hi_of(i);
      if (jb + kKeyBlock <= jlo || jb >= jhi) continue;
      const float* qi = a.q + static_cast<long>(i) * a.ldq;
      V8 s[NG];
#pragma GCC unroll 16
      for (int g = 0; g < NG; ++g) s[g] = Splat8(0.0f);
#pragma GCC unroll 16
      for (int d = 0; d < HD; ++d) {
        const V8 qd = Splat8(qi[d]);
        const float* krow = a.kt + d * a.ldk + jb;
#pragma GCC unroll 16
        for (int g = 0; g < NG; ++g) s[g] += qd * Load8(krow + 8 * g);
      }
      if (jb < jlo || jb + kKeyBlock > jhi) {
#pragma GCC unroll 16
        for (int g = 0; g < NG; ++g) {
          const V8i idx = lane + (jb + 8 * g);
          s[g] = (idx >= jlo) & (idx < jhi) ? s[g] : ninf;
        }
      }
      V8 mv = s[0];
#pragma GCC unroll 16
      for (int g = 1; g < NG; ++g) mv = mv > s[g] ? mv : s[g];
      const float m = ms[r];
      const float mn = std::max(m, HMax8(mv));
      const float alpha = m == kNegInf ? 0.0f : std::exp2(m - mn);
      const V8 mnv = Splat8(mn);
      V8 ps = Splat8(0.0f);
#pragma GCC unroll 16
      for (int g = 0; g < NG; ++g) {
        const V8 pg = Exp2NonPos8(s[g] - mnv);
        ps += pg;
        Store8(pbuf + 8 * g, pg);
      }
      ls[r] = ls[r] * alpha + HSum8(ps);
      ms[r] = mn;
      // P·V with two independent accumulator chains; masked keys (p == 0) are skipped.
      const int j0 = std::max(jb, jlo), j1 = std::min(jb + kKeyBlock, jhi);
      V8 acc0[NV], acc1[NV];
      const V8 av = Splat8(alpha);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        acc0[v] = Load8(accs[r] + 8 * v) * av;
        acc1[v] = Splat8(0.0f);
      }
      int j = j0;
      for (; j + 2 <= j1; j += 2) {
        const V8 p0 = Splat8(pbuf[j - jb]), p1 = Splat8(pbuf[j + 1 - jb]);
        const float* v0 = a.v + static_cast<long>(j) * a.ldv;
        const float* v1 = v0 + a.ldv;
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) {
          acc0[v] += p0 * Load8(v0 + 8 * v);
          acc1[v] += p1 * Load8(v1 + 8 * v);
        }
      }
      if (j < j1) {
        const V8 p0 = Splat8(pbuf[j - jb]);
        const float* v0 = a.v + static_cast<long>(j) * a.ldv;
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) acc0[v] += p0 * Load8(v0 + 8 * v);
      }
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) Store8(accs[r] + 8 * v, acc0[v] + acc1[v]);
    }
  }
  for (int r = 0; r < nrows; ++r) {
    const V8 inv = Splat8(ls[r] > 0.0f ? 1.0f / ls[r] : 0.0f);
    float* oi = a.o + static_cast<long>(a.r0 + r) * a.ldo;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) Store8(oi + 8 * v, Load8(accs[r] + 8 * v) * inv);
  }
}

inline __attribute__((always_inline)) void AttendDispatch(const AttendArgs& a, int hd) {
  switch (hd) {
    case 8: AttendBody<8>(a); break;
    case 16: AttendBody<16>(a); break;
    case 24: AttendBody<24>(a); break;
    case 32: AttendBody<32>(a); break;
    case 48: AttendBody<48>(a); break;
    case 64: AttendBody<64>(a); break;
    case 96: AttendBody<96>(a); break;
    default: AttendBody<128>(a); break;
  }
}

// out[i] = silu(g[i]) * u[i] over n (multiple of 8) values.
inline __attribute__((always_inline)) void SiluMulBody(const float* g, const float* u, float* out,
                                                       int n) {
  const V8 zero = Splat8(0.0f), one = Splat8(1.0f), nl2e = Splat8(-1.4426950408889634f);
  for (int i = 0; i < n; i += 8) {
    const V8 x = Load8(g + i);
    const V8 ax = x < zero ? -x : x;
    const V8 e = Exp2NonPos8(ax * nl2e);  // exp(-|x|)
    const V8 sig = x >= zero ? one / (one + e) : e / (one + e);
    Store8(out + i, x * sig * Load8(u + i));
  }
}

__attribute__((target("avx2,fma"))) void AttendAvx2(const AttendArgs& a, int hd) {
  AttendDispatch(a, hd);
}
void AttendGeneric(const AttendArgs& a, int hd) { AttendDispatch(a, hd); }
__attribute__((target("avx2,fma"))) void SiluMulAvx2(const float* g, const float* u, float* o,
                                                     int n) {
  SiluMulBody(g, u, o, n);
}
void SiluMulGeneric(const float* g, const float* u, float* o, int n) { SiluMulBody(g, u, o, n); }

inline void Attend(const AttendArgs& a, int hd) {
  if (simd::HasAvx2Fma())
    AttendAvx2(a, hd);
  else
    AttendGeneric(a, hd);
}

inline void SiluMul(const float* g, const float* u, float* o, int n) {
  if (simd::HasAvx2Fma())
    SiluMulAvx2(g, u, o, n);
  else
    SiluMulGeneric(g, u, o, n);
}

// ---- scalar helpers ---------------------------------------------------------------------

inline float Silu(float x) { return x / (1.0f + std::exp(-x)); }

// y[o] = b[o] + sum_i W[o,i] x[i]   (W in PyTorch [out, in] layout)
inline void MatVec(const float* W, const float* b, const float* x, int in, int out, float* y) {
  for (int o = 0; o < out; ++o) {
    float s = 0.0f;
    const float* w = W + static_cast<long>(o) * in;
    for (int i = 0; i < in; ++i) s += w[i] * x[i];
    y[o] = s + b[o];
  }
}

inline void RmsNormRow(const float* x, const float* w, int n, float* y) {
  float ss = 0.0f;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const float r = 1.0f / std::sqrt(ss / static_cast<float>(n) + kNormEps);
  for (int i = 0; i < n; ++i) y[i] = x[i] * r * w[i];
}

// RMSNorm over head_dim, then (optionally) RoPE at cos/sin row, then scale; in place.
inline void HeadNormRope(float* x, const float* w, int hd, const float* cs, const float* sn,
                         float scale) {
  RmsNormRow(x, w, hd, x);
  if (cs != nullptr) {
    const int half = hd / 2;
    for (int d = 0; d < half; ++d) {
      const float x1 = x[d], x2 = x[d + half];
      x[d] = x1 * cs[d] - x2 * sn[d];
      x[d + half] = x2 * cs[d] + x1 * sn[d];
    }
  }
  if (scale != 1.0f)
    for (int d = 0; d < hd; ++d) x[d] *= scale;
}

// ---- scratch layout ---------------------------------------------------------------------

struct Plan {
  int B, T, L, N;
  long ldk;
  size_t tin, x, nrm, qkv, att, gu, enc, ckv, kt, rope_c, rope_s, temb, proj, tmp_t, mod,
      total;  // offsets in floats
};

inline Plan MakePlan(const TinyDiTConfig& c, int B, int T, int L) {
  Plan p{};
  p.B = B;
  p.T = T;
  p.L = L;
  p.N = T / 2;
  const size_t BN = static_cast<size_t>(B) * p.N, BL = static_cast<size_t>(B) * L;
  const size_t H = c.hidden, QD = static_cast<size_t>(c.heads) * c.head_dim,
               KD = static_cast<size_t>(c.kv_heads) * c.head_dim;
  p.ldk = RoundUp(std::max(p.N, L), 8) + kKeyBlock;
  size_t off = 0;
  auto take = [&off](size_t n) {
    const size_t o = off;
    off += Align16(n);
    return o;
  };
  p.tin = take(BN * 2 * kInChannels);
  p.x = take(BN * H);
  p.nrm = take(BN * H);
  p.qkv = take(BN * (QD + 2 * KD));
  p.att = take(BN * QD);
  p.gu = take(BN * 2 * static_cast<size_t>(c.mlp));
  p.enc = take(BL * H);
  p.ckv = take(BL * 2 * KD);
  p.kt = take(static_cast<size_t>(B) * c.kv_heads * c.head_dim * p.ldk);
  p.rope_c = take(static_cast<size_t>(p.N) * (c.head_dim / 2));
  p.rope_s = take(static_cast<size_t>(p.N) * (c.head_dim / 2));
  p.temb = take(static_cast<size_t>(B) * H);
  p.proj = take(static_cast<size_t>(B) * 6 * H);
  p.tmp_t = take(kFreqDim + 4 * H);
  p.mod = take(static_cast<size_t>(B) * 6 * H);
  p.total = off;
  return p;
}

// ---- serialization helpers --------------------------------------------------------------

inline void PutU32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }
  uint32_t U32(const char* what) {
    Need(4, what);
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p_[pos_ + i]) << (8 * i);
    pos_ += 4;
    return v;
  }
  uint64_t U64(const char* what) {
    Need(8, what);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p_[pos_ + i]) << (8 * i);
    pos_ += 8;
    return v;
  }
  const uint8_t* Bytes(size_t n, const char* what) {
    Need(n, what);
    const uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  void Need(size_t n, const char* what) const {
    if (n > n_ - pos_)
      Fail(Status::kCorrupt,
           "tiny-dit weights: truncated at %s (need %zu bytes at offset %zu, %zu left)", what, n,
           pos_, n_ - pos_);
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

inline std::string ShapeString(const std::vector<int>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

inline size_t Numel(const std::vector<int>& s) {
  size_t n = 1;
  for (int d : s) n *= static_cast<size_t>(d);
  return n;
}

}  // namespace dit_detail

// ---- config -------------------------------------------------------------------------------

void TinyDiTConfig::Validate() const {
  auto bad = [this](const char* why) {
    Fail(Status::kInvalidArgument,
         "tiny-dit config invalid (%s): hidden=%d layers=%d heads=%d head_dim=%d kv_heads=%d "
         "mlp=%d window=%d",
         why, hidden, layers, heads, head_dim, kv_heads, mlp, window);
  };
  if (hidden < 8 || hidden > 4096 || hidden % 8 != 0)
    bad("hidden must be a multiple of 8 in [8,4096]");
  if (layers < 1 || layers > 64) bad("layers must be in [1,64]");
  if (head_dim < 8 || head_dim > 128 || head_dim % 8 != 0 || head_dim == 40 || head_dim == 56 ||
      head_dim == 72 || head_dim == 80 || head_dim == 88 || head_dim == 104 || head_dim == 112 ||
      head_dim == 120)
    bad("head_dim must be one of 8,16,24,32,48,64,96,128");
  if (heads < 1 || heads > 64) bad("heads must be in [1,64]");
  if (kv_heads < 1 || kv_heads > heads || heads % kv_heads != 0)
    bad("heads must be a multiple of kv_heads");
  if (mlp < 8 || mlp > 16384 || mlp % 8 != 0) bad("mlp must be a multiple of 8 in [8,16384]");
  if (window < 0 || window > (1 << 20)) bad("window must be in [0,2^20]");
}

bool TinyDiTConfig::operator==(const TinyDiTConfig& o) const {
  return hidden == o.hidden && layers == o.layers && heads == o.heads && head_dim == o.head_dim &&
         kv_heads == o.kv_heads && mlp == o.mlp && window == o.window;
}

// ---- weights ------------------------------------------------------------------------------

std::vector<std::pair<std::string, std::vector<int>>> TinyDiTWeights::Layout(
    const TinyDiTConfig& c) {
  using dit_detail::kEncDim;
  using dit_detail::kFreqDim;
  using dit_detail::kInChannels;
  using dit_detail::kLatent;
  const int H = c.hidden, QD = c.heads * c.head_dim, KD = c.kv_heads * c.head_dim;
  std::vector<std::pair<std::string, std::vector<int>>> out;
  for (const char* te : {"time_embed", "time_embed_r"}) {
    const std::string p = te;
    out.push_back({p + ".linear_1.weight", {H, kFreqDim}});
    out.push_back({p + ".linear_1.bias", {H}});
    out.push_back({p + ".linear_2.weight", {H, H}});
    out.push_back({p + ".linear_2.bias", {H}});
    out.push_back({p + ".time_proj.weight", {6 * H, H}});
    out.push_back({p + ".time_proj.bias", {6 * H}});
  }
  out.push_back({"proj_in.weight", {H, kInChannels, 2}});
  out.push_back({"proj_in.bias", {H}});
  out.push_back({"condition_embedder.weight", {H, kEncDim}});
  out.push_back({"condition_embedder.bias", {H}});
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    out.push_back({p + "scale_shift_table", {1, 6, H}});
    out.push_back({p + "self_attn_norm.weight", {H}});
    for (const char* a : {"self_attn", "cross_attn"}) {
      const std::string q = p + a + ".";
      if (std::string(a) == "cross_attn") out.push_back({p + "cross_attn_norm.weight", {H}});
      out.push_back({q + "q_proj.weight", {QD, H}});
      out.push_back({q + "k_proj.weight", {KD, H}});
      out.push_back({q + "v_proj.weight", {KD, H}});
      out.push_back({q + "o_proj.weight", {H, QD}});
      out.push_back({q + "q_norm.weight", {c.head_dim}});
      out.push_back({q + "k_norm.weight", {c.head_dim}});
    }
    out.push_back({p + "mlp_norm.weight", {H}});
    out.push_back({p + "mlp.gate_proj.weight", {c.mlp, H}});
    out.push_back({p + "mlp.up_proj.weight", {c.mlp, H}});
    out.push_back({p + "mlp.down_proj.weight", {H, c.mlp}});
  }
  out.push_back({"norm_out.weight", {H}});
  out.push_back({"scale_shift_table", {1, 2, H}});
  out.push_back({"proj_out.weight", {H, kLatent, 2}});
  out.push_back({"proj_out.bias", {kLatent}});
  return out;
}

TinyDiTWeights TinyDiTWeights::Random(const TinyDiTConfig& c, uint64_t seed) {
  c.Validate();
  TinyDiTWeights w;
  w.config = c;
  for (auto& [name, shape] : Layout(c)) {
    NamedTensor t;
    t.name = name;
    t.shape = shape;
    t.data.resize(dit_detail::Numel(shape));
    const uint64_t stream =
        dit_detail::Fnv1a64(reinterpret_cast<const uint8_t*>(name.data()), name.size());
    auto ends = [&name](const char* suf) {
      const size_t n = std::strlen(suf);
      return name.size() >= n && name.compare(name.size() - n, n, suf) == 0;
    };
    float scale;
    float offset = 0.0f;
    if (ends("norm.weight") || name == "norm_out.weight") {
      scale = 0.0f;
      offset = 1.0f;
    } else if (ends("scale_shift_table")) {
      scale = 0.1f;
    } else if (ends(".bias")) {
      scale = 0.02f;
    } else if (name == "proj_out.weight") {
      scale = 1.0f / std::sqrt(static_cast<float>(shape[0]));  // [in, out, k]: fan-in = in
    } else {
      const size_t fan_in = t.data.size() / static_cast<size_t>(shape[0]);
      scale = 1.0f / std::sqrt(static_cast<float>(fan_in));
      if (ends("time_proj.weight")) scale *= 0.5f;
      if (name == "condition_embedder.weight") scale *= 20.0f;  // text embeddings are ~0.02
    }
    for (size_t i = 0; i < t.data.size(); ++i)
      t.data[i] = offset + (scale == 0.0f ? 0.0f : scale * CounterNormal(seed, stream, i));
    w.tensors.push_back(std::move(t));
  }
  return w;
}

const NamedTensor* TinyDiTWeights::Find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

NamedTensor* TinyDiTWeights::Find(const std::string& name) {
  for (auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

size_t TinyDiTWeights::ParameterCount() const {
  size_t n = 0;
  for (const auto& t : tensors) n += t.data.size();
  return n;
}

std::vector<uint8_t> TinyDiTWeights::Serialize() const {
  using dit_detail::PutU32;
  std::vector<uint8_t> out;
  size_t bytes = 64 + 8;
  for (const auto& t : tensors)
    bytes += 12 + t.name.size() + 4 * t.shape.size() + 4 * t.data.size();
  out.reserve(bytes);
  for (char ch : dit_detail::kMagic) out.push_back(static_cast<uint8_t>(ch));
  PutU32(out, dit_detail::kVersion);
  for (int v : {config.hidden, config.layers, config.heads, config.head_dim, config.kv_heads,
                config.mlp, config.window})
    PutU32(out, static_cast<uint32_t>(v));
  PutU32(out, static_cast<uint32_t>(tensors.size()));
  for (const auto& t : tensors) {
    PutU32(out, static_cast<uint32_t>(t.name.size()));
    out.insert(out.end(), t.name.begin(), t.name.end());
    PutU32(out, static_cast<uint32_t>(t.shape.size()));
    for (int d : t.shape) PutU32(out, static_cast<uint32_t>(d));
    for (float f : t.data) {
      uint32_t u;
      std::memcpy(&u, &f, 4);
      PutU32(out, u);
    }
  }
  const uint64_t h = dit_detail::Fnv1a64(out.data(), out.size());
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(h >> (8 * i)));
  return out;
}

TinyDiTWeights TinyDiTWeights::Deserialize(const uint8_t* data, size_t size) {
  using dit_detail::Reader;
  if (data == nullptr && size != 0) Fail(Status::kCorrupt, "tiny-dit weights: null payload");
  Reader r(data, size);
  const uint8_t* magic = r.Bytes(8, "magic");
  if (std::memcmp(magic, dit_detail::kMagic, 8) != 0)
    Fail(Status::kCorrupt, "tiny-dit weights: bad magic (not a DMTDIT01 file)");
  const uint32_t version = r.U32("version");
  if (version != dit_detail::kVersion)
    Fail(Status::kCorrupt, "tiny-dit weights: unsupported version %u (expected %u)", version,
         dit_detail::kVersion);
  uint32_t cf[7];
  for (auto& v : cf) v = r.U32("config");
  for (uint32_t v : cf)
    if (v > (1u << 20))
      Fail(Status::kCorrupt, "tiny-dit weights: invalid config (field %u out of range)", v);
  TinyDiTWeights w;
  w.config =
      TinyDiTConfig{static_cast<int>(cf[0]), static_cast<int>(cf[1]), static_cast<int>(cf[2]),
                    static_cast<int>(cf[3]), static_cast<int>(cf[4]), static_cast<int>(cf[5]),
                    static_cast<int>(cf[6])};
  try {
    w.config.Validate();
  } catch (const Error& e) {
    Fail(Status::kCorrupt, "tiny-dit weights: %s", e.what());
  }
  const auto layout = Layout(w.config);
  const uint32_t count = r.U32("tensor count");
  if (count != layout.size())
    Fail(Status::kCorrupt, "tiny-dit weights: tensor count %u, expected %zu for this config", count,
         layout.size());
  w.tensors.reserve(layout.size());
  for (const auto& [want_name, want_shape] : layout) {
    const uint32_t name_len = r.U32("tensor name length");
    if (name_len != want_name.size()) {
      const size_t show = std::min<size_t>(std::min<size_t>(name_len, 64), r.left());
      const std::string got(reinterpret_cast<const char*>(r.Bytes(show, "tensor name")), show);
      Fail(Status::kCorrupt, "tiny-dit weights: unexpected tensor '%s' (len %u), expected '%s'",
           got.c_str(), name_len, want_name.c_str());
    }
    const std::string name(reinterpret_cast<const char*>(r.Bytes(name_len, "tensor name")),
                           name_len);
    if (name != want_name)
      Fail(Status::kCorrupt, "tiny-dit weights: unexpected tensor '%s', expected '%s'",
           name.c_str(), want_name.c_str());
    const uint32_t ndim = r.U32("tensor rank");
    if (ndim != want_shape.size())
      Fail(Status::kCorrupt, "tiny-dit weights: tensor '%s' has rank %u, expected %zu",
           name.c_str(), ndim, want_shape.size());
    std::vector<int> shape(ndim);
    for (uint32_t i = 0; i < ndim; ++i) {
      const uint32_t d = r.U32("tensor dims");
      if (d != static_cast<uint32_t>(want_shape[i])) {
        Fail(Status::kCorrupt, "tiny-dit weights: tensor '%s' dim %u is %u, expected shape %s",
             name.c_str(), i, d, dit_detail::ShapeString(want_shape).c_str());
      }
      shape[i] = static_cast<int>(d);
    }
    const size_t n = dit_detail::Numel(shape);
    r.Need(n * 4, ("data of '" + name + "'").c_str());  // checked before allocating
    const uint8_t* src = r.Bytes(n * 4, "tensor data");
    NamedTensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.data.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t u =
          static_cast<uint32_t>(src[4 * i]) | static_cast<uint32_t>(src[4 * i + 1]) << 8 |
          static_cast<uint32_t>(src[4 * i + 2]) << 16 | static_cast<uint32_t>(src[4 * i + 3]) << 24;
      float f;
      std::memcpy(&f, &u, 4);
      if (!std::isfinite(f))
        Fail(Status::kCorrupt, "tiny-dit weights: non-finite value in '%s' at index %zu",
             name.c_str(), i);
      t.data[i] = f;
    }
    w.tensors.push_back(std::move(t));
  }
  const size_t body = r.pos();
  const uint64_t want = r.U64("checksum");
  if (r.left() != 0)
    Fail(Status::kCorrupt, "tiny-dit weights: %zu trailing bytes after checksum", r.left());
  if (dit_detail::Fnv1a64(data, body) != want)
    Fail(Status::kCorrupt, "tiny-dit weights: checksum mismatch");
  return w;
}

// ---- model --------------------------------------------------------------------------------

TinyDiT::TinyDiT(const TinyDiTWeights& w) : cfg_(w.config) {
  cfg_.Validate();
  const auto layout = TinyDiTWeights::Layout(cfg_);
  if (w.tensors.size() != layout.size())
    Fail(Status::kInvalidArgument, "tiny-dit: %zu tensors, expected %zu", w.tensors.size(),
         layout.size());
  for (size_t i = 0; i < layout.size(); ++i) {
    const auto& t = w.tensors[i];
    if (t.name != layout[i].first || t.shape != layout[i].second ||
        t.data.size() != dit_detail::Numel(t.shape))
      Fail(Status::kInvalidArgument, "tiny-dit: tensor %zu is '%s' %s, expected '%s' %s", i,
           t.name.c_str(), dit_detail::ShapeString(t.shape).c_str(), layout[i].first.c_str(),
           dit_detail::ShapeString(layout[i].second).c_str());
  }
  weight_bytes_ = w.WeightBytes();

  auto get = [&w](const std::string& n) -> const NamedTensor& { return *w.Find(n); };
  auto alloc = [this](size_t n) {
    const size_t off = packed_.size();
    packed_.resize(off + dit_detail::Align16(n), 0.0f);
    return off;
  };
  auto copy = [&](const std::string& n) {
    const auto& t = get(n);
    const size_t off = alloc(t.data.size());
    std::copy(t.data.begin(), t.data.end(), packed_.begin() + static_cast<long>(off));
    return off;
  };
  // Transposes and concatenates PyTorch [out_i, in] weights into W^T [in, sum out_i].
  auto linear = [&](std::initializer_list<std::string> parts, const char* bias) {
    Lin l;
    l.in = get(*parts.begin()).shape[1];
    for (const auto& p : parts) l.out += get(p).shape[0];
    l.w = alloc(static_cast<size_t>(l.in) * l.out);
    int col = 0;
    for (const auto& p : parts) {
      const auto& t = get(p);
      const int o_n = t.shape[0];
      for (int o = 0; o < o_n; ++o)
        for (int i = 0; i < l.in; ++i)
          packed_[l.w + static_cast<size_t>(i) * l.out + col + o] =
              t.data[static_cast<size_t>(o) * l.in + i];
      col += o_n;
    }
    if (bias != nullptr) {
      l.has_bias = true;
      l.b = copy(bias);
    }
    return l;
  };
  auto time_embed = [&](const std::string& p) {
    TimeEmbed t{};
    t.w1 = copy(p + ".linear_1.weight");
    t.b1 = copy(p + ".linear_1.bias");
    t.w2 = copy(p + ".linear_2.weight");
    t.b2 = copy(p + ".linear_2.bias");
    t.wp = copy(p + ".time_proj.weight");
    t.bp = copy(p + ".time_proj.bias");
    return t;
  };
  const int H = cfg_.hidden;
  te_ = time_embed("time_embed");
  ter_ = time_embed("time_embed_r");
  {  // Conv1d(192→H, k=2, s=2): W[o][c][k] → W^T[(k*192 + c)][o]
    const auto& t = get("proj_in.weight");
    proj_in_.in = 2 * dit_detail::kInChannels;
    proj_in_.out = H;
    proj_in_.w = alloc(static_cast<size_t>(proj_in_.in) * H);
    for (int o = 0; o < H; ++o)
      for (int c = 0; c < dit_detail::kInChannels; ++c)
        for (int k = 0; k < 2; ++k)
          packed_[proj_in_.w + static_cast<size_t>(k * dit_detail::kInChannels + c) * H + o] =
              t.data[(static_cast<size_t>(o) * dit_detail::kInChannels + c) * 2 + k];
    proj_in_.has_bias = true;
    proj_in_.b = copy("proj_in.bias");
  }
  cond_ = linear({"condition_embedder.weight"}, "condition_embedder.bias");
  for (int l = 0; l < cfg_.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    Layer L{};
    L.table = copy(p + "scale_shift_table");
    L.self_norm = copy(p + "self_attn_norm.weight");
    L.qkv = linear({p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                    p + "self_attn.v_proj.weight"},
                   nullptr);
    L.o = linear({p + "self_attn.o_proj.weight"}, nullptr);
    L.q_norm = copy(p + "self_attn.q_norm.weight");
    L.k_norm = copy(p + "self_attn.k_norm.weight");
    L.cross_norm = copy(p + "cross_attn_norm.weight");
    L.cq = linear({p + "cross_attn.q_proj.weight"}, nullptr);
    L.ckv = linear({p + "cross_attn.k_proj.weight", p + "cross_attn.v_proj.weight"}, nullptr);
    L.co = linear({p + "cross_attn.o_proj.weight"}, nullptr);
    L.cq_norm = copy(p + "cross_attn.q_norm.weight");
    L.ck_norm = copy(p + "cross_attn.k_norm.weight");
    L.mlp_norm = copy(p + "mlp_norm.weight");
    L.gu = linear({p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}, nullptr);
    L.down = linear({p + "mlp.down_proj.weight"}, nullptr);
    layers_.push_back(L);
  }
  norm_out_ = copy("norm_out.weight");
  out_table_ = copy("scale_shift_table");
  {  // ConvTranspose1d(H→64, k=2, s=2): W[i][o][k] → W^T[i][k*64 + o]
    const auto& t = get("proj_out.weight");
    const auto& b = get("proj_out.bias");
    const int D = dit_detail::kLatent;
    proj_out_.in = H;
    proj_out_.out = 2 * D;
    proj_out_.w = alloc(static_cast<size_t>(H) * 2 * D);
    for (int i = 0; i < H; ++i)
      for (int o = 0; o < D; ++o)
        for (int k = 0; k < 2; ++k)
          packed_[proj_out_.w + static_cast<size_t>(i) * 2 * D + k * D + o] =
              t.data[(static_cast<size_t>(i) * D + o) * 2 + k];
    proj_out_.has_bias = true;
    proj_out_.b = alloc(2 * D);
    for (int k = 0; k < 2; ++k)
      for (int o = 0; o < D; ++o) packed_[proj_out_.b + k * D + o] = b.data[o];
  }
}

size_t TinyDiT::ScratchBytes(int batch, int frames, int cond_len) const {
  if (batch < 1 || frames < 2 || cond_len < 1) return 0;
  return dit_detail::MakePlan(cfg_, batch, frames, cond_len).total * sizeof(float);
}

void TinyDiT::Forward(const DecoderInputs& in, float* velocity, void* scratch,
                      Parallel& par) const {
  using namespace dit_detail;  // NOLINT: function scope only
  if (in.batch < 1 || in.frames < 2 || in.frames % 2 != 0 || in.cond_len < 1)
    Fail(Status::kInvalidArgument, "tiny-dit forward: bad shape B=%d T=%d L=%d (T must be even)",
         in.batch, in.frames, in.cond_len);
  if (!in.hidden_states || !in.timestep || !in.encoder_hidden_states || !in.context_latents ||
      !velocity || !scratch)
    Fail(Status::kInvalidArgument, "tiny-dit forward: null tensor pointer");

  const Plan p = MakePlan(cfg_, in.batch, in.frames, in.cond_len);
  float* const S = static_cast<float*>(scratch);
  const int B = p.B, T = p.T, L = p.L, N = p.N, H = cfg_.hidden, hd = cfg_.head_dim;
  const int heads = cfg_.heads, kvh = cfg_.kv_heads, group = heads / kvh;
  const int QD = heads * hd, KD = kvh * hd, M = cfg_.mlp;
  const int BN = B * N, BL = B * L;
  const long ldqkv = QD + 2 * KD;
  float* const tin = S + p.tin;
  float* const x = S + p.x;
  float* const nrm = S + p.nrm;
  float* const qkv = S + p.qkv;
  float* const att = S + p.att;
  float* const gu = S + p.gu;
  float* const enc = S + p.enc;
  float* const ckv = S + p.ckv;
  float* const kt = S + p.kt;
  float* const rc = S + p.rope_c;
  float* const rs = S + p.rope_s;
  float* const temb = S + p.temb;
  float* const proj = S + p.proj;
  float* const tt = S + p.tmp_t;
  float* const mod = S + p.mod;
  const float qscale = 1.4426950408889634f / std::sqrt(static_cast<float>(hd));

  // 1. Timestep embeddings (tiny; serial). timestep_r is tied to timestep, so t - r = 0.
  for (int b = 0; b < B; ++b) {
    for (int e = 0; e < H; ++e) temb[b * H + e] = 0.0f;
    for (int e = 0; e < 6 * H; ++e) proj[b * 6 * H + e] = 0.0f;
    for (int which = 0; which < 2; ++which) {
      const TimeEmbed& te = which == 0 ? te_ : ter_;
      const double tv = which == 0 ? static_cast<double>(in.timestep[b]) * 1000.0 : 0.0;
      const int half = kFreqDim / 2;
      float* sinus = tt;
      float* h1 = tt + kFreqDim;
      float* h2 = h1 + H;
      for (int i = 0; i < half; ++i) {
        const double f = std::exp(-std::log(10000.0) * i / half);
        sinus[i] = static_cast<float>(std::cos(tv * f));
        sinus[half + i] = static_cast<float>(std::sin(tv * f));
      }
      MatVec(P(te.w1), P(te.b1), sinus, kFreqDim, H, h1);
      for (int e = 0; e < H; ++e) h1[e] = Silu(h1[e]);
      MatVec(P(te.w2), P(te.b2), h1, H, H, h2);
      for (int e = 0; e < H; ++e) temb[b * H + e] += h2[e];
      for (int e = 0; e < H; ++e) h2[e] = Silu(h2[e]);
      const float* wp = P(te.wp);
      const float* bp = P(te.bp);
      for (int o = 0; o < 6 * H; ++o) {
        float s = 0.0f;
        for (int i = 0; i < H; ++i) s += wp[static_cast<long>(o) * H + i] * h2[i];
        proj[b * 6 * H + o] += s + bp[o];
      }
    }
  }

  // 2. RoPE tables for positions 0..N-1.
  for (int n = 0; n < N; ++n)
    for (int d = 0; d < hd / 2; ++d) {
      const double inv = std::pow(kRopeTheta, -2.0 * d / hd);
      rc[n * (hd / 2) + d] = static_cast<float>(std::cos(n * inv));
      rs[n * (hd / 2) + d] = static_cast<float>(std::sin(n * inv));
    }

  // 3. tin = cat(context, hidden) per frame; two frames per token row.
  ParRows(par, B * T, 256, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      float* dst = tin + static_cast<long>(r) * kInChannels;
      std::memcpy(dst, in.context_latents + static_cast<long>(r) * kCtxChannels, kCtxChannels * 4);
      std::memcpy(dst + kCtxChannels, in.hidden_states + static_cast<long>(r) * kLatent,
                  kLatent * 4);
    }
  });
  ParallelGemm(par, BN, H, proj_in_.in, tin, proj_in_.in, P(proj_in_.w), H, x, H, P(proj_in_.b),
               false);
  ParallelGemm(par, BL, H, kEncDim, in.encoder_hidden_states, kEncDim, P(cond_.w), H, enc, H,
               P(cond_.b), false, 6);

  // Transposes K heads (already normed) of rows [b*n_tok, ...) into kt, zero padding.
  struct KtJob {
    const float* src;
    long ld;
    int n_tok;
  };
  auto transpose_k = [&](const KtJob& job) {
    ParFor(par, B * kvh, [&](int task) {
      const int b = task / kvh, g = task % kvh;
      float* dst = kt + static_cast<long>(task) * hd * p.ldk;
      for (int d = 0; d < hd; ++d) {
        float* row = dst + static_cast<long>(d) * p.ldk;
        const float* src = job.src + static_cast<long>(b) * job.n_tok * job.ld + g * hd + d;
        for (int j = 0; j < job.n_tok; ++j) row[j] = src[static_cast<long>(j) * job.ld];
        for (long j = job.n_tok; j < p.ldk; ++j) row[j] = 0.0f;
      }
    });
  };
  auto attend = [&](const float* q, long ldq, const float* v, long ldv, int n_q, int n_k,
                    int window) {
    const int qblocks = (n_q + kQueryBlock - 1) / kQueryBlock;
    ParFor(par, B * heads * qblocks, [&](int task) {
      const int qb = task % qblocks, bh = task / qblocks;
      const int b = bh / heads, h = bh % heads, g = h / group;
      AttendArgs a;
      a.r0 = qb * kQueryBlock;
      a.r1 = std::min(n_q, a.r0 + kQueryBlock);
      a.q = q + static_cast<long>(b) * n_q * ldq + h * hd;
      a.ldq = ldq;
      a.kt = kt + static_cast<long>(b * kvh + g) * hd * p.ldk;
      a.ldk = p.ldk;
      a.v = v + static_cast<long>(b) * n_k * ldv + g * hd;
      a.ldv = ldv;
      a.nk = n_k;
      a.window = window;
      a.o = att + static_cast<long>(b) * n_q * QD + h * hd;
      a.ldo = QD;
      Attend(a, hd);
    });
  };

  for (int li = 0; li < cfg_.layers; ++li) {
    const Layer& ly = layers_[li];
    const int window = li % 2 == 0 ? cfg_.window : -1;
    for (int b = 0; b < B; ++b)
      for (int e = 0; e < 6 * H; ++e) mod[b * 6 * H + e] = P(ly.table)[e] + proj[b * 6 * H + e];

    // Self-attention.
    ParRows(par, BN, kRowChunk, [&](int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        const float* md = mod + (r / N) * 6 * H;
        float* y = nrm + static_cast<long>(r) * H;
        RmsNormRow(x + static_cast<long>(r) * H, P(ly.self_norm), H, y);
        for (int e = 0; e < H; ++e) y[e] = y[e] * (1.0f + md[H + e]) + md[e];
      }
    });
    ParallelGemm(par, BN, ly.qkv.out, H, nrm, H, P(ly.qkv.w), ly.qkv.out, qkv, ldqkv, nullptr,
                 false);
    ParRows(par, BN, kRowChunk, [&](int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        const int n = r % N;
        float* row = qkv + static_cast<long>(r) * ldqkv;
        const float* cs = rc + n * (hd / 2);
        const float* sn = rs + n * (hd / 2);
        for (int h = 0; h < heads; ++h)
          HeadNormRope(row + h * hd, P(ly.q_norm), hd, cs, sn, qscale);
        for (int g = 0; g < kvh; ++g)
          HeadNormRope(row + QD + g * hd, P(ly.k_norm), hd, cs, sn, 1.0f);
      }
    });
    transpose_k(KtJob{qkv + QD, ldqkv, N});
    attend(qkv, ldqkv, qkv + QD + KD, ldqkv, N, N, window);
    ParallelGemm(par, BN, H, QD, att, QD, P(ly.o.w), H, nrm, H, nullptr, false);
    // x += gate * o; then cross-attention input norm.
    ParRows(par, BN, kRowChunk, [&](int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        const float* gate = mod + (r / N) * 6 * H + 2 * H;
        float* xr = x + static_cast<long>(r) * H;
        float* y = nrm + static_cast<long>(r) * H;
        for (int e = 0; e < H; ++e) xr[e] += gate[e] * y[e];
        RmsNormRow(xr, P(ly.cross_norm), H, y);
      }
    });

    // Cross-attention to the conditioning (no RoPE, no mask: padded tokens participate).
    float* const cq = qkv;  // [BN, QD]
    ParallelGemm(par, BN, QD, H, nrm, H, P(ly.cq.w), QD, cq, QD, nullptr, false);
    ParallelGemm(par, BL, 2 * KD, H, enc, H, P(ly.ckv.w), 2 * KD, ckv, 2 * KD, nullptr, false, 6);
    ParRows(par, BN, kRowChunk, [&](int r0, int r1) {
      for (int r = r0; r < r1; ++r)
        for (int h = 0; h < heads; ++h)
          HeadNormRope(cq + static_cast<long>(r) * QD + h * hd, P(ly.cq_norm), hd, nullptr, nullptr,
                       qscale);
    });
    for (int r = 0; r < BL; ++r)
      for (int g = 0; g < kvh; ++g)
        HeadNormRope(ckv + static_cast<long>(r) * 2 * KD + g * hd, P(ly.ck_norm), hd, nullptr,
                     nullptr, 1.0f);
    transpose_k(KtJob{ckv, 2L * KD, L});
    attend(cq, QD, ckv + KD, 2L * KD, N, L, -1);
    // x += cross_o(att) (plain residual, accumulate straight into x).
    ParallelGemm(par, BN, H, QD, att, QD, P(ly.co.w), H, x, H, nullptr, true);

    // SwiGLU MLP with AdaLN.
    ParRows(par, BN, kRowChunk, [&](int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        const float* md = mod + (r / N) * 6 * H;
        float* y = nrm + static_cast<long>(r) * H;
        RmsNormRow(x + static_cast<long>(r) * H, P(ly.mlp_norm), H, y);
        for (int e = 0; e < H; ++e) y[e] = y[e] * (1.0f + md[4 * H + e]) + md[3 * H + e];
      }
    });
    ParallelGemm(par, BN, 2 * M, H, nrm, H, P(ly.gu.w), 2 * M, gu, 2 * M, nullptr, false);
    ParRows(par, BN, kRowChunk, [&](int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        float* row = gu + static_cast<long>(r) * 2 * M;
        SiluMul(row, row + M, row, M);
      }
    });
    ParallelGemm(par, BN, H, M, gu, 2 * M, P(ly.down.w), H, nrm, H, nullptr, false);
    ParRows(par, BN, kRowChunk, [&](int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        const float* gate = mod + (r / N) * 6 * H + 5 * H;
        float* xr = x + static_cast<long>(r) * H;
        const float* y = nrm + static_cast<long>(r) * H;
        for (int e = 0; e < H; ++e) xr[e] += gate[e] * y[e];
      }
    });
  }

  // Output: norm_out with (shift, scale) = scale_shift_table + temb, then the deconv.
  ParRows(par, BN, kRowChunk, [&](int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const float* te = temb + (r / N) * H;
      const float* tab = P(out_table_);
      float* y = nrm + static_cast<long>(r) * H;
      RmsNormRow(x + static_cast<long>(r) * H, P(norm_out_), H, y);
      for (int e = 0; e < H; ++e) y[e] = y[e] * (1.0f + tab[H + e] + te[e]) + (tab[e] + te[e]);
    }
  });
  ParallelGemm(par, BN, proj_out_.out, H, nrm, H, P(proj_out_.w), proj_out_.out, velocity,
               proj_out_.out, P(proj_out_.b), false);
}

}  // namespace ref
}  // namespace dm

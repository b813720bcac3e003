#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/memory.h"
#include "core/rng.h"
#include "ref/simd.h"
#include "ref/thread_pool.h"
#include "ref/tiny_dit.h"

// GCC 12 mis-pairs the replaced operator new/delete below with malloc/free.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

// Counts heap allocations while g_count_allocs is set (to prove Forward allocates nothing).
namespace {
std::atomic<bool> g_count_allocs{false};
std::atomic<long> g_allocs{0};
}  // namespace
void* operator new(size_t n) {
  if (g_count_allocs.load(std::memory_order_relaxed)) g_allocs++;
  void* p = std::malloc(n == 0 ? 1 : n);
  if (!p) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace dm {
namespace ref {
namespace {

struct Inputs {
  int B, T, L;
  std::vector<float> hs, ctx, enc, ts;
  DecoderInputs Get() const {
    DecoderInputs in;
    in.batch = B;
    in.frames = T;
    in.cond_len = L;
    in.hidden_states = hs.data();
    in.timestep = ts.data();
    in.encoder_hidden_states = enc.data();
    in.context_latents = ctx.data();
    return in;
  }
};

Inputs MakeInputs(int B, int T, int L, uint64_t seed) {
  Inputs x{B, T, L, {}, {}, {}, {}};
  x.hs.resize(static_cast<size_t>(B) * T * 64);
  x.ctx.resize(static_cast<size_t>(B) * T * 128);
  x.enc.resize(static_cast<size_t>(B) * L * 2048);
  FillNormal(x.hs.data(), static_cast<long>(x.hs.size()), seed, 1);
  FillNormal(x.ctx.data(), static_cast<long>(x.ctx.size()), seed, 2);
  FillNormal(x.enc.data(), static_cast<long>(x.enc.size()), seed, 3);
  for (float& e : x.enc) e *= 0.02f;
  for (int b = 0; b < B; ++b) x.ts.push_back(0.1f + 0.8f * b / std::max(1, B - 1));
  return x;
}

std::vector<float> RunDit(const TinyDiT& m, const Inputs& x, Parallel& par) {
  HostAllocator alloc;
  auto scratch = alloc.Allocate(m.ScratchBytes(x.B, x.T, x.L), "scratch");
  std::vector<float> v(static_cast<size_t>(x.B) * x.T * 64);
  m.Forward(x.Get(), v.data(), scratch->data(), par);
  return v;
}

// Straightforward double-precision forward over the PyTorch-layout weights.
std::vector<float> NaiveForward(const TinyDiTWeights& w, const Inputs& x) {
  const TinyDiTConfig& c = w.config;
  const int H = c.hidden, hd = c.head_dim, NH = c.heads, KV = c.kv_heads, M = c.mlp;
  const int N = x.T / 2, L = x.L;
  auto W = [&w](const std::string& n) { return w.Find(n)->data.data(); };
  auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  auto linear = [](const float* Wt, const float* b, const std::vector<double>& in, int nin,
                   int nout) {
    std::vector<double> out(nout);
    for (int o = 0; o < nout; ++o) {
      double s = b ? b[o] : 0.0;
      for (int i = 0; i < nin; ++i)
        s += static_cast<double>(Wt[static_cast<size_t>(o) * nin + i]) * in[i];
      out[o] = s;
    }
    return out;
  };
  auto rms = [](std::vector<double> v, const float* g) {
    double ss = 0;
    for (double e : v) ss += e * e;
    const double r = 1.0 / std::sqrt(ss / v.size() + 1e-6);
    for (size_t i = 0; i < v.size(); ++i) v[i] *= r * g[i];
    return v;
  };
  std::vector<float> out(static_cast<size_t>(x.B) * x.T * 64);
  for (int b = 0; b < x.B; ++b) {
    std::vector<double> temb(H, 0.0), proj(6 * H, 0.0);
    for (int which = 0; which < 2; ++which) {
      const std::string p = which ? "time_embed_r" : "time_embed";
      const double tv = which ? 0.0 : x.ts[b] * 1000.0;
      std::vector<double> s(256);
      for (int i = 0; i < 128; ++i) {
        const double f = std::exp(-std::log(10000.0) * i / 128);
        s[i] = std::cos(tv * f);
        s[128 + i] = std::sin(tv * f);
      }
      auto h1 = linear(W(p + ".linear_1.weight"), W(p + ".linear_1.bias"), s, 256, H);
      for (auto& e : h1) e = silu(e);
      auto h2 = linear(W(p + ".linear_2.weight"), W(p + ".linear_2.bias"), h1, H, H);
      for (int i = 0; i < H; ++i) temb[i] += h2[i];
      for (auto& e : h2) e = silu(e);
      auto pr = linear(W(p + ".time_proj.weight"), W(p + ".time_proj.bias"), h2, H, 6 * H);
      for (int i = 0; i < 6 * H; ++i) proj[i] += pr[i];
    }
    std::vector<std::vector<double>> X(N, std::vector<double>(H));
    const float* win = W("proj_in.weight");
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < H; ++o) {
        double s = W("proj_in.bias")[o];
        for (int k = 0; k < 2; ++k) {
          const int f = 2 * n + k;
          for (int ch = 0; ch < 192; ++ch) {
            const double v = ch < 128 ? x.ctx[(static_cast<size_t>(b) * x.T + f) * 128 + ch]
                                      : x.hs[(static_cast<size_t>(b) * x.T + f) * 64 + ch - 128];
            s += win[(static_cast<size_t>(o) * 192 + ch) * 2 + k] * v;
          }
        }
        X[n][o] = s;
      }
    std::vector<std::vector<double>> E(L);
    for (int l = 0; l < L; ++l) {
      std::vector<double> e(x.enc.begin() + (static_cast<long>(b) * L + l) * 2048,
                            x.enc.begin() + (static_cast<long>(b) * L + l + 1) * 2048);
      E[l] = linear(W("condition_embedder.weight"), W("condition_embedder.bias"), e, 2048, H);
    }
    auto attention = [&](const std::vector<std::vector<double>>& Q,
                         const std::vector<std::vector<double>>& K,
                         const std::vector<std::vector<double>>& V, int window) {
      std::vector<std::vector<double>> O(Q.size(), std::vector<double>(NH * hd, 0.0));
      for (size_t i = 0; i < Q.size(); ++i)
        for (int h = 0; h < NH; ++h) {
          const int g = h / (NH / KV);
          std::vector<double> sc(K.size());
          double mx = -1e300;
          for (size_t j = 0; j < K.size(); ++j) {
            const bool ok =
                window < 0 || std::abs(static_cast<long>(i) - static_cast<long>(j)) <= window;
            double s = -1e300;
            if (ok) {
              s = 0;
              for (int d = 0; d < hd; ++d) s += Q[i][h * hd + d] * K[j][g * hd + d];
              s /= std::sqrt(static_cast<double>(hd));
            }
            sc[j] = s;
            mx = std::max(mx, s);
          }
          double den = 0;
          for (auto& s : sc) den += (s = s <= -1e299 ? 0.0 : std::exp(s - mx));
          for (size_t j = 0; j < K.size(); ++j)
            for (int d = 0; d < hd; ++d) O[i][h * hd + d] += sc[j] / den * V[j][g * hd + d];
        }
      return O;
    };
    auto headnorm = [&](std::vector<double>& v, int heads, const float* g, bool rope, int pos) {
      for (int h = 0; h < heads; ++h) {
        std::vector<double> s(v.begin() + h * hd, v.begin() + (h + 1) * hd);
        s = rms(s, g);
        if (rope)
          for (int d = 0; d < hd / 2; ++d) {
            const double a = pos * std::pow(1e6, -2.0 * d / hd);
            const double x1 = s[d], x2 = s[d + hd / 2];
            s[d] = x1 * std::cos(a) - x2 * std::sin(a);
            s[d + hd / 2] = x2 * std::cos(a) + x1 * std::sin(a);
          }
        std::copy(s.begin(), s.end(), v.begin() + h * hd);
      }
    };
    for (int li = 0; li < c.layers; ++li) {
      const std::string p = "layers." + std::to_string(li) + ".";
      std::vector<double> mod(6 * H);
      for (int i = 0; i < 6 * H; ++i) mod[i] = W(p + "scale_shift_table")[i] + proj[i];
      std::vector<std::vector<double>> Q(N), K(N), V(N);
      for (int n = 0; n < N; ++n) {
        auto h = rms(X[n], W(p + "self_attn_norm.weight"));
        for (int i = 0; i < H; ++i) h[i] = h[i] * (1 + mod[H + i]) + mod[i];
        Q[n] = linear(W(p + "self_attn.q_proj.weight"), nullptr, h, H, NH * hd);
        K[n] = linear(W(p + "self_attn.k_proj.weight"), nullptr, h, H, KV * hd);
        V[n] = linear(W(p + "self_attn.v_proj.weight"), nullptr, h, H, KV * hd);
        headnorm(Q[n], NH, W(p + "self_attn.q_norm.weight"), true, n);
        headnorm(K[n], KV, W(p + "self_attn.k_norm.weight"), true, n);
      }
      auto O = attention(Q, K, V, li % 2 == 0 ? c.window : -1);
      for (int n = 0; n < N; ++n) {
        auto o = linear(W(p + "self_attn.o_proj.weight"), nullptr, O[n], NH * hd, H);
        for (int i = 0; i < H; ++i) X[n][i] += mod[2 * H + i] * o[i];
      }
      std::vector<std::vector<double>> CK(L), CV(L);
      for (int l = 0; l < L; ++l) {
        CK[l] = linear(W(p + "cross_attn.k_proj.weight"), nullptr, E[l], H, KV * hd);
        CV[l] = linear(W(p + "cross_attn.v_proj.weight"), nullptr, E[l], H, KV * hd);
        headnorm(CK[l], KV, W(p + "cross_attn.k_norm.weight"), false, 0);
      }
      for (int n = 0; n < N; ++n) {
        auto h = rms(X[n], W(p + "cross_attn_norm.weight"));
        Q[n] = linear(W(p + "cross_attn.q_proj.weight"), nullptr, h, H, NH * hd);
        headnorm(Q[n], NH, W(p + "cross_attn.q_norm.weight"), false, 0);
      }
      O = attention(Q, CK, CV, -1);
      for (int n = 0; n < N; ++n) {
        auto o = linear(W(p + "cross_attn.o_proj.weight"), nullptr, O[n], NH * hd, H);
        for (int i = 0; i < H; ++i) X[n][i] += o[i];
        auto h = rms(X[n], W(p + "mlp_norm.weight"));
        for (int i = 0; i < H; ++i) h[i] = h[i] * (1 + mod[4 * H + i]) + mod[3 * H + i];
        auto g = linear(W(p + "mlp.gate_proj.weight"), nullptr, h, H, M);
        auto u = linear(W(p + "mlp.up_proj.weight"), nullptr, h, H, M);
        for (int i = 0; i < M; ++i) g[i] = silu(g[i]) * u[i];
        auto d = linear(W(p + "mlp.down_proj.weight"), nullptr, g, M, H);
        for (int i = 0; i < H; ++i) X[n][i] += mod[5 * H + i] * d[i];
      }
    }
    const float* tab = W("scale_shift_table");
    const float* wo = W("proj_out.weight");
    for (int n = 0; n < N; ++n) {
      auto y = rms(X[n], W("norm_out.weight"));
      for (int i = 0; i < H; ++i) y[i] = y[i] * (1 + tab[H + i] + temb[i]) + tab[i] + temb[i];
      for (int k = 0; k < 2; ++k)
        for (int o = 0; o < 64; ++o) {
          double s = W("proj_out.bias")[o];
          for (int i = 0; i < H; ++i) s += y[i] * wo[(static_cast<size_t>(i) * 64 + o) * 2 + k];
          out[(static_cast<size_t>(b) * x.T + 2 * n + k) * 64 + o] = static_cast<float>(s);
        }
    }
  }
  return out;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

TEST(RefTinyDiT, MatchesNaiveReference) {
  TinyDiTConfig cfg = TinyDiTConfig::RefS();
  cfg.window = 5;  // small window so the sliding layer is exercised at a small T
  const auto w = TinyDiTWeights::Random(cfg, 7);
  const TinyDiT m(w);
  const Inputs x = MakeInputs(2, 40, 33, 11);
  ThreadPool pool(2);
  const auto got = RunDit(m, x, pool);
  const auto want = NaiveForward(w, x);
  double scale = 0;
  for (float v : want) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  EXPECT_GT(scale, 0.05);
  EXPECT_LT(MaxAbsDiff(got, want), 2e-4 * std::max(1.0, scale)) << "scale " << scale;
  // The baseline (non-AVX2) kernels agree too.
  simd::ForceGenericKernelsForTesting(true);
  const auto generic = RunDit(m, x, pool);
  simd::ForceGenericKernelsForTesting(false);
  EXPECT_LT(MaxAbsDiff(generic, want), 2e-4 * std::max(1.0, scale));
}

TEST(RefTinyDiT, FiniteDeterministicThreadInvariant) {
  const TinyDiT m(TinyDiTWeights::Random(TinyDiTConfig::RefS(), 1));
  const Inputs x = MakeInputs(3, 126, 40, 2);
  SerialParallel serial;
  ThreadPool pool(2), pool3(3);
  const auto a = RunDit(m, x, serial);
  const auto b = RunDit(m, x, pool);
  const auto c = RunDit(m, x, pool3);
  ASSERT_EQ(a.size(), static_cast<size_t>(3 * 126 * 64));
  for (float v : a) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
  EXPECT_EQ(std::memcmp(a.data(), c.data(), a.size() * 4), 0);
  double rms = 0;
  for (float v : a) rms += v * v;
  rms = std::sqrt(rms / a.size());
  EXPECT_GT(rms, 0.05);
  EXPECT_LT(rms, 20.0);
  // Batch rows are independent: row 1 alone gives the same bits.
  Inputs one = MakeInputs(1, 126, 40, 2);
  std::copy(x.hs.begin() + 126 * 64, x.hs.begin() + 2 * 126 * 64, one.hs.begin());
  std::copy(x.ctx.begin() + 126 * 128, x.ctx.begin() + 2 * 126 * 128, one.ctx.begin());
  std::copy(x.enc.begin() + 40 * 2048, x.enc.begin() + 2 * 40 * 2048, one.enc.begin());
  one.ts[0] = x.ts[1];
  const auto r1 = RunDit(m, one, pool);
  EXPECT_EQ(std::memcmp(r1.data(), a.data() + 126 * 64, r1.size() * 4), 0);
}

TEST(RefTinyDiT, SlidingWindowMatters) {
  const auto w = TinyDiTWeights::Random(TinyDiTConfig::RefS(), 3);
  auto wide = w;
  wide.config.window = 100000;  // layer 0 becomes full attention
  const TinyDiT sliding(w), full(wide);
  ThreadPool pool(2);
  const Inputs small = MakeInputs(1, 200, 32, 4);  // 100 tokens: window 128 covers everything
  EXPECT_EQ(RunDit(sliding, small, pool), RunDit(full, small, pool));
  const Inputs big = MakeInputs(1, 600, 32, 4);  // 300 tokens
  const auto a = RunDit(sliding, big, pool), b = RunDit(full, big, pool);
  EXPECT_GT(MaxAbsDiff(a, b), 1e-4);
  // Tokens whose window is the whole sequence in both cases differ only through layer 1 mixing.
}

TEST(RefTinyDiT, ForwardDoesNotAllocate) {
  const TinyDiT m(TinyDiTWeights::Random(TinyDiTConfig::RefS(), 5));
  const Inputs x = MakeInputs(2, 250, 60, 6);
  ThreadPool pool(2);
  HostAllocator alloc;
  auto scratch = alloc.Allocate(m.ScratchBytes(x.B, x.T, x.L), "scratch");
  std::vector<float> v(static_cast<size_t>(x.B) * x.T * 64);
  const DecoderInputs in = x.Get();
  m.Forward(in, v.data(), scratch->data(), pool);  // warm-up (thread start, statics)
  g_allocs = 0;
  g_count_allocs = true;
  m.Forward(in, v.data(), scratch->data(), pool);
  g_count_allocs = false;
  EXPECT_EQ(g_allocs.load(), 0);
}

TEST(RefTinyDiT, RejectsBadShapes) {
  const TinyDiT m(TinyDiTWeights::Random(TinyDiTConfig::RefS(), 5));
  Inputs x = MakeInputs(1, 11, 32, 1);
  SerialParallel par;
  std::vector<float> v(11 * 64), scratch(1 << 20);
  try {
    m.Forward(x.Get(), v.data(), scratch.data(), par);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidArgument);
  }
}

TEST(RefTinyDiT, SerializeRoundTripBitExact) {
  const auto w = TinyDiTWeights::Random(TinyDiTConfig::RefS(), 9);
  EXPECT_EQ(w.WeightBytes(), w.ParameterCount() * 4);
  const auto bytes = w.Serialize();
  const auto w2 = TinyDiTWeights::Deserialize(bytes.data(), bytes.size());
  EXPECT_TRUE(w2.config == w.config);
  ASSERT_EQ(w2.tensors.size(), w.tensors.size());
  for (size_t i = 0; i < w.tensors.size(); ++i) {
    EXPECT_EQ(w2.tensors[i].name, w.tensors[i].name);
    EXPECT_EQ(w2.tensors[i].shape, w.tensors[i].shape);
    EXPECT_EQ(std::memcmp(w2.tensors[i].data.data(), w.tensors[i].data.data(),
                          w.tensors[i].data.size() * 4),
              0);
  }
  EXPECT_EQ(w2.Serialize(), bytes);
  const TinyDiT a(w), b(w2);
  EXPECT_EQ(a.WeightBytes(), w.WeightBytes());
  SerialParallel par;
  const Inputs x = MakeInputs(1, 20, 32, 3);
  EXPECT_EQ(RunDit(a, x, par), RunDit(b, x, par));
  // Names follow the PyTorch module.
  EXPECT_NE(w.Find("proj_in.weight"), nullptr);
  EXPECT_NE(w.Find("layers.0.self_attn.q_proj.weight"), nullptr);
  EXPECT_NE(w.Find("layers.1.cross_attn.k_norm.weight"), nullptr);
  EXPECT_NE(w.Find("layers.1.mlp.down_proj.weight"), nullptr);
  EXPECT_EQ(w.Find("layers.2.mlp.down_proj.weight"), nullptr);
}

std::string CorruptMessage(const std::vector<uint8_t>& b) {
  try {
    TinyDiTWeights::Deserialize(b.data(), b.size());
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kCorrupt) << e.what();
    return e.what();
  }
  return "accepted";
}

TEST(RefTinyDiT, DeserializeRejectsCorruptInput) {
  TinyDiTConfig small = TinyDiTConfig::RefS();
  small.hidden = 16;
  small.heads = 2;
  small.head_dim = 8;
  small.kv_heads = 1;
  small.mlp = 32;
  const auto w = TinyDiTWeights::Random(small, 9);
  const auto good = w.Serialize();
  EXPECT_EQ(CorruptMessage(good), "accepted");

  // Every truncation is rejected with a "truncated" message.
  for (size_t n = 0; n < good.size(); n += (n < 200 ? 1 : 97)) {
    std::vector<uint8_t> t(good.begin(), good.begin() + static_cast<long>(n));
    EXPECT_NE(CorruptMessage(t).find("truncated"), std::string::npos) << n;
  }
  auto bad = good;
  bad[0] = 'X';
  EXPECT_NE(CorruptMessage(bad).find("bad magic"), std::string::npos);
  bad = good;
  bad[8] = 2;
  EXPECT_NE(CorruptMessage(bad).find("unsupported version"), std::string::npos);
  bad = good;
  bad[12 + 4 * 4] = 3;  // kv_heads = 3 > heads = 2
  EXPECT_NE(CorruptMessage(bad).find("config"), std::string::npos);
  bad = good;
  bad[12] = 0xff;
  bad[13] = 0xff;
  bad[14] = 0xff;
  bad[15] = 0x7f;  // absurd hidden size: rejected before any allocation
  EXPECT_NE(CorruptMessage(bad).find("config"), std::string::npos);
  bad = good;
  bad[40] = 0xff;  // tensor count
  EXPECT_NE(CorruptMessage(bad).find("tensor count"), std::string::npos);

  auto renamed = w;
  renamed.tensors[3].name = "time_embed.linear_2.bogus";
  EXPECT_NE(CorruptMessage(renamed.Serialize()).find("unexpected tensor"), std::string::npos);
  auto reshaped = w;
  reshaped.tensors[0].shape = {small.hidden + 1, 256};
  reshaped.tensors[0].data.resize(static_cast<size_t>(small.hidden + 1) * 256);
  EXPECT_NE(CorruptMessage(reshaped.Serialize()).find("expected shape"), std::string::npos);
  auto rank = w;
  rank.tensors[1].shape = {1, small.hidden};
  EXPECT_NE(CorruptMessage(rank.Serialize()).find("rank"), std::string::npos);
  auto nan = w;
  nan.tensors[2].data[5] = std::nanf("");
  EXPECT_NE(CorruptMessage(nan.Serialize()).find("non-finite"), std::string::npos);
  bad = good;
  bad[good.size() / 2] ^= 0x01;  // a data bit
  EXPECT_NE(CorruptMessage(bad).find("checksum"), std::string::npos);
  bad = good;
  bad.push_back(0);
  EXPECT_NE(CorruptMessage(bad).find("trailing"), std::string::npos);
  bad = good;
  bad[41 + 4] = 0xff;  // first name length byte (after count) -> long bogus length
  EXPECT_NE(CorruptMessage(bad), "accepted");

  // Random byte flips never crash and are always rejected as corrupt.
  for (uint64_t k = 0; k < 300; ++k) {
    bad = good;
    const int flips = 1 + static_cast<int>(SplitMix64(k) % 4);
    for (int f = 0; f < flips; ++f) {
      const uint64_t r = SplitMix64(k * 31 + f);
      bad[r % bad.size()] ^= static_cast<uint8_t>(1 + (r >> 32) % 255);
    }
    EXPECT_NE(CorruptMessage(bad), "accepted") << k;
  }
  EXPECT_NE(CorruptMessage({}).find("truncated"), std::string::npos);
}

}  // namespace
}  // namespace ref
}  // namespace dm

// Times TinyDiT (ref-s) Forward at B=4, T=1500, L=100 on a 2-thread ThreadPool.
// Build: g++ -std=c++17 -O2 -Inative/src native/bench/dit_bench.cc native/src/ref/*.cc -pthread
// Usage: dit_bench [iterations=20] [threads=2] [B=4] [T=1500] [L=100]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <vector>

#include "core/memory.h"
#include "core/rng.h"
#include "ref/gemm.h"
#include "ref/thread_pool.h"
#include "ref/tiny_dit.h"

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 20;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  const int B = argc > 3 ? std::atoi(argv[3]) : 4;
  const int T = argc > 4 ? std::atoi(argv[4]) : 1500;
  const int L = argc > 5 ? std::atoi(argv[5]) : 100;
  if (iters < 1 || threads < 1 || B < 1 || T < 2 || T % 2 || L < 1) {
    std::fprintf(stderr, "bad arguments\n");
    return 2;
  }
  const auto cfg = dm::ref::TinyDiTConfig::RefS();
  const dm::ref::TinyDiT model(dm::ref::TinyDiTWeights::Random(cfg, 1234));
  std::vector<float> hs(static_cast<size_t>(B) * T * 64), ctx(static_cast<size_t>(B) * T * 128),
      enc(static_cast<size_t>(B) * L * 2048), ts(B), vel(hs.size());
  dm::FillNormal(hs.data(), static_cast<long>(hs.size()), 1, 1);
  dm::FillNormal(ctx.data(), static_cast<long>(ctx.size()), 1, 2);
  dm::FillNormal(enc.data(), static_cast<long>(enc.size()), 1, 3);
  for (float& e : enc) e *= 0.02f;
  for (int b = 0; b < B; ++b) ts[b] = 0.2f + 0.2f * b;
  dm::HostAllocator alloc;
  auto scratch = alloc.Allocate(model.ScratchBytes(B, T, L), "dit scratch");
  dm::DecoderInputs in;
  in.batch = B;
  in.frames = T;
  in.cond_len = L;
  in.hidden_states = hs.data();
  in.timestep = ts.data();
  in.encoder_hidden_states = enc.data();
  in.context_latents = ctx.data();
  dm::ref::ThreadPool pool(threads);
  for (int i = 0; i < 3; ++i) model.Forward(in, vel.data(), scratch->data(), pool);
  std::vector<double> ms;
  timespec c0{}, c1{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    model.Forward(in, vel.data(), scratch->data(), pool);
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
  const double cpu_ms = ((c1.tv_sec - c0.tv_sec) * 1e3 + (c1.tv_nsec - c0.tv_nsec) / 1e6) / iters;
  std::sort(ms.begin(), ms.end());
  double finite = 0, absmax = 0;
  for (float v : vel) {
    finite += std::isfinite(v) ? 1 : 0;
    absmax = std::max(absmax, static_cast<double>(std::fabs(v)));
  }
  // MACs: proj_in, cond-embed, per layer (qkv, o, cross q/kv/o, mlp, attention), proj_out.
  const double N = T / 2.0, H = cfg.hidden, QD = cfg.heads * cfg.head_dim,
               KD = cfg.kv_heads * cfg.head_dim;
  double mac = N * 384 * H + L * 2048.0 * H + N * H * 128;
  for (int l = 0; l < cfg.layers; ++l) {
    const double keys = l % 2 == 0 ? std::min(N, 2.0 * cfg.window + 1) : N;
    mac += N * H * (QD + 2 * KD) + N * QD * H;        // self proj
    mac += N * H * QD + L * H * 2 * KD + N * QD * H;  // cross proj
    mac += N * H * 2 * cfg.mlp + N * cfg.mlp * H;     // mlp
    mac += 2 * N * keys * QD + 2 * N * L * QD;        // attention (QK, PV)
  }
  mac *= B;
  const double med = ms[ms.size() / 2];
  std::printf(
      "tiny-dit ref-s B=%d T=%d L=%d threads=%d kernel=%s: median %.2f ms, min %.2f ms "
      "(%d iters), %.2f GFLOP/fwd, %.1f GFLOP/s at median; output finite %.0f/%zu, "
      "max|v| %.3f; process CPU time %.2f ms/fwd (all threads; robust to a busy machine)\n",
      B, T, L, threads, dm::ref::GemmKernelName(), med, ms.front(), iters, 2 * mac / 1e9,
      2 * mac / 1e9 / (med / 1e3), finite, vel.size(), absmax, cpu_ms);
  return 0;
}

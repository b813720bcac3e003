// "Tiny DiT" reference decoder (spec/engine.md §2.2 "Decoder internals", §7.3): the DEMON
// DiT topology at toy width, fp32, on the host. Parameter names follow the PyTorch module
// (`proj_in.weight`, `layers.0.self_attn.q_proj.weight`, ...) and are stored in PyTorch
// layout ([out, in] for Linear, [out, in, k] for Conv1d, [in, out, k] for ConvTranspose1d).
//
// Per forward (B rows, T frames, N = T/2 tokens, L conditioning tokens):
//   temb, proj = time_embed(t) + time_embed_r(0)    sinusoid(t·1000, 256: cos‖sin) → linear_1
//                                                   → SiLU → linear_2 (= temb) → SiLU → time_proj
//                                                   (6H)
//   x   = proj_in(cat(context_latents, hidden_states))      Conv1d(192→H, k=2, s=2)
//   enc = condition_embedder(encoder_hidden_states)         Linear(2048→H, bias)
//   per layer l (sliding window |i−j| ≤ window on even l, full attention on odd l):
//     shift,scale,gate,c_shift,c_scale,c_gate = layers.l.scale_shift_table + proj
//     x += gate   · self_attn(RMSNorm(x)·(1+scale)+shift)      q/k RMSNorm per head, RoPE θ=1e6,
//     GQA x +=          cross_attn(RMSNorm(x), enc)                q/k RMSNorm per head, no RoPE x
//     += c_gate · mlp(RMSNorm(x)·(1+c_scale)+c_shift)        SwiGLU: down(silu(gate)·up)
//   shift,scale = scale_shift_table + temb;  y = RMSNorm(x)·(1+scale)+shift
//   velocity = proj_out(y)                                     ConvTranspose1d(H→64, k=2, s=2)
// Attention projections and the MLP have no bias; RMSNorms have a weight, eps 1e-6.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ref/velocity_model.h"

namespace dm {
namespace ref {

struct TinyDiTConfig {
  int hidden = 64;
  int layers = 2;
  int heads = 4;
  int head_dim = 16;
  int kv_heads = 2;
  int mlp = 192;
  int window = 128;  // sliding-window half width in tokens (even-index layers)

  static TinyDiTConfig RefS() { return TinyDiTConfig{}; }
  // Throws dm::Error(kInvalidArgument) unless every field is in range: hidden, mlp multiple of
  // 8 (<= 4096), head_dim multiple of 8 (<= 128), heads % kv_heads == 0, layers in [1, 64].
  void Validate() const;
  bool operator==(const TinyDiTConfig& o) const;
};

struct NamedTensor {
  std::string name;
  std::vector<int> shape;
  std::vector<float> data;  // row-major, size == product(shape)
};

class TinyDiTWeights {
 public:
  TinyDiTConfig config;
  std::vector<NamedTensor> tensors;  // canonical order, see Layout()

  // The canonical (name, shape) list for a config, in serialization order.
  static std::vector<std::pair<std::string, std::vector<int>>> Layout(const TinyDiTConfig& c);

  // Deterministic random init (counter RNG): Linear/conv weights N(0,1)/sqrt(fan_in), biases
  // and AdaLN tables small, norm weights 1. Activations stay O(1).
  static TinyDiTWeights Random(const TinyDiTConfig& c, uint64_t seed);

  // Binary format (little endian): "DMTDIT01", u32 version(1), 7×u32 config, u32 count,
  // count × {u32 name_len, name, u32 ndim, ndim×u32 dims, f32 data}, u64 FNV-1a of all
  // preceding bytes.
  std::vector<uint8_t> Serialize() const;
  // Validates magic, version, config, count, every name/shape against the config's layout,
  // lengths (never reads past size), finiteness and the checksum. Throws
  // dm::Error(kCorrupt, "tiny-dit weights: ...") on any problem; allocates only after the
  // payload size has been checked against what the config implies.
  static TinyDiTWeights Deserialize(const uint8_t* data, size_t size);

  const NamedTensor* Find(const std::string& name) const;
  NamedTensor* Find(const std::string& name);
  size_t ParameterCount() const;
  size_t WeightBytes() const { return ParameterCount() * sizeof(float); }
};

class TinyDiT final : public VelocityModel {
 public:
  // Checks the weights against their config's layout (kInvalidArgument otherwise) and packs
  // them into GEMM-friendly transposed copies.
  explicit TinyDiT(const TinyDiTWeights& weights);

  const TinyDiTConfig& config() const { return cfg_; }
  size_t WeightBytes() const { return weight_bytes_; }  // fp32 parameter bytes

  size_t ScratchBytes(int batch, int frames, int cond_len) const override;
  // T must be even and > 0, B >= 1, L >= 1; throws kInvalidArgument otherwise. No heap
  // allocation; the result does not depend on par.Workers().
  void Forward(const DecoderInputs& in, float* velocity, void* scratch,
               Parallel& par) const override;

 private:
  struct Lin {  // packed linear: W^T [in, out] and optional bias [out]
    size_t w = 0, b = 0;
    int in = 0, out = 0;
    bool has_bias = false;
  };
  struct Layer {
    Lin qkv, o, cq, ckv, co, gu, down;
    size_t self_norm, q_norm, k_norm, cross_norm, cq_norm, ck_norm, mlp_norm, table;
  };
  struct TimeEmbed {
    size_t w1, b1, w2, b2, wp, bp;  // original [out,in] layout (matvecs)
  };

  const float* P(size_t off) const { return packed_.data() + off; }

  TinyDiTConfig cfg_;
  size_t weight_bytes_ = 0;
  std::vector<float> packed_;
  TimeEmbed te_{}, ter_{};
  Lin proj_in_, cond_, proj_out_;
  size_t norm_out_ = 0, out_table_ = 0;
  std::vector<Layer> layers_;
};

}  // namespace ref
}  // namespace dm

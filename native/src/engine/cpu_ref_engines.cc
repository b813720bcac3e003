// The CPU reference backend: engines with the exact tensor contracts of DEMON's TensorRT
// engines (spec/engine.md §2, §7), computed in fp32 on host-accessible device memory.
// Each engine's resident block is its declared footprint, so memory behaves like a GPU's.
#include <algorithm>
#include <cstring>
#include <thread>

#include "core/constants.h"
#include "engine/engine.h"
#include "ref/oracle.h"
#include "ref/stems.h"
#include "ref/text_encoder.h"
#include "ref/thread_pool.h"
#include "ref/tiny_dit.h"
#include "ref/vae.h"

namespace dm {
namespace cpuref_detail {

constexpr const char* kBackendVersion = "cpu-ref-1";

TensorDesc In(const char* name, DType t, std::vector<int64_t> min, std::vector<int64_t> opt,
              std::vector<int64_t> max) {
  return TensorDesc{name, true, t, std::move(min), std::move(opt), std::move(max)};
}
TensorDesc Out(const char* name, DType t, std::vector<int64_t> min, std::vector<int64_t> opt,
               std::vector<int64_t> max) {
  return TensorDesc{name, false, t, std::move(min), std::move(opt), std::move(max)};
}

int DurationOf(const EngineFile& f) {
  long long d = f.GetInt("duration_s");
  if (d < 1 || d > 240) Fail(Status::kCorrupt, "engine duration_s %lld outside 1..240", d);
  return static_cast<int>(d);
}

// Threads of a decoder's pool, the calling thread included: every core, at most 8.
int Workers() {
  unsigned n = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(n, 1u, 8u));
}

void RequireSame(int64_t a, int64_t b, const char* what) {
  if (a != b) {
    Fail(Status::kInvalidArgument, "%s disagree: %lld vs %lld", what, static_cast<long long>(a),
         static_cast<long long>(b));
  }
}

// decoder: hidden_states [B,T,64], timestep [B], encoder_hidden_states [B,L,2048],
// context_latents [B,T,128] -> velocity [B,T,64]. Variants: tiny-dit (a small real DiT whose
// weights come from the payload) and oracle (closed-form velocity, for exact tests).
class DecoderEngine final : public Engine {
 public:
  DecoderEngine(std::shared_ptr<Device> device, const EngineOptions& opts, const EngineFile& f)
      : Engine(std::move(device), opts) {
    duration_ = DurationOf(f);
    max_batch_ = static_cast<int>(f.GetInt("max_batch"));
    if (max_batch_ < 1 || max_batch_ > kMaxDepth) {
      Fail(Status::kCorrupt, "decoder max_batch %d outside 1..%d", max_batch_, kMaxDepth);
    }
    const int64_t tmax = int64_t{duration_} * kFrameRate;
    const int64_t topt = std::min<int64_t>(tmax, 1500);
    io_ = {
        In("hidden_states", DType::kFloat32, {1, 126, 64}, {1, topt, 64}, {max_batch_, tmax, 64}),
        In("timestep", DType::kFloat32, {1}, {1}, {max_batch_}),
        In("encoder_hidden_states", DType::kFloat32, {1, kMinCondLen, kEncoderDim},
           {1, 200, kEncoderDim}, {max_batch_, kMaxCondLen, kEncoderDim}),
        In("context_latents", DType::kFloat32, {1, 126, 128}, {1, topt, 128},
           {max_batch_, tmax, 128}),
        Out("velocity", DType::kFloat32, {1, 126, 64}, {1, topt, 64}, {max_batch_, tmax, 64})};

    variant_ = f.Get("variant");
    if (variant_ == "tiny-dit") {
      ref::TinyDiTWeights w = ref::TinyDiTWeights::Deserialize(f.payload.data(), f.payload.size());
      model_ = std::make_unique<ref::TinyDiT>(w);
    } else if (variant_ == "oracle") {
      if (!f.payload.empty()) Fail(Status::kCorrupt, "oracle decoder payload must be empty");
      model_ = std::make_unique<ref::OracleDecoder>();
    } else {
      Fail(Status::kCorrupt, "unknown decoder variant %s", variant_.c_str());
    }
    // Place the weights: the payload is copied into the engine's resident device block.
    void* resident = ReserveResident(f.payload.size());
    if (!f.payload.empty())
      this->device()->CopyToDevice(resident, f.payload.data(), f.payload.size());
    HitFault(this->device()->faults(), "model.place_decoder");
    pool_ = std::make_unique<ref::ThreadPool>(Workers());
  }

  const VelocityModel* velocity_model() const override { return model_.get(); }
  Parallel* parallel() override { return pool_.get(); }
  int max_frames() const { return duration_ * kFrameRate; }

  uint64_t NeededContextBytes() const override {
    int t = max_frames() + (max_frames() % 2);
    return model_->ScratchBytes(max_batch_, t, kMaxCondLen);
  }

  void InferShapes(Context& ctx) const override {
    const auto& hs = ctx.Shape("hidden_states");
    const auto& ts = ctx.Shape("timestep");
    const auto& enc = ctx.Shape("encoder_hidden_states");
    const auto& cl = ctx.Shape("context_latents");
    RequireSame(hs[0], ts[0], "batch of hidden_states and timestep");
    RequireSame(hs[0], enc[0], "batch of hidden_states and encoder_hidden_states");
    RequireSame(hs[0], cl[0], "batch of hidden_states and context_latents");
    RequireSame(hs[1], cl[1], "frames of hidden_states and context_latents");
    if (hs[1] % kPatch != 0) {
      Fail(Status::kInvalidArgument, "frames %lld must be even (pad odd T by one frame)",
           static_cast<long long>(hs[1]));
    }
    ctx.SetOutputShape("velocity", {hs[0], hs[1], kLatentDim});
  }

  void Run(Context& ctx) override {
    const auto& hs = ctx.Shape("hidden_states");
    DecoderInputs in;
    in.batch = static_cast<int>(hs[0]);
    in.frames = static_cast<int>(hs[1]);
    in.cond_len = static_cast<int>(ctx.Shape("encoder_hidden_states")[1]);
    in.hidden_states = ctx.Input<float>("hidden_states");
    in.timestep = ctx.Input<float>("timestep");
    in.encoder_hidden_states = ctx.Input<float>("encoder_hidden_states");
    in.context_latents = ctx.Input<float>("context_latents");
    model_->Forward(in, ctx.Input<float>("velocity"), ctx.scratch(), *pool_);
  }

 private:
  int duration_ = 0;
  int max_batch_ = 0;
  std::string variant_;
  std::unique_ptr<VelocityModel> model_;
  std::unique_ptr<ref::ThreadPool> pool_;
};

// VAE engines share one reference codec (ref::RefVae): encode [1,2,S] -> moments
// [1,128,S/1920]; decode [1,64,T] -> [1,2,1920T]; windowed decode fixed at 25 frames.
class VaeEngine final : public Engine, public WindowDecoder {
 public:
  enum class Kind { kEncode, kDecode, kDecodeWindowed };

  VaeEngine(std::shared_ptr<Device> device, const EngineOptions& opts, const EngineFile& f,
            Kind kind)
      : Engine(std::move(device), opts), kind_(kind) {
    const int64_t d = DurationOf(f);
    const int64_t tmax = d * kFrameRate, topt = std::min<int64_t>(tmax, 1500);
    switch (kind_) {
      case Kind::kEncode:
        io_ = {
            In("audio", DType::kFloat32, {1, 2, 240000}, {1, 2, topt * kHop}, {1, 2, tmax * kHop}),
            Out("moments", DType::kFloat32, {1, 128, 125}, {1, 128, topt}, {1, 128, tmax})};
        break;
      case Kind::kDecode:
        io_ = {In("latents", DType::kFloat32, {1, 64, 125}, {1, 64, topt}, {1, 64, tmax}),
               Out("audio", DType::kFloat32, {1, 2, 240000}, {1, 2, topt * kHop},
                   {1, 2, tmax * kHop})};
        break;
      case Kind::kDecodeWindowed:
        io_ = {In("latents", DType::kFloat32, {1, 64, 25}, {1, 64, 25}, {1, 64, 25}),
               Out("audio", DType::kFloat32, {1, 2, 48000}, {1, 2, 48000}, {1, 2, 48000})};
        break;
    }
    ReserveResident(sizeof(ref::RefVae));
  }

  uint64_t NeededContextBytes() const override { return 0; }

  const WindowDecoder* window_decoder() const override {
    return kind_ == Kind::kEncode ? nullptr : this;
  }

  // z [frames, 64] frame-major -> audio [2, frames·1920] planar: the window decoded as a
  // latent of its own (±1-frame receptive field, edges replicated).
  void DecodeWindow(const float* z, int frames, float* audio) const override {
    vae_.DecodeFrameMajor(z, frames, audio);
  }

  void InferShapes(Context& ctx) const override {
    if (kind_ == Kind::kEncode) {
      int64_t s = ctx.Shape("audio")[2];
      if (s % kHop != 0) {
        Fail(Status::kInvalidArgument, "audio length %lld is not a multiple of %d samples",
             static_cast<long long>(s), kHop);
      }
      ctx.SetOutputShape("moments", {1, kMomentsDim, s / kHop});
    } else {
      ctx.SetOutputShape("audio", {1, 2, ctx.Shape("latents")[2] * kHop});
    }
  }

  void Run(Context& ctx) override {
    if (kind_ == Kind::kEncode) {
      vae_.Encode(ctx.Input<float>("audio"), ctx.Shape("audio")[2], ctx.Input<float>("moments"));
    } else {
      vae_.Decode(ctx.Input<float>("latents"), static_cast<int>(ctx.Shape("latents")[2]),
                  ctx.Input<float>("audio"));
    }
  }

 private:
  Kind kind_;
  ref::RefVae vae_;
};

// text_encoder: token_ids [1,L] int32 -> encoder_hidden_states [1,L,2048].
class TextEncoderEngine final : public Engine {
 public:
  TextEncoderEngine(std::shared_ptr<Device> device, const EngineOptions& opts, const EngineFile& f)
      : Engine(std::move(device), opts), encoder_(static_cast<uint64_t>(f.GetInt("seed"))) {
    io_ = {In("token_ids", DType::kInt32, {1, kMinCondLen}, {1, 200}, {1, kMaxCondLen}),
           Out("encoder_hidden_states", DType::kFloat32, {1, kMinCondLen, kEncoderDim},
               {1, 200, kEncoderDim}, {1, kMaxCondLen, kEncoderDim})};
    ReserveResident(sizeof(ref::TextEncoder));
  }

  const ref::TextEncoder& encoder() const { return encoder_; }
  uint64_t NeededContextBytes() const override { return 0; }

  void InferShapes(Context& ctx) const override {
    ctx.SetOutputShape("encoder_hidden_states", {1, ctx.Shape("token_ids")[1], kEncoderDim});
  }

  void Run(Context& ctx) override {
    encoder_.Embed(ctx.Input<int32_t>("token_ids"), static_cast<int>(ctx.Shape("token_ids")[1]),
                   ctx.Input<float>("encoder_hidden_states"));
  }

 private:
  ref::TextEncoder encoder_;
};

// stem_separator: audio [1,2,S] -> vocals [1,2,S], instruments [1,2,S].
class StemEngine final : public Engine {
 public:
  StemEngine(std::shared_ptr<Device> device, const EngineOptions& opts, const EngineFile& f)
      : Engine(std::move(device), opts) {
    const int64_t smax = int64_t{DurationOf(f)} * kSampleRate;
    const int64_t sopt = std::min<int64_t>(smax, 60 * kSampleRate);
    for (const char* n : {"audio", "vocals", "instruments"}) {
      bool input = std::strcmp(n, "audio") == 0;
      io_.push_back(
          TensorDesc{n, input, DType::kFloat32, {1, 2, 240000}, {1, 2, sopt}, {1, 2, smax}});
    }
    ReserveResident(1);
  }

  uint64_t NeededContextBytes() const override { return 0; }

  void InferShapes(Context& ctx) const override {
    const auto& a = ctx.Shape("audio");
    ctx.SetOutputShape("vocals", a);
    ctx.SetOutputShape("instruments", a);
  }

  void Run(Context& ctx) override {
    ref::SeparateStems(ctx.Input<float>("audio"), ctx.Shape("audio")[2], ctx.Input<float>("vocals"),
                       ctx.Input<float>("instruments"));
  }
};

}  // namespace cpuref_detail

std::shared_ptr<Engine> CreateCpuRefEngine(std::shared_ptr<Device> device,
                                           const EngineOptions& opts, const EngineFile& file) {
  using cpuref_detail::VaeEngine;
  const std::string& c = opts.component;
  try {
    if (c == "decoder") return std::make_shared<cpuref_detail::DecoderEngine>(device, opts, file);
    if (c == "vae_encode")
      return std::make_shared<VaeEngine>(device, opts, file, VaeEngine::Kind::kEncode);
    if (c == "vae_decode")
      return std::make_shared<VaeEngine>(device, opts, file, VaeEngine::Kind::kDecode);
    if (c == "vae_decode_windowed") {
      return std::make_shared<VaeEngine>(device, opts, file, VaeEngine::Kind::kDecodeWindowed);
    }
    if (c == "text_encoder")
      return std::make_shared<cpuref_detail::TextEncoderEngine>(device, opts, file);
    if (c == "stem_separator")
      return std::make_shared<cpuref_detail::StemEngine>(device, opts, file);
  } catch (const Error& e) {
    if (e.status() == Status::kCorrupt) throw Error(e.status(), opts.path + ": " + e.what());
    throw;
  }
  Fail(Status::kInvalidArgument, "unknown component %s", c.c_str());
}

void WriteReferenceEngine(const ReferenceOptions& opts, const std::string& path) {
  CheckComponent(opts.component);
  if (opts.duration_s < 1 || opts.duration_s > 240) {
    Fail(Status::kInvalidArgument, "duration %d s outside 1..240", opts.duration_s);
  }
  EngineFile f;
  f.header["component"] = opts.component;
  f.header["backend"] = "cpu-ref";
  f.header["backend_version"] = cpuref_detail::kBackendVersion;
  f.header["duration_s"] = std::to_string(opts.duration_s);
  f.header["seed"] = std::to_string(opts.seed);
  if (opts.component == "decoder") {
    f.header["variant"] = opts.variant;
    f.header["max_batch"] = std::to_string(kMaxDepth);
    if (opts.variant == "tiny-dit") {
      f.payload = ref::TinyDiTWeights::Random(ref::TinyDiTConfig::RefS(), opts.seed).Serialize();
    } else if (opts.variant != "oracle") {
      Fail(Status::kInvalidArgument, "unknown decoder variant %s (want tiny-dit or oracle)",
           opts.variant.c_str());
    }
  }
  WriteWholeFile(path, SerializeEngineFile(f));
}

}  // namespace dm

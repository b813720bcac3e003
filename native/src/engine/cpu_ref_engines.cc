// The CPU reference backend: engines with the exact tensor contracts of DEMON's TensorRT
// engines (spec/engine.md §2, §7), computed in fp32 on host-accessible device memory.
// Each engine's resident block is its declared footprint, so memory behaves like a GPU's.
#include <algorithm>
#include <cstring>
#include <thread>

#include "core/bf16.h"
#include "core/constants.h"
#include "engine/engine.h"
#include "ref/oracle.h"
#include "ref/stems.h"
#include "ref/text_encoder.h"
#include "ref/thread_pool.h"
#include "ref/tiny_dit.h"
#include "ref/vae.h"

namespace dm {

std::vector<TensorDesc> CpuRefTensors(const std::string& component, const EngineFile& f);

namespace cpuref_detail {

constexpr const char* kBackendVersion = "cpu-ref-1";

using Symbols = std::vector<std::string>;

TensorDesc In(const char* name, DType t, std::vector<int64_t> min, std::vector<int64_t> opt,
              std::vector<int64_t> max, Symbols symbols) {
  return TensorDesc{
      name, true, t, std::move(min), std::move(opt), std::move(max), std::move(symbols)};
}
TensorDesc Out(const char* name, DType t, std::vector<int64_t> min, std::vector<int64_t> opt,
               std::vector<int64_t> max, Symbols symbols) {
  return TensorDesc{
      name, false, t, std::move(min), std::move(opt), std::move(max), std::move(symbols)};
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

// The decoder's I/O precisions (ReferenceOptions::io_precision): the dtype of the tensors
// that "mixed" makes bf16. timestep stays fp32 in both, as in DEMON's 2B engine.
DType DecoderIoDType(const EngineFile& f) {
  const std::string p = f.GetOr("io_precision", "fp32");
  if (p == "fp32") return DType::kFloat32;
  if (p == "mixed") return DType::kBFloat16;
  Fail(Status::kCorrupt, "unknown decoder io_precision %s (want fp32 or mixed)", p.c_str());
}

int DecoderMaxBatch(const EngineFile& f) {
  long long b = f.GetInt("max_batch");
  if (b < 1 || b > kMaxDepth)
    Fail(Status::kCorrupt, "decoder max_batch %lld outside 1..%d", b, kMaxDepth);
  return static_cast<int>(b);
}

// A decoder's velocity math (fp32) seen through the engine's I/O dtypes. Each of the five
// tensors is fp32 or bf16 (engine.h, velocity_model()). A bf16 tensor gets an fp32 staging
// area at the front of the scratch memory, sized for the call's shape; the math's own scratch
// follows. Two entry points share that layout:
//  - Forward (the seam the stream drives): fp32 arrays in; a bf16 input is rounded to bf16
//    into its staging, and a bf16 velocity is rounded in place.
//  - ForwardBound (Run): the bound buffers in their dtypes; a bf16 input is widened into its
//    staging, and a bf16 velocity is computed in staging and narrowed into the binding.
// For the same values the two agree bit for bit: rounding is widen(narrow(x)). With every
// tensor fp32 there is no staging and both pass straight through. Neither allocates.
class IoPrecisionModel final : public VelocityModel {
 public:
  enum Tensor : int { kHidden, kTimestep, kEncoder, kContext, kVelocity, kCount };

  IoPrecisionModel(const VelocityModel& math, const Engine& engine) : math_(math) {
    static const char* const kNames[kCount] = {"hidden_states", "timestep", "encoder_hidden_states",
                                               "context_latents", "velocity"};
    for (int k = 0; k < kCount; ++k) {
      const DType t = engine.Tensor(kNames[k]).dtype;
      if (t != DType::kFloat32 && t != DType::kBFloat16) {
        Fail(Status::kUnsupported,
             "decoder tensor %s: %s I/O is not supported (float32 or bfloat16)", kNames[k],
             DTypeName(t));
      }
      bf16_[k] = t == DType::kBFloat16;
    }
  }

  size_t ScratchBytes(int batch, int frames, int cond_len) const override {
    size_t staging = 0;
    for (int k = 0; k < kCount; ++k) staging += StagingBytes(k, batch, frames, cond_len);
    return staging + math_.ScratchBytes(batch, frames, cond_len);
  }

  void Forward(const DecoderInputs& in, float* velocity, void* scratch,
               Parallel& par) const override {
    Staging st = Carve(scratch, in);
    DecoderInputs rounded = in;
    rounded.hidden_states = Round(kHidden, in.hidden_states, st);
    rounded.timestep = Round(kTimestep, in.timestep, st);
    rounded.encoder_hidden_states = Round(kEncoder, in.encoder_hidden_states, st);
    rounded.context_latents = Round(kContext, in.context_latents, st);
    math_.Forward(rounded, velocity, st.math, par);
    if (bf16_[kVelocity]) {
      const size_t n = Elements(kVelocity, in.batch, in.frames, in.cond_len);
      for (size_t i = 0; i < n; ++i) velocity[i] = RoundBf16(velocity[i]);
    }
  }

  // bound[k] is tensor k's buffer in its dtype.
  void ForwardBound(int batch, int frames, int cond_len, void* const bound[kCount], void* scratch,
                    Parallel& par) const {
    DecoderInputs in;
    in.batch = batch;
    in.frames = frames;
    in.cond_len = cond_len;
    Staging st = Carve(scratch, in);
    in.hidden_states = Widen(kHidden, bound[kHidden], st);
    in.timestep = Widen(kTimestep, bound[kTimestep], st);
    in.encoder_hidden_states = Widen(kEncoder, bound[kEncoder], st);
    in.context_latents = Widen(kContext, bound[kContext], st);
    if (!bf16_[kVelocity]) {
      math_.Forward(in, static_cast<float*>(bound[kVelocity]), st.math, par);
      return;
    }
    math_.Forward(in, st.area[kVelocity], st.math, par);
    Bf16FromFloats(st.area[kVelocity], Elements(kVelocity, batch, frames, cond_len),
                   static_cast<uint16_t*>(bound[kVelocity]));
  }

 private:
  struct Staging {
    float* area[kCount] = {};  // fp32 staging of each bf16 tensor (null for fp32 ones)
    void* math = nullptr;      // the math's scratch, after the staging
    size_t elements[kCount] = {};
  };

  static size_t Elements(int k, int batch, int frames, int cond_len) {
    const size_t b = static_cast<size_t>(batch), t = static_cast<size_t>(frames);
    switch (k) {
      case kHidden:
      case kVelocity: return b * t * kLatentDim;
      case kTimestep: return b;
      case kEncoder: return b * static_cast<size_t>(cond_len) * kEncoderDim;
      case kContext: return b * t * kContextDim;
    }
    return 0;
  }

  // 64-byte multiples keep every area, and the math's scratch after them, 64-byte aligned.
  size_t StagingBytes(int k, int batch, int frames, int cond_len) const {
    if (!bf16_[k]) return 0;
    return (Elements(k, batch, frames, cond_len) * sizeof(float) + 63) / 64 * 64;
  }

  Staging Carve(void* scratch, const DecoderInputs& in) const {
    Staging st;
    char* p = static_cast<char*>(scratch);
    for (int k = 0; k < kCount; ++k) {
      st.elements[k] = Elements(k, in.batch, in.frames, in.cond_len);
      if (!bf16_[k]) continue;
      st.area[k] = reinterpret_cast<float*>(p);
      p += StagingBytes(k, in.batch, in.frames, in.cond_len);
    }
    st.math = p;
    return st;
  }

  const float* Round(int k, const float* src, const Staging& st) const {
    if (!bf16_[k]) return src;
    for (size_t i = 0; i < st.elements[k]; ++i) st.area[k][i] = RoundBf16(src[i]);
    return st.area[k];
  }

  const float* Widen(int k, const void* src, const Staging& st) const {
    if (!bf16_[k]) return static_cast<const float*>(src);
    FloatsFromBf16(static_cast<const uint16_t*>(src), st.elements[k], st.area[k]);
    return st.area[k];
  }

  const VelocityModel& math_;
  bool bf16_[kCount] = {};
};

// decoder: hidden_states [B,T,64], timestep [B], encoder_hidden_states [B,L,2048],
// context_latents [B,T,128] -> velocity [B,T,64]. Variants: tiny-dit (a small real DiT whose
// weights come from the payload) and oracle (closed-form velocity, for exact tests).
class DecoderEngine final : public Engine {
 public:
  DecoderEngine(std::shared_ptr<Device> device, const EngineOptions& opts, const EngineFile& f)
      : Engine(std::move(device), opts) {
    io_ = CpuRefTensors("decoder", f);
    duration_ = DurationOf(f);
    max_batch_ = DecoderMaxBatch(f);
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
    io_model_ = std::make_unique<IoPrecisionModel>(*model_, *this);
    // Place the weights: the payload is copied into the engine's resident device block.
    void* resident = ReserveResident(f.payload.size());
    if (!f.payload.empty())
      this->device()->CopyToDevice(resident, f.payload.data(), f.payload.size());
    HitFault(this->device()->faults(), "model.place_decoder");
    pool_ = std::make_unique<ref::ThreadPool>(Workers());
  }

  const VelocityModel* velocity_model() const override { return io_model_.get(); }
  Parallel* parallel() override { return pool_.get(); }
  int max_frames() const { return duration_ * kFrameRate; }

  uint64_t NeededContextBytes() const override {
    int t = max_frames() + (max_frames() % 2);
    return io_model_->ScratchBytes(max_batch_, t, kMaxCondLen);
  }

  // Batch (B) and frames (T) agree across inputs: Context::Execute checks the symbols.
  void InferShapes(Context& ctx) const override {
    const auto& hs = ctx.Shape("hidden_states");
    if (hs[1] % kPatch != 0) {
      Fail(Status::kInvalidArgument, "frames %lld must be even (pad odd T by one frame)",
           static_cast<long long>(hs[1]));
    }
    ctx.SetOutputShape("velocity", {hs[0], hs[1], kLatentDim});
  }

  void Run(Context& ctx) override {
    const auto& hs = ctx.Shape("hidden_states");
    void* const bound[IoPrecisionModel::kCount] = {
        ctx.Binding("hidden_states"), ctx.Binding("timestep"), ctx.Binding("encoder_hidden_states"),
        ctx.Binding("context_latents"), ctx.Binding("velocity")};
    io_model_->ForwardBound(static_cast<int>(hs[0]), static_cast<int>(hs[1]),
                            static_cast<int>(ctx.Shape("encoder_hidden_states")[1]), bound,
                            ctx.scratch(), *pool_);
  }

 private:
  int duration_ = 0;
  int max_batch_ = 0;
  std::string variant_;
  std::unique_ptr<VelocityModel> model_;
  std::unique_ptr<IoPrecisionModel> io_model_;  // model_ through the I/O dtypes
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
    io_ = CpuRefTensors(opts.component, f);
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
    io_ = CpuRefTensors("text_encoder", f);
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
    io_ = CpuRefTensors("stem_separator", f);
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

std::vector<TensorDesc> CpuRefTensors(const std::string& component, const EngineFile& f) {
  using cpuref_detail::In;
  using cpuref_detail::Out;
  const DType f32 = DType::kFloat32;
  if (component == "decoder") {
    const int64_t b = cpuref_detail::DecoderMaxBatch(f);
    const int64_t tmax = int64_t{cpuref_detail::DurationOf(f)} * kFrameRate;
    const int64_t topt = std::min<int64_t>(tmax, 1500);
    const DType io = cpuref_detail::DecoderIoDType(f);
    return {
        In("hidden_states", io, {1, 126, 64}, {1, topt, 64}, {b, tmax, 64}, {"B", "T", ""}),
        In("timestep", f32, {1}, {1}, {b}, {"B"}),
        In("encoder_hidden_states", io, {1, kMinCondLen, kEncoderDim}, {1, 200, kEncoderDim},
           {b, kMaxCondLen, kEncoderDim}, {"B", "L", ""}),
        In("context_latents", io, {1, 126, 128}, {1, topt, 128}, {b, tmax, 128}, {"B", "T", ""}),
        Out("velocity", io, {1, 126, 64}, {1, topt, 64}, {b, tmax, 64}, {"B", "T", ""})};
  }
  if (component == "vae_encode" || component == "vae_decode") {
    const int64_t tmax = int64_t{cpuref_detail::DurationOf(f)} * kFrameRate;
    const int64_t topt = std::min<int64_t>(tmax, 1500);
    TensorDesc audio{"audio",        component == "vae_encode", f32,
                     {1, 2, 240000}, {1, 2, topt * kHop},       {1, 2, tmax * kHop},
                     {"", "", "S"}};
    if (component == "vae_encode") {
      return {audio, Out("moments", f32, {1, kMomentsDim, 125}, {1, kMomentsDim, topt},
                         {1, kMomentsDim, tmax}, {"", "", "T"})};
    }
    return {In("latents", f32, {1, kLatentDim, 125}, {1, kLatentDim, topt}, {1, kLatentDim, tmax},
               {"", "", "T"}),
            audio};
  }
  if (component == "vae_decode_windowed") {
    cpuref_detail::DurationOf(f);  // validated like every engine's, though the window is fixed
    const int64_t t = kWindowFrames, s = kWindowFrames * kHop;
    return {In("latents", f32, {1, kLatentDim, t}, {1, kLatentDim, t}, {1, kLatentDim, t},
               {"", "", ""}),
            Out("audio", f32, {1, 2, s}, {1, 2, s}, {1, 2, s}, {"", "", ""})};
  }
  if (component == "text_encoder") {
    return {In("token_ids", DType::kInt32, {1, kMinCondLen}, {1, 200}, {1, kMaxCondLen}, {"", "L"}),
            Out("encoder_hidden_states", f32, {1, kMinCondLen, kEncoderDim}, {1, 200, kEncoderDim},
                {1, kMaxCondLen, kEncoderDim}, {"", "L", ""})};
  }
  if (component == "stem_separator") {
    const int64_t smax = int64_t{cpuref_detail::DurationOf(f)} * kSampleRate;
    const int64_t sopt = std::min<int64_t>(smax, 60 * kSampleRate);
    std::vector<TensorDesc> io;
    for (const char* n : {"audio", "vocals", "instruments"}) {
      io.push_back(TensorDesc{n,
                              std::strcmp(n, "audio") == 0,
                              f32,
                              {1, 2, 240000},
                              {1, 2, sopt},
                              {1, 2, smax},
                              {"", "", "S"}});
    }
    return io;
  }
  Fail(Status::kInvalidArgument, "unknown component %s", component.c_str());
}

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
  const std::string precision = opts.io_precision.empty() ? "fp32" : opts.io_precision;
  if (precision != "fp32" && (opts.component != "decoder" || precision != "mixed")) {
    Fail(Status::kInvalidArgument, "%s io_precision %s (want fp32%s)", opts.component.c_str(),
         precision.c_str(),
         opts.component == "decoder" ? " or mixed" : ": only the decoder has a mixed layout");
  }
  if (opts.component == "decoder") {
    f.header["variant"] = opts.variant;
    f.header["max_batch"] = std::to_string(kMaxDepth);
    f.header["io_precision"] = precision;
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

#include "stream/stream.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "pipeline/decode.h"
#include "ref/semantic.h"

namespace dm {
namespace stream_detail {

double Ms(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace stream_detail

Stream::Stream(Context& decoder_ctx, std::shared_ptr<Engine> window_vae, const std::string& owner,
               const StreamOptions& opts)
    : decoder_(decoder_ctx.engine().shared_from_this()),
      scratch_(decoder_ctx.activation()),
      host_scratch_(decoder_ctx.host_scratch()),
      vae_(std::move(window_vae)),
      token_(decoder_->device(), HandleKind::kStream, owner),
      opts_(opts),
      frames_(opts.frames) {
  if (decoder_->velocity_model() == nullptr || decoder_->parallel() == nullptr) {
    Fail(Status::kInvalidArgument, "stream: the %s engine is not a decoder",
         decoder_->component().c_str());
  }
  window_ = vae_ ? vae_->window_decoder() : nullptr;
  if (window_ == nullptr) Fail(Status::kInvalidArgument, "stream: no windowed VAE decoder engine");
  // Staged on a GPU: device reservations with pinned host shadows (see stream.h).
  if (decoder_->device()->HostAccessible()) {
    alloc_ = std::make_unique<DeviceAllocator>(decoder_->device(), HandleKind::kStream, owner);
  } else {
    alloc_ = std::make_unique<MirroredAllocator>(decoder_->device(), HandleKind::kStream, owner);
  }
  const TensorDesc& hs = decoder_->Tensor("hidden_states");
  if (frames_ < hs.min[1] || frames_ > hs.max[1]) {
    Fail(Status::kInvalidArgument,
         "stream: %d latent frames outside the decoder profile [%lld, %lld]", frames_,
         static_cast<long long>(hs.min[1]), static_cast<long long>(hs.max[1]));
  }
  if (opts_.max_depth < 1 || opts_.max_depth > hs.max[0]) {
    Fail(Status::kInvalidArgument, "stream: max depth %d outside 1..%lld (decoder max batch)",
         opts_.max_depth, static_cast<long long>(hs.max[0]));
  }
  if (opts_.max_prompts < 1 || opts_.max_prompts > 2) {
    Fail(Status::kInvalidArgument, "stream: max_prompts %d (want 1 or 2)", opts_.max_prompts);
  }
  if (static_cast<int64_t>(opts_.max_depth) * opts_.max_prompts > hs.max[0]) {
    Fail(Status::kInvalidArgument,
         "stream: max depth %d × %d prompts = %d decoder rows, the decoder's max batch is %lld",
         opts_.max_depth, opts_.max_prompts, opts_.max_depth * opts_.max_prompts,
         static_cast<long long>(hs.max[0]));
  }
  if (opts_.max_cond_len < kMinCondLen || opts_.max_cond_len > kMaxCondLen) {
    Fail(Status::kInvalidArgument, "stream: max_cond_len %d outside %d..%d", opts_.max_cond_len,
         kMinCondLen, kMaxCondLen);
  }
  const size_t T = static_cast<size_t>(frames_);
  const size_t L = static_cast<size_t>(opts_.max_cond_len);
  const size_t floats = T * 64 * 2 + T * 128 + 4 * L * kEncoderDim + T * kHop * 2 +
                        kWindowFrames * 64 + 2 * kWindowFrames * kHop + 2 * T;
  buf_ = alloc_->Allocate(floats * sizeof(float), "stream.buffers");
  if (!decoder_->device()->HostAccessible()) mirror_ = static_cast<MirroredBlock*>(buf_.get());
  float* p = buf_->as<float>();
  auto take = [&p](size_t n) {
    float* q = p;
    p += n;
    return q;
  };
  source_ = take(T * 64);
  hints_ = take(T * 64);
  context_ = take(T * 128);
  for (auto& c : cond_) c = take(L * kEncoderDim);
  blended_ = take(L * kEncoderDim);
  playback_ = take(T * kHop * 2);
  window_z_ = take(kWindowFrames * 64);
  window_audio_ = take(2 * kWindowFrames * kHop);
  blend_a_ = take(T);
  blend_b_ = take(T);
  // Every window keeps the same number of frames (K, or T when T <= K): buffers can be
  // checked before a tick changes anything.
  slice_frames_ = pipe::PlanWindow(frames_, opts_.vae_window, 0.0, /*cyclic=*/true).kept;

  pipe::PipelineConfig pc;
  pc.max_depth = opts_.max_depth;
  pc.depth = std::clamp(opts_.depth, 1, opts_.max_depth);
  pc.max_frames = frames_;
  pc.max_cond_len = opts_.max_cond_len;
  pc.max_pos_conds = opts_.max_prompts;
  pc.max_neg_conds = 1;
  pc.steps = opts_.steps;
  pc.shift = opts_.shift;
  pc.model_scratch = host_scratch_->data();
  pc.model_scratch_bytes = host_scratch_->size();
  pipeline_ = std::make_unique<pipe::Pipeline>(*alloc_, *decoder_->velocity_model(),
                                               *decoder_->parallel(), pc);
  shift_ = opts_.shift;
}

Stream::~Stream() = default;

uint64_t Stream::bytes() const { return buf_->size() + pipeline_->bytes_reserved(); }

const float* Stream::HostInput(const float* src, float* host, size_t n) {
  if (mirror_ == nullptr) return src;
  decoder_->device()->CopyToHost(host, src, n * sizeof(float));
  return host;
}

void Stream::SyncPlayback(long start, long n) {
  if (mirror_ == nullptr || n <= 0) return;
  const long total = static_cast<long>(frames_) * kHop;
  const size_t base = static_cast<size_t>(playback_ - buf_->as<float>()) * sizeof(float);
  long pos = ((start % total) + total) % total;
  while (n > 0) {  // at most two copies: the range wraps at most once (n <= total)
    const long run = std::min(n, total - pos);
    mirror_->SyncToDevice(base + static_cast<size_t>(pos) * 2 * sizeof(float),
                          static_cast<size_t>(run) * 2 * sizeof(float));
    n -= run;
    pos = 0;
  }
}

void Stream::SetSourceMoments(const float* moments, int frames) {
  if (frames != frames_) {
    Fail(Status::kInvalidArgument, "stream: source has %d frames, the stream was made for %d",
         frames, frames_);
  }
  // Staged: the means [64,T] come device-to-host into hints_ (overwritten just below).
  moments = HostInput(moments, hints_, static_cast<size_t>(frames_) * 64);
  for (int t = 0; t < frames_; ++t) {
    for (int c = 0; c < 64; ++c) source_[t * 64 + c] = moments[static_cast<long>(c) * frames_ + t];
  }
  ref::SemanticHints(source_, frames_, hints_);
  source_version_ = next_version_++;
  have_source_ = true;
  hint_ = -1.0f;  // force the context rebuild
}

void Stream::SetCondition(ConditionSlot slot, const float* enc, int len) {
  int i = static_cast<int>(slot);
  if (i < 0 || i > 2) Fail(Status::kInvalidArgument, "stream: condition slot %d", i);
  if (len < 1 || len > opts_.max_cond_len) {
    Fail(Status::kInvalidArgument, "stream: conditioning of %d tokens exceeds the stream's %d", len,
         opts_.max_cond_len);
  }
  const size_t n = static_cast<size_t>(len) * kEncoderDim;
  if (HostInput(enc, cond_[i], n) != cond_[i]) std::memcpy(cond_[i], enc, n * sizeof(float));
  cond_len_[i] = len;
  cond_version_[i] = next_version_++;
  blend_ = -1.0f;  // force the blend rebuild
}

void Stream::SetSharedCurve(const char* name, const float* values, int len) {
  if (len < 0 || len > frames_ || (len > 0 && values == nullptr)) {
    Fail(Status::kInvalidArgument, "stream: curve of %d values (want 0, 1 or %d)", len, frames_);
  }
  if (len > 1 && len != frames_) {
    Fail(Status::kInvalidArgument, "stream: curve of %d values (want 0, 1 or %d)", len, frames_);
  }
  pipe::Curve c = len == 0   ? pipe::Curve::None()
                  : len == 1 ? pipe::Curve::Scalar(values[0])
                             : pipe::Curve::Frames(values, len);
  if (!pipeline_->SetSharedCurve(name, c)) {
    Fail(Status::kNotFound,
         "stream: unknown shared curve %s (want velocity_scale, sde_denoise_curve, "
         "ode_noise_curve, apg_momentum, x0_target_strength, cfg_rescale_curve or guidance_curve)",
         name == nullptr ? "(null)" : name);
  }
}

void Stream::SetBlendCurve(const float* w, int len) {
  if (opts_.max_prompts < 2 && len != 0) {
    Fail(Status::kState, "stream: per-frame prompt weights need a stream made with max_prompts 2");
  }
  if (len < 0 || (len > 1 && len != frames_) || (len > 0 && w == nullptr)) {
    Fail(Status::kInvalidArgument, "stream: prompt weights of %d values (want 0, 1 or %d)", len,
         frames_);
  }
  for (int t = 0; t < len; ++t) {
    if (!std::isfinite(w[t]))
      Fail(Status::kInvalidArgument, "stream: prompt weight %d is %g", t, w[t]);
  }
  for (int t = 0; t < len; ++t) {
    blend_b_[t] = std::clamp(w[t], 0.0f, 1.0f);
    blend_a_[t] = 1.0f - blend_b_[t];
  }
  blend_len_ = len;
}

void Stream::SetPlayback(const float* interleaved, int64_t frames) {
  if (frames != static_cast<int64_t>(frames_) * kHop) {
    Fail(Status::kInvalidArgument, "stream: playback buffer of %lld frames, want %lld",
         static_cast<long long>(frames), static_cast<long long>(frames_) * kHop);
  }
  std::memcpy(playback_, interleaved, static_cast<size_t>(frames) * 2 * sizeof(float));
  SyncPlayback(0, static_cast<long>(frames));
  have_playback_ = true;
}

void Stream::ReadPlayback(int64_t start, float* dst, int64_t frames) const {
  const int64_t total = static_cast<int64_t>(frames_) * kHop;
  if (start < 0 || frames < 0 || start > total || frames > total - start) {
    Fail(Status::kInvalidArgument, "stream: playback read [%lld, +%lld) outside %lld frames",
         static_cast<long long>(start), static_cast<long long>(frames),
         static_cast<long long>(total));
  }
  std::memcpy(dst, playback_ + start * 2, static_cast<size_t>(frames) * 2 * sizeof(float));
}

// context = (1−h)·silence + h·hints ‖ chunk mask of ones; the reference silence latent is 0.
void Stream::RebuildContext(float hint) {
  for (int t = 0; t < frames_; ++t) {
    for (int c = 0; c < 64; ++c) context_[t * 128 + c] = hint * hints_[t * 64 + c];
    for (int c = 64; c < 128; ++c) context_[t * 128 + c] = 1.0f;
  }
  context_version_ = next_version_++;
  hint_ = hint;
}

// Prompt A/B blend: a lerp of the two conditionings, zero-padded to the longer (DEMON's
// ConditioningBlend).
void Stream::RebuildBlend(float w) {
  const int la = cond_len_[0], lb = cond_len_[1] > 0 ? cond_len_[1] : cond_len_[0];
  const float* b = cond_len_[1] > 0 ? cond_[1] : cond_[0];
  blended_len_ = std::max(la, lb);
  for (int l = 0; l < blended_len_; ++l) {
    for (int d = 0; d < kEncoderDim; ++d) {
      float va = l < la ? cond_[0][l * kEncoderDim + d] : 0.0f;
      float vb = l < lb ? b[l * kEncoderDim + d] : 0.0f;
      blended_[l * kEncoderDim + d] = (1.0f - w) * va + w * vb;
    }
  }
  blended_version_ = next_version_++;
  blend_ = w;
}

void Stream::CheckSliceBuffers(const SliceBuffers& slice) const {
  const int64_t samples = static_cast<int64_t>(slice_frames_) * kChannels;
  if (slice.f32 == nullptr || slice.f32_cap < samples) {
    Fail(Status::kInvalidArgument, "stream: slice buffer holds %lld floats, the slice needs %lld",
         static_cast<long long>(slice.f32 == nullptr ? 0 : slice.f32_cap),
         static_cast<long long>(samples));
  }
  if (slice.f16 != nullptr && slice.f16_cap < 2 * samples) {
    Fail(Status::kInvalidArgument,
         "stream: float16 slice buffer holds %lld bytes, the slice needs %lld",
         static_cast<long long>(slice.f16_cap), static_cast<long long>(2 * samples));
  }
}

void Stream::Tick(const TickParams& p, TickResult* out, const SliceBuffers& slice) {
  using clock = std::chrono::steady_clock;
  if (!have_source_ || cond_len_[0] == 0 || !have_playback_) {
    Fail(Status::kState, "stream: tick before source, prompt and playback buffer are set");
  }
  if (out == nullptr) Fail(Status::kInvalidArgument, "stream: tick result is NULL");
  if (p.decode != 0) CheckSliceBuffers(slice);
  *out = TickResult{};
  const auto t0 = clock::now();

  const float hint = std::clamp(p.hint_strength, 0.0f, 1.0f);
  if (std::fabs(hint - hint_) > 0.02f) RebuildContext(hint);
  const float w = std::clamp(p.prompt_blend, 0.0f, 1.0f);
  if (blend_len_ == 0 && w != blend_) RebuildBlend(w);
  if (p.depth != pipeline_->depth()) pipeline_->SetDepth(std::clamp(p.depth, 1, opts_.max_depth));
  if (std::fabs(p.shift - shift_) > 0.05f) {
    pipeline_->SetShift(p.shift);
    shift_ = p.shift;
  }
  bool gain_on = p.channel_gain_active != 0;
  if (gain_on != gain_active_ ||
      (gain_on && std::memcmp(gain_, p.channel_gain, sizeof gain_) != 0)) {
    std::memcpy(gain_, p.channel_gain, sizeof gain_);
    gain_active_ = gain_on;
    pipeline_->SetChannelGain(gain_on ? gain_ : nullptr, gain_on ? 1 : 0);
  }

  if (p.submit != 0) {
    pipe::SlotRequest r;
    r.frames = frames_;
    r.context_latents = context_;
    r.context_version = context_version_;
    pipe::SlotCondition prompt_b;
    if (blend_len_ == 0) {
      r.primary.enc = blended_;
      r.primary.version = blended_version_;
      r.primary.len = blended_len_;
    } else {
      // Per-frame weights: prompt A and prompt B (A again while B is unset) as two positive
      // conditions whose velocities blend per frame (§4.5 blend_velocities).
      auto weights = [this](const float* v) {
        return blend_len_ == 1 ? pipe::Curve::Scalar(v[0]) : pipe::Curve::Frames(v, frames_);
      };
      const int b = cond_len_[1] > 0 ? 1 : 0;
      r.primary.enc = cond_[0];
      r.primary.version = cond_version_[0];
      r.primary.len = cond_len_[0];
      r.primary.temporal_weight = weights(blend_a_);
      prompt_b.enc = cond_[b];
      prompt_b.version = cond_version_[b];
      prompt_b.len = cond_len_[b];
      prompt_b.temporal_weight = weights(blend_b_);
      r.extra_conditions = &prompt_b;
      r.num_extra_conditions = 1;
    }
    r.seed = p.seed;
    r.denoise = std::clamp(p.denoise, 0.0f, 1.0f);
    r.source_latents = source_;
    r.source_version = source_version_;
    // §4.10 step 4: x0_target = src always; its strength comes from the shared
    // x0_target_strength curve (SetSharedCurve), 0 by default (then the blend never fires).
    r.x0_target = source_;
    r.x0_target_version = source_version_;
    r.velocity_scale = pipe::Curve::Scalar(p.velocity_scale);
    pipe::SlotCondition neg;
    if (p.rcfg_mode != 0) {
      r.guidance = pipe::Curve::Scalar(p.guidance);
      if (p.cfg_rescale > 0) r.cfg_rescale = pipe::Curve::Scalar(p.cfg_rescale);
      switch (p.rcfg_mode) {
        case 1: r.rcfg_mode = pipe::RcfgMode::kFull; break;
        case 2: r.rcfg_mode = pipe::RcfgMode::kInitialize; break;
        default: r.rcfg_mode = pipe::RcfgMode::kSelf; break;
      }
      if (r.rcfg_mode != pipe::RcfgMode::kSelf) {
        if (cond_len_[2] == 0) Fail(Status::kState, "stream: CFG needs the negative conditioning");
        neg.enc = cond_[2];
        neg.version = cond_version_[2];
        neg.len = cond_len_[2];
        r.neg_conditions = &neg;
        r.num_neg_conditions = 1;
      }
    }
    pipeline_->Submit(r);
  }
  pipe::TickResult tr = pipeline_->Tick();
  out->tick_ms = static_cast<float>(stream_detail::Ms(t0, clock::now()));
  out->engine_ms = static_cast<float>(tr.model_ms);
  out->active = tr.active;
  out->decoder_calls = tr.decoder_calls;
  out->depth = pipeline_->depth();
  if (tr.emitted) {
    out->emitted = 1;
    num_gens_++;
    last_latent_ = tr.latent;
  }
  out->num_gens = num_gens_;
  if (tr.emitted && p.decode != 0) DecodeSlice(tr.latent, p.playhead_s, slice, out);
}

void Stream::DecodeWindow(double playhead_s, const float* latent, int frames, TickResult* out,
                          const SliceBuffers& slice) {
  if (!have_playback_) Fail(Status::kState, "stream: decode before the playback buffer is set");
  if (out == nullptr) Fail(Status::kInvalidArgument, "stream: decode result is NULL");
  if (latent == nullptr) {
    if (last_latent_ == nullptr) Fail(Status::kState, "stream: no latent emitted yet");
    latent = last_latent_;
  } else if (frames != frames_) {
    Fail(Status::kInvalidArgument, "stream: latent has %d frames, the stream was made for %d",
         frames, frames_);
  }
  CheckSliceBuffers(slice);
  *out = TickResult{};
  out->num_gens = num_gens_;
  out->depth = pipeline_->depth();
  DecodeSlice(latent, playhead_s, slice, out);
}

void Stream::DecodeSlice(const float* latent, double playhead_s, const SliceBuffers& slice,
                         TickResult* out) {
  const auto t0 = std::chrono::steady_clock::now();
  const double duration = static_cast<double>(frames_) / kFrameRate;
  double target = std::fmod(playhead_s + opts_.lead_s, duration);
  if (target < 0) target += duration;
  pipe::WindowPlan plan = pipe::PlanWindow(frames_, opts_.vae_window, target, /*cyclic=*/true);
  const int n = plan.full ? frames_ : plan.num_frames;
  if (plan.full || n > kWindowFrames || plan.kept != slice_frames_) {
    Fail(Status::kInternal, "stream: window plan of %d frames (%d kept) for T=%d", n, plan.kept,
         frames_);
  }
  pipe::GatherWindow(latent, frames_, plan, window_z_);
  const auto v0 = std::chrono::steady_clock::now();
  window_->DecodeWindow(window_z_, n, window_audio_);
  out->vae_ms = static_cast<float>(stream_detail::Ms(v0, std::chrono::steady_clock::now()));
  const long kept = plan.num_samples();
  const long span = static_cast<long>(n) * kHop;
  const float* left = window_audio_ + static_cast<long>(plan.pre) * kHop;
  const float* right = left + span;
  float* dst = slice.f32;
  for (long i = 0; i < kept; ++i) {
    dst[2 * i] = left[i];
    dst[2 * i + 1] = right[i];
  }
  const long total = static_cast<long>(frames_) * kHop;
  pipe::CrossfadeSlice(playback_, total, plan.start_sample, dst, kept);
  pipe::PatchWindow(playback_, total, plan.start_sample, dst, kept);
  SyncPlayback(plan.start_sample, kept);  // staged: the patched range to the device copy
  if (slice.f16 != nullptr) pipe::FloatsToHalfLE(dst, slice.f16, kept * kChannels);
  out->decoded = 1;
  out->start_sample = plan.start_sample;
  out->num_samples = static_cast<int>(kept);
  out->dec_ms = static_cast<float>(stream_detail::Ms(t0, std::chrono::steady_clock::now()));
}

}  // namespace dm

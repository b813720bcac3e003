// extern "C" entry points for streams.
#include <memory>

#include "capi/guard.h"
#include "capi/handles.h"

extern "C" {

int dm_stream_create(dm_context* decoder_ctx, dm_engine* window_vae, const char* owner,
                     const dm_stream_options* opts, dm_stream** out, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(decoder_ctx, "dm_stream_create decoder context");
    dm::CheckHandle(window_vae, "dm_stream_create window VAE");
    dm::CheckOut(out, "dm_stream_create");
    dm::CheckOwner(owner);
    if (opts == nullptr)
      dm::Fail(dm::Status::kInvalidArgument, "dm_stream_create: options are NULL");
    dm::StreamOptions o;
    o.frames = opts->frames;
    o.max_depth = opts->max_depth;
    o.depth = opts->depth;
    o.steps = opts->steps;
    o.shift = opts->shift;
    o.max_cond_len = opts->max_cond_len;
    o.vae_window = opts->vae_window;
    o.lead_s = opts->lead_s;
    o.max_prompts = opts->max_prompts == 0 ? 1 : opts->max_prompts;
    auto s = std::make_unique<dm_stream>();
    s->stream = std::make_unique<dm::Stream>(*decoder_ctx->context, window_vae->engine, owner, o);
    *out = s.release();
  });
}

void dm_stream_free(dm_stream** stream) noexcept { dm::FreeHandle(stream); }

uint64_t dm_stream_bytes(const dm_stream* stream) noexcept {
  return dm::GuardValue<uint64_t>(
      0, [&]() -> uint64_t { return stream == nullptr ? 0 : stream->stream->bytes(); });
}

int dm_stream_set_source(dm_stream* stream, const dm_buffer* moments, int frames,
                         dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(stream, "dm_stream_set_source");
    dm::CheckHandle(moments, "dm_stream_set_source moments");
    if (frames < 1 ||
        moments->memory.size() < static_cast<uint64_t>(frames) * 128 * sizeof(float)) {
      dm::Fail(dm::Status::kInvalidArgument, "moments buffer too small for %d frames", frames);
    }
    stream->stream->SetSourceMoments(static_cast<const float*>(moments->memory.data()), frames);
  });
}

int dm_stream_set_condition(dm_stream* stream, int slot, const dm_buffer* enc, int len,
                            dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(stream, "dm_stream_set_condition");
    dm::CheckHandle(enc, "dm_stream_set_condition buffer");
    if (len < 1 || enc->memory.size() < static_cast<uint64_t>(len) * 2048 * sizeof(float)) {
      dm::Fail(dm::Status::kInvalidArgument, "conditioning buffer too small for %d tokens", len);
    }
    stream->stream->SetCondition(static_cast<dm::ConditionSlot>(slot),
                                 static_cast<const float*>(enc->memory.data()), len);
  });
}

int dm_stream_set_curve(dm_stream* stream, const char* name, const float* values, int len,
                        dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(stream, "dm_stream_set_curve");
    stream->stream->SetSharedCurve(name, values, len);
  });
}

int dm_stream_set_blend_curve(dm_stream* stream, const float* values, int len,
                              dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(stream, "dm_stream_set_blend_curve");
    stream->stream->SetBlendCurve(values, len);
  });
}

int dm_stream_set_playback(dm_stream* stream, const float* interleaved, int64_t frames,
                           dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(stream, "dm_stream_set_playback");
    if (interleaved == nullptr) dm::Fail(dm::Status::kInvalidArgument, "playback source is NULL");
    stream->stream->SetPlayback(interleaved, frames);
  });
}

int dm_stream_read_playback(const dm_stream* stream, int64_t start, float* dst, int64_t frames,
                            dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(stream, "dm_stream_read_playback");
    if (dst == nullptr && frames > 0) dm::Fail(dm::Status::kInvalidArgument, "destination is NULL");
    stream->stream->ReadPlayback(start, dst, frames);
  });
}

namespace {

void CopyResult(const dm::TickResult& r, dm_tick_result* result) {
  if (result == nullptr) return;
  result->emitted = r.emitted;
  result->decoded = r.decoded;
  result->start_sample = r.start_sample;
  result->num_samples = r.num_samples;
  result->tick_ms = r.tick_ms;
  result->dec_ms = r.dec_ms;
  result->engine_ms = r.engine_ms;
  result->vae_ms = r.vae_ms;
  result->num_gens = r.num_gens;
  result->active = r.active;
  result->decoder_calls = r.decoder_calls;
  result->depth = r.depth;
}

dm::SliceBuffers Slices(float* slice, int64_t slice_cap, uint8_t* slice_f16, int64_t f16_cap) {
  dm::SliceBuffers b;
  b.f32 = slice;
  b.f32_cap = slice_cap;
  b.f16 = slice_f16;
  b.f16_cap = f16_cap;
  return b;
}

}  // namespace

int dm_stream_tick(dm_stream* stream, const dm_tick_params* params, dm_tick_result* result,
                   float* slice, int64_t slice_cap, uint8_t* slice_f16, int64_t f16_cap,
                   dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(stream, "dm_stream_tick");
    if (params == nullptr) dm::Fail(dm::Status::kInvalidArgument, "tick params are NULL");
    dm::TickParams p;
    p.submit = params->submit;
    p.seed = params->seed;
    p.denoise = params->denoise;
    p.prompt_blend = params->prompt_blend;
    p.hint_strength = params->hint_strength;
    p.guidance = params->guidance;
    p.rcfg_mode = params->rcfg_mode;
    p.cfg_rescale = params->cfg_rescale;
    p.velocity_scale = params->velocity_scale;
    p.shift = params->shift;
    p.depth = params->depth;
    p.playhead_s = params->playhead_s;
    p.decode = params->decode;
    p.channel_gain_active = params->channel_gain_active;
    for (int i = 0; i < 64; ++i) p.channel_gain[i] = params->channel_gain[i];
    dm::TickResult r;
    stream->stream->Tick(p, &r, Slices(slice, slice_cap, slice_f16, f16_cap));
    CopyResult(r, result);
  });
}

int dm_stream_decode_window(dm_stream* stream, double playhead_s, const float* latent, int frames,
                            dm_tick_result* result, float* slice, int64_t slice_cap,
                            uint8_t* slice_f16, int64_t f16_cap, dm_error* err) noexcept {
  return dm::Guard(err, [&] {
    dm::CheckHandle(stream, "dm_stream_decode_window");
    dm::TickResult r;
    stream->stream->DecodeWindow(playhead_s, latent, frames, &r,
                                 Slices(slice, slice_cap, slice_f16, f16_cap));
    CopyResult(r, result);
  });
}

}  // extern "C"

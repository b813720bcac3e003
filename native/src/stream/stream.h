// A live session's streaming state in the shim: the ring-buffer pipeline, the session's
// source and conditioning, the looping playback buffer and the slice being produced.
//
// Everything is allocated when the stream is created, through the ledger with the
// session's owner tag; Tick() — the one call Go makes per tick — allocates nothing. The
// decoder's activation memory belongs to the session's decoder execution context (borrowed:
// it must outlive the stream), and the pipeline runs the model through the engine's seams.
//
// On a device the CPU cannot address (the cuda device) the stream's memory comes from a
// MirroredAllocator: every block is reserved on the device (so the ledger and admission
// see the same bytes as on the host device) and the CPU works on a pinned host shadow.
// Inputs that arrive in device buffers (source moments, conditioning) are copied to the
// host once when set; each decoded slice's patched playback range is copied to the device
// copy in the same tick (one or two H2D copies on a decode tick, none otherwise; no
// allocation). On the host device mirror_ is null and nothing changes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/constants.h"
#include "engine/engine.h"
#include "pipeline/pipeline.h"

namespace dm {

struct StreamOptions {
  int frames = 0;  // T of the source latent
  int max_depth = kMaxDepth;
  int depth = 4;
  int steps = 8;
  float shift = 3.0f;
  int max_cond_len = 128;    // longest conditioning sequence the stream accepts
  float vae_window = 0.36f;  // kept slice, seconds (clamped to [0.04, 0.36])
  float lead_s = 0.5f;       // decode this far ahead of the playhead
  // Prompts a request may carry: 1 (the tick's scalar A/B lerp), or 2 to allow per-frame A/B
  // weights (SetBlendCurve): two decoder rows per slot, so max_depth·2 must fit the
  // decoder's max batch.
  int max_prompts = 1;
};

enum class ConditionSlot : int { kPromptA = 0, kPromptB = 1, kNegative = 2 };

struct TickParams {
  int submit = 1;  // submit a request this tick
  int64_t seed = 0;
  float denoise = 1.0f;
  float prompt_blend = 0.0f;  // 0 = prompt A, 1 = prompt B
  float hint_strength = 1.0f;
  float guidance = 1.0f;  // CFG scale; > 1 with rcfg_mode != 0 enables guidance
  int rcfg_mode = 0;      // 0 off, 1 full, 2 initialize, 3 self
  float cfg_rescale = 0.0f;
  float velocity_scale = 1.0f;
  float shift = 3.0f;
  int depth = 4;
  double playhead_s = 0.0;  // client playback position (seconds into the loop)
  int decode = 1;           // decode an emitted latent into a slice
  int channel_gain_active = 0;
  float channel_gain[64] = {};
};

// Where a decoded slice goes: interleaved stereo float32 (required when decoding; it is also
// the crossfade's working buffer) and, optionally, the same samples as IEEE binary16 in
// little-endian byte order — the wire's RAW slice payload (spec/protocol.md §4.1).
struct SliceBuffers {
  float* f32 = nullptr;
  int64_t f32_cap = 0;     // floats
  uint8_t* f16 = nullptr;  // null: no float16 copy
  int64_t f16_cap = 0;     // bytes
};

struct TickResult {
  int emitted = 0;
  int decoded = 0;
  int64_t start_sample = 0;  // frame index of the slice in the playback buffer
  int num_samples = 0;       // frames in the slice (interleaved stereo floats = 2×)
  float tick_ms = 0;
  float dec_ms = 0;
  float engine_ms = 0;    // of tick_ms, time inside the decoder engine
  float vae_ms = 0;       // of dec_ms, time inside the windowed VAE engine
  uint32_t num_gens = 0;  // latents finished so far
  int active = 0;
  int decoder_calls = 0;
  int depth = 0;
};

class Stream {
 public:
  Stream(Context& decoder_ctx, std::shared_ptr<Engine> window_vae, const std::string& owner,
         const StreamOptions& opts);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Source from VAE-encode moments [128, T] (means ‖ logvar): latents are the means.
  void SetSourceMoments(const float* moments, int frames);
  void SetCondition(ConditionSlot slot, const float* enc, int len);
  // The looping playback buffer, interleaved stereo, frames == T·1920.
  void SetPlayback(const float* interleaved, int64_t frames);
  void ReadPlayback(int64_t start, float* dst, int64_t frames) const;

  // Shared-curve override (spec §4.8) by DEMON field name: applies to every in-flight slot
  // from the next tick. len 0 clears it, 1 is a scalar, T is a per-frame curve. Copied.
  void SetSharedCurve(const char* name, const float* values, int len);

  // Per-frame prompt A/B weights (spec §4.1 temporal_weight): w[t] in [0, 1] weighs prompt B
  // at latent frame t and 1 − w[t] prompt A; each prompt gets its own decoder row and the
  // velocities blend per frame. len T is a curve, 1 a constant, 0 clears (back to the tick's
  // scalar prompt_blend, a lerp of the two conditionings). Requests submitted from the next
  // tick carry it. kState unless the stream was made with max_prompts 2. Copied.
  void SetBlendCurve(const float* w, int len);

  // One tick: apply knobs, submit, advance the ring buffer, and when a latent finishes,
  // decode the window at playhead + lead into the slice buffers (crossfaded and patched into
  // the playback buffer). With p.decode set, buffers too small for a slice are refused
  // (kInvalidArgument) before anything changes.
  void Tick(const TickParams& p, TickResult* out, const SliceBuffers& slice);

  // The decode half of a tick, without the DiT: the idle mode of spec §4.10 step 2 ("keep
  // decoding the last latent"). latent [T,64] (host memory, read during the call), or null
  // for the last latent this stream emitted (kState if there is none yet). Fills decoded,
  // start_sample, num_samples, dec_ms, num_gens and depth of *out.
  void DecodeWindow(double playhead_s, const float* latent, int frames, TickResult* out,
                    const SliceBuffers& slice);

  uint64_t bytes() const;
  int frames() const { return frames_; }

 private:
  void RebuildContext(float hint);
  void RebuildBlend(float blend);
  void CheckSliceBuffers(const SliceBuffers& slice) const;
  // Plans the window at playhead + lead, decodes it from latent [T,64], crossfades and
  // patches it into the playback buffer and writes the slice buffers.
  void DecodeSlice(const float* latent, double playhead_s, const SliceBuffers& slice,
                   TickResult* out);

  // Host view of stream input: `src` itself on a host-accessible device, else `src`
  // copied device-to-host into `host` (n floats) and `host` returned.
  const float* HostInput(const float* src, float* host, size_t n);
  // Copies the playback range [start, start+n) frames (wrapping) to the device copy.
  void SyncPlayback(long start, long n);

  std::shared_ptr<Engine> decoder_;
  std::shared_ptr<DeviceBuffer> scratch_;  // the decoder context's activation memory
  std::shared_ptr<Block> host_scratch_;    // what the CPU math uses (== scratch_ on host)
  std::shared_ptr<Engine> vae_;
  const WindowDecoder* window_ = nullptr;
  HandleToken token_;
  std::unique_ptr<Allocator> alloc_;  // DeviceAllocator, or MirroredAllocator (staged)
  StreamOptions opts_;
  int frames_;
  std::unique_ptr<Block> buf_;
  MirroredBlock* mirror_ = nullptr;  // buf_ when staged, else null
  std::unique_ptr<pipe::Pipeline> pipeline_;

  // Views into buf_.
  float* source_ = nullptr;   // [T,64]
  float* hints_ = nullptr;    // [T,64]
  float* context_ = nullptr;  // [T,128]
  float* cond_[3] = {};       // [max_L, 2048] each
  int cond_len_[3] = {};
  float* blended_ = nullptr;  // [max_L, 2048]
  int blended_len_ = 0;
  float* playback_ = nullptr;      // [T·1920, 2]
  float* window_z_ = nullptr;      // [25, 64]
  float* window_audio_ = nullptr;  // [2, 25·1920]
  float* blend_a_ = nullptr;       // [T] prompt A's per-frame weight (1 − w)
  float* blend_b_ = nullptr;       // [T] prompt B's per-frame weight (w)
  int blend_len_ = 0;              // 0: scalar lerp; 1 or T: per-frame weights
  long slice_frames_ = 0;          // frames per decoded slice (the same for every window)
  // The last latent emitted: the pipeline's emit buffer, which only the next emit rewrites.
  const float* last_latent_ = nullptr;

  // Versions of the buffers requests point at (pipe::SlotRequest::context_version): a new
  // one from next_version_ whenever a buffer is rewritten, so requests reference unchanged
  // content instead of copying it every tick.
  uint64_t next_version_ = 1;
  uint64_t source_version_ = 0;
  uint64_t context_version_ = 0;
  uint64_t cond_version_[3] = {};
  uint64_t blended_version_ = 0;

  bool have_source_ = false;
  bool have_playback_ = false;
  float hint_ = -1.0f;
  float blend_ = -1.0f;
  bool gain_active_ = false;
  float gain_[64] = {};
  float shift_ = 0.0f;
  uint32_t num_gens_ = 0;
};

}  // namespace dm

// The streaming ring buffer (spec/engine.md §4.1, §4.3–§4.5, §4.8) on host float memory.
//
// A Pipeline holds up to `depth` in-flight generations ("slots"), each at its own denoising
// step. Tick() runs one batched decoder call over every (slot, active positive condition) row —
// plus one over the negative rows when CFG needs them — and advances every active slot one
// step. Everything the pipeline will ever need is allocated in the constructor from the
// caller's dm::Allocator; Submit() and Tick() never allocate.
//
// Numerics are fp32 (DEMON runs bf16 on CUDA, §4.11): same formulas, different rounding.
// Noise comes from dm::CounterNormal keyed by the request seed, so a seed fully determines a
// request's result, whichever slot it lands in and whatever else is in flight.
#pragma once

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/memory.h"
#include "pipeline/curve.h"
#include "pipeline/dcw.h"
#include "ref/velocity_model.h"

namespace dm {
namespace pipe {

// What a buffer holds: `floats` values copied from `origin` as it was at `version`. Equal
// tags mean equal bytes, so a copy whose destination already holds the tag can be skipped.
// Caller inputs with a version (SlotRequest::*_version) are tagged by their address; other
// inputs by their pool storage and request id, which no other request shares.
struct Content {
  const void* origin = nullptr;
  uint64_t version = 0;
  size_t floats = 0;
  bool operator==(const Content& o) const {
    return origin == o.origin && version == o.version && floats == o.floats;
  }
};

// One conditioning sequence (enc [len, 2048]; no attention mask: the decoder has none, §2.2).
struct SlotCondition {
  const float* enc = nullptr;   // [len, kEncoderDim], caller memory (copied by Submit)
  uint64_t version = 0;         // of enc; see SlotRequest::context_version
  int len = 0;                  // L, 1..max_cond_len
  Curve temporal_weight;        // per-frame blend weight; unset = 1
  bool has_step_range = false;  // active while start <= step/total < end
  float step_start = 0.f;
  float step_end = 1.f;
};

enum class RcfgMode { kNone, kFull, kInitialize, kSelf };

// Called as step_strength(step, total); null means 1.
using StepStrengthFn = float (*)(int step, int total);

struct LatentMask {
  Curve mask;                       // [T] or scalar; set() == "latent_mask present"
  const float* original = nullptr;  // [T,64], required when mask is set
  StepStrengthFn step_strength = nullptr;
  const float* noise = nullptr;  // [T,64] fixed mask noise; null = seeded randn
};

// §4.1. Every pointer is caller memory that must stay valid only for the Submit() call.
// Per-frame knobs are Curves (scalar or [T]).
//
// Versions (0 = none) let a caller that keeps an input at a fixed address skip its copy: the
// caller gives the buffer a new version whenever it rewrites it, so the same (address,
// version) always means the same bytes, and Submit and the decoder batch skip copies of
// content they already hold. A live stream's context, source and prompts rarely change, so
// its steady-state ticks copy none of them (results are the same either way).
struct SlotRequest {
  int frames = 0;                          // T
  const float* context_latents = nullptr;  // [T, 128], required
  uint64_t context_version = 0;
  uint64_t source_version = 0;     // of source_latents
  uint64_t x0_target_version = 0;  // of x0_target
  SlotCondition primary;           // required; its weight/range = primary_temporal_*
  const SlotCondition* extra_conditions = nullptr;
  int num_extra_conditions = 0;
  const SlotCondition* neg_conditions = nullptr;
  int num_neg_conditions = 0;

  int64_t seed = -1;  // < 0: none (a seed is derived from the request id)
  float denoise = 1.f;
  const float* source_latents = nullptr;  // [T,64] or null

  const float* x0_target = nullptr;  // [T,64] or null
  Curve x0_target_strength;          // default 0
  Curve x0_target_curve;             // gated curve path when set
  float x0_target_gate = 0.f;
  Curve initial_noise_curve;
  LatentMask latent_mask;

  Curve guidance;      // CFG scale g; required for any CFG
  Curve apg_momentum;  // default −0.75
  RcfgMode rcfg_mode = RcfgMode::kNone;
  Curve cfg_rescale;

  Curve velocity_scale;  // default 1
  Curve ode_noise;       // default 0
  Curve sde_denoise;     // default none
};

// Knobs that set_shared_curve may override for every in-flight slot (§4.8).
enum class SharedCurve {
  kVelocityScale,
  kSdeDenoise,
  kOdeNoise,
  kApgMomentum,
  kX0TargetStrength,
  kCfgRescale,
  kGuidance,
  kCount
};

struct PipelineConfig {
  int max_depth = 8;       // 1..kMaxDepth; sizes every per-slot buffer
  int depth = 4;           // initial depth, 1..max_depth
  int max_frames = 1500;   // max T
  int max_cond_len = 512;  // max L of any condition
  int max_pos_conds = 2;   // primary + extras, 1..kMaxCondsPerSlot
  int max_neg_conds = 1;   // 0..kMaxCondsPerSlot
  int steps = 8;           // fixed for the pipeline's life (§4.8: steps change = rebuild)
  float shift = 3.0f;
  bool sde = false;  // config.infer_method == "sde"
  // Optional: the model's scratch, owned by the caller (a decoder execution context's
  // activation memory). Null: the pipeline allocates it from its allocator.
  void* model_scratch = nullptr;
  size_t model_scratch_bytes = 0;
};

inline constexpr int kMaxCondsPerSlot = 8;

struct TickResult {
  bool emitted = false;
  uint64_t id = 0;                // the emitted request's id (Submit's return value)
  int frames = 0;                 // its T
  const float* latent = nullptr;  // [frames,64]; valid until the next emit (Tick/Generate)
  int active = 0;                 // slots advanced this tick
  int decoder_calls = 0;          // 0, 1 or 2
  int pos_rows = 0;               // batch of the positive call
  int neg_rows = 0;               // batch of the negative call
  int pos_cond_len = 0;           // L the positive call was padded to
  int neg_cond_len = 0;
  double model_ms = 0;  // time inside the decoder's Forward (engine execution)
};

class Pipeline {
 public:
  // Allocates every buffer (request pool of 2·max_depth entries, slot state, decoder batch
  // inputs/outputs, the model's ScratchBytes for the largest call, curve storage). Throws
  // dm::Error(kInvalidArgument) on a bad config, kOutOfMemory from the allocator.
  Pipeline(Allocator& alloc, const VelocityModel& model, Parallel& par, const PipelineConfig& cfg);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // §4.4 submit: validates, drops the oldest queued requests while the queue holds >= depth,
  // copies the request into pool storage, enqueues it. Returns the request id (1, 2, ...).
  // Throws kInvalidArgument (state unchanged) on a bad request. Never allocates.
  uint64_t Submit(const SlotRequest& req);

  // §4.4 tick: T-coherence, emit (first finished slot), fill, one step for every active slot.
  // Never allocates. Throws kInvalidArgument (before changing anything) if the channel gain's
  // frame count fits neither 1 nor the target T.
  TickResult Tick();

  // One-shot generation (§4.4 Generate): depth 1, submit, tick until the emit. Requires an
  // idle pipeline (no slot in flight, empty queue; else kState). Writes [T,64] to out and
  // returns the request id. Restores the previous depth.
  uint64_t Generate(const SlotRequest& req, float* out);

  // §4.4 set_depth: clamps to [1, max_depth]. Shrink: slots [n, depth) drain — they keep
  // denoising until they finish and are emitted, but are not refilled (DEMON drops them and
  // their work instead) — and the queue is capped at n at once (oldest dropped). Grow: the
  // new slots fill from the queue on the next tick.
  void SetDepth(int n);
  int depth() const { return depth_; }

  // Affects newly initialised slots only (schedules live on slots).
  void SetShift(float shift);
  float shift() const { return shift_; }

  // §4.8: applies to every in-flight slot from the next tick. An unset curve clears it.
  // Per-frame curves are copied (len <= max_frames). Never allocates.
  void SetSharedCurve(SharedCurve which, const Curve& value);
  // By DEMON field name ("velocity_scale", "sde_denoise_curve", "ode_noise_curve",
  // "apg_momentum", "x0_target_strength", "cfg_rescale_curve", "guidance_curve").
  // Returns false for an unknown name.
  bool SetSharedCurve(const char* name, const Curve& value);
  void ClearSharedCurves();

  // Channel gain [frames, 64] applied to the decoder input only (frames 1 or T).
  // gain == nullptr or frames == 0 clears it. Copied. Never allocates.
  void SetChannelGain(const float* gain, int frames);

  // Replaces the DCW corrector (all slots, next step). Validates (kUnsupported for faders
  // not implemented); per-frame scaler curves are copied (len <= max_frames).
  void SetDcw(const DcwConfig& cfg);
  const DcwConfig& dcw() const { return dcw_; }

  // Introspection (tests, stats).
  int queued() const { return queue_len_; }
  uint64_t dropped() const { return dropped_; }
  uint64_t ticks() const { return ticks_; }
  bool SlotBusy(int i) const;  // any slot < max_depth (a slot >= depth() may be draining)
  uint64_t SlotId(int i) const;
  int SlotStep(int i) const;
  const float* SlotLatent(int i) const;  // xt [T,64] or null
  size_t bytes_reserved() const { return bytes_reserved_; }
  const PipelineConfig& config() const { return cfg_; }
  // Bytes of conditioning and context the batch builder copied so far (rows it could not
  // reuse from the previous call).
  uint64_t batch_bytes_copied() const { return batch_bytes_copied_; }
  // Bytes of context, source, x0 target and conditioning Submit copied so far (inputs whose
  // version the request storage did not already hold).
  uint64_t input_bytes_copied() const { return input_bytes_copied_; }
  // Makes the next decoder call copy every batch row again (tests: cached rows must equal
  // freshly copied ones).
  void ForgetBatchRows() {
    enc_rows_.Restride(0);
    ctx_rows_.Restride(0);
  }

 private:
  struct StoredCurve;
  struct StoredCond;
  struct StoredRequest;
  struct Slot;
  struct Carver;

  void Carve(Carver& cv);
  void Validate(const SlotRequest& req) const;
  void CopyIn(const SlotRequest& req, StoredRequest& dst);
  // Copies n floats from src to dst, unless held says dst already has (src, version);
  // updates held. An unversioned input is tagged with dst and the request id.
  void CopyInput(float* dst, Content& held, const float* src, uint64_t version, size_t n,
                 uint64_t id);
  void ReleaseSlot(Slot& s);
  void DropQueued(int qi);
  void InitSlot(Slot& s, int pool_index);
  void RunStep(TickResult& res);
  void PrepareSlot(Slot& s);
  int BuildBatch(bool negative, int* cond_len);
  void FinishSlot(int active_index);
  const Curve& Knob(SharedCurve which, const Curve& own, int frames) const;

  Allocator& alloc_;
  const VelocityModel& model_;
  Parallel& par_;
  PipelineConfig cfg_;

  std::unique_ptr<Block> buffers_;  // every float buffer, carved
  std::unique_ptr<Block> scratch_;  // the model's scratch for the largest call (if owned)
  void* scratch_ptr_ = nullptr;     // scratch_ or PipelineConfig::model_scratch
  float* noise_cache_ = nullptr;    // [T,64] initial noise of the last (seed, T) generated
  uint64_t noise_cache_seed_ = 0;
  long noise_cache_len_ = -1;
  size_t bytes_reserved_ = 0;

  std::vector<StoredRequest> pool_;  // 2·max_depth entries, sized once
  std::vector<Slot> slots_;          // max_depth entries, sized once; busy ones >= depth_ drain
  std::vector<int> queue_;           // capacity max_depth + 1, indices into pool_
  int queue_len_ = 0;
  std::vector<int> active_;  // slot indices active this tick (capacity max_depth)
  int num_active_ = 0;

  int depth_ = 1;
  float shift_ = 3.f;
  int t_eff_max_ = 0;
  uint64_t next_id_ = 1;
  uint64_t dropped_ = 0;
  uint64_t batch_bytes_copied_ = 0;
  uint64_t input_bytes_copied_ = 0;
  uint64_t ticks_ = 0;

  // Shared-curve overrides (§4.8).
  std::vector<StoredCurve> shared_;

  // Channel gain.
  float* gain_ = nullptr;
  int gain_frames_ = 0;

  // DCW config; per-frame scalers point into dcw_low_/dcw_high_.
  DcwConfig dcw_;
  float* dcw_low_ = nullptr;
  float* dcw_high_ = nullptr;

  // What each batch row of b_enc_ / b_ctx_ holds (the Content of the request's conditioning
  // or context). A row is copied only when that changes: in steady state a tick copies
  // hidden_states and the rows of a newcomer whose inputs are unversioned (none when they
  // are versioned and unchanged). Rows are laid out at a stride (L for b_enc_, T_eff for
  // b_ctx_); a call at another stride overlaps every row, so it forgets them all.
  struct BatchRows {
    int stride = 0;
    std::vector<Content> rows;  // sized at construction
    // Forgets every row when the stride changes.
    void Restride(int s) {
      if (s == stride) return;
      stride = s;
      std::fill(rows.begin(), rows.end(), Content{});
    }
    // True when row i must be written for src (and records it as written).
    bool Stale(int i, const Content& src) {
      Content& held = rows[static_cast<size_t>(i)];
      if (held == src) return false;
      held = src;
      return true;
    }
  };
  BatchRows enc_rows_;
  BatchRows ctx_rows_;

  // Decoder batch (shared by the positive and negative calls; outputs separate).
  float* b_hidden_ = nullptr;           // [rows, T_eff, 64]
  float* b_timestep_ = nullptr;         // [rows]
  float* b_enc_ = nullptr;              // [rows, max_L, 2048]
  float* b_ctx_ = nullptr;              // [rows, T_eff, 128]
  float* b_vpos_ = nullptr;             // [depth·max_pos, T_eff, 64]
  float* b_vneg_ = nullptr;             // [depth·max_neg, T_eff, 64]
  int cur_frames_ = 0;                  // T of this tick's batch
  float* emit_ = nullptr;               // the emitted latent [T,64] (swapped with a slot's xt)
  std::function<void(int)> finish_fn_;  // [this] only: stored inline, never allocates
};

}  // namespace pipe
}  // namespace dm

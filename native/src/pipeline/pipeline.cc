#include "pipeline/pipeline.h"

#include <chrono>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "core/constants.h"
#include "core/error.h"
#include "core/rng.h"
#include "pipeline/guidance.h"
#include "pipeline/loops.h"
#include "pipeline/schedule.h"

namespace dm {
namespace pipe {
namespace pipeline_detail {

constexpr int D = kLatentDim;

// Counter-RNG streams of one request (keyed by its seed).
constexpr uint64_t kStreamInit = 0;       // initial noise
constexpr uint64_t kStreamMask = 1;       // latent-mask fixed noise
constexpr uint64_t kStreamStepBase = 16;  // + step: ODE ε / SDE re-noise of that step

inline long Idx(int frame, int c) { return static_cast<long>(frame) * D + c; }

bool CondActive(bool has_range, float start, float end, double frac) {
  return !has_range || (start <= frac && frac < end);
}

void CheckCurve(const Curve& c, int frames, const char* name) {
  if (c.len == 0 || c.len == 1) return;
  if (c.len != frames || c.frames == nullptr)
    Fail(Status::kInvalidArgument, "pipeline: curve %s has %d values, want 1 or T=%d", name, c.len,
         frames);
}

}  // namespace pipeline_detail

// ---------------------------------------------------------------------------------------------
// Storage types (all pointers carved from one Block in the constructor).

struct Pipeline::StoredCurve {
  Curve c;
  float* storage = nullptr;  // capacity max_frames

  void Assign(const Curve& src) {
    c = src;
    if (src.len > 1) {
      std::memcpy(storage, src.frames, static_cast<size_t>(src.len) * sizeof(float));
      c.frames = storage;
    }
  }
};

struct Pipeline::StoredCond {
  float* enc = nullptr;  // [max_cond_len, 2048]
  Content enc_held;      // what enc holds
  int len = 0;
  StoredCurve weight;
  bool has_range = false;
  float start = 0.f, end = 1.f;
};

struct Pipeline::StoredRequest {
  bool in_use = false;
  uint64_t id = 0;
  int frames = 0;
  uint64_t seed = 0;
  float denoise = 1.f;
  RcfgMode rcfg = RcfgMode::kNone;
  float x0_gate = 0.f;
  bool has_src = false, has_x0t = false, has_mask = false, has_mask_noise = false;
  bool has_cfg = false;
  StepStrengthFn step_fn = nullptr;

  float* ctx = nullptr;                  // [T,128]
  float* src = nullptr;                  // [T,64]
  float* x0t = nullptr;                  // [T,64]
  Content ctx_held, src_held, x0t_held;  // what ctx, src, x0t hold
  float* mask_orig = nullptr;            // [T,64]
  float* mask_noise = nullptr;           // [T,64]

  StoredCurve x0_strength, x0_curve, init_noise, mask, guidance, momentum, rescale, vscale, onc,
      sdc;

  StoredCond pos[kMaxCondsPerSlot];  // pos[0] = primary
  int n_pos = 0;
  StoredCond neg[kMaxCondsPerSlot];
  int n_neg = 0;
};

struct Pipeline::Slot {
  int req = -1;  // pool index, -1 = empty
  int step = 0;
  int sched_len = 0;
  bool vneg_valid = false;

  float* sched = nullptr;        // [ScheduleCapacity(steps)]
  float* xt = nullptr;           // [T,64]
  float* apg = nullptr;          // APG running average [T,64]
  float* noise = nullptr;        // initial noise [T,64], RCFG self only (its v_neg)
  float* vneg_cached = nullptr;  // [T,64] (RCFG initialize)
  float* mask_noise = nullptr;   // [T,64] (generated when the request has none)
  float* xtm_buf = nullptr;      // mask pre-blended x_t
  float* vpos = nullptr;         // blended positive velocity
  float* vneg = nullptr;         // blended negative velocity
  float* v = nullptr;            // guided velocity
  float* den = nullptr;          // denoised estimate for DCW

  // Per-tick scratch (filled by PrepareSlot).
  float t = 0.f, tn = 0.f;
  int total = 0;
  float mask_strength = 1.f;
  const float* xtm = nullptr;
  const float* mask_noise_use = nullptr;
  int n_pos_sel = 0, pos_sel[kMaxCondsPerSlot] = {}, pos_row0 = 0;
  int n_neg_sel = 0, neg_sel[kMaxCondsPerSlot] = {}, neg_row0 = 0;
  bool neg_now = false;
};

struct Pipeline::Carver {
  char* base = nullptr;
  size_t off = 0;
  float* Floats(size_t n) {
    const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float* p = base ? reinterpret_cast<float*>(base + off) : nullptr;
    off += bytes == 0 ? 64 : bytes;
    return p;
  }
};

// ---------------------------------------------------------------------------------------------

Pipeline::Pipeline(Allocator& alloc, const VelocityModel& model, Parallel& par,
                   const PipelineConfig& cfg)
    : alloc_(alloc), model_(model), par_(par), cfg_(cfg) {
  if (cfg.max_depth < 1 || cfg.max_depth > kMaxDepth)
    Fail(Status::kInvalidArgument, "pipeline: max_depth %d not in [1,%d]", cfg.max_depth,
         kMaxDepth);
  if (cfg.depth < 1 || cfg.depth > cfg.max_depth)
    Fail(Status::kInvalidArgument, "pipeline: depth %d not in [1,%d]", cfg.depth, cfg.max_depth);
  if (cfg.max_frames < 1) Fail(Status::kInvalidArgument, "pipeline: max_frames %d", cfg.max_frames);
  if (cfg.max_cond_len < 1)
    Fail(Status::kInvalidArgument, "pipeline: max_cond_len %d", cfg.max_cond_len);
  if (cfg.max_pos_conds < 1 || cfg.max_pos_conds > kMaxCondsPerSlot)
    Fail(Status::kInvalidArgument, "pipeline: max_pos_conds %d", cfg.max_pos_conds);
  if (cfg.max_neg_conds < 0 || cfg.max_neg_conds > kMaxCondsPerSlot)
    Fail(Status::kInvalidArgument, "pipeline: max_neg_conds %d", cfg.max_neg_conds);
  if (cfg.steps < 1) Fail(Status::kInvalidArgument, "pipeline: steps %d", cfg.steps);
  if (!(cfg.shift > 0.f)) Fail(Status::kInvalidArgument, "pipeline: shift must be > 0");

  depth_ = cfg.depth;
  shift_ = cfg.shift;
  t_eff_max_ = cfg.max_frames + (cfg.max_frames % 2);

  pool_.resize(static_cast<size_t>(2 * cfg.max_depth));
  slots_.resize(static_cast<size_t>(cfg.max_depth));
  queue_.assign(static_cast<size_t>(cfg.max_depth + 1), -1);
  active_.assign(static_cast<size_t>(cfg.max_depth), -1);
  shared_.resize(static_cast<size_t>(SharedCurve::kCount));

  Carver measure;
  Carve(measure);
  buffers_ = alloc_.Allocate(measure.off, "pipeline.buffers");
  Carver cv;
  cv.base = static_cast<char*>(buffers_->data());
  Carve(cv);
  bytes_reserved_ = measure.off;

  const int rows = cfg.max_depth * std::max(cfg.max_pos_conds, std::max(cfg.max_neg_conds, 1));
  const size_t scratch = model_.ScratchBytes(rows, t_eff_max_, cfg.max_cond_len);
  if (cfg.model_scratch != nullptr) {
    // The decoder's execution context owns the activation memory (accounted to it).
    if (cfg.model_scratch_bytes < scratch) {
      Fail(Status::kInvalidArgument,
           "decoder context has %zu bytes of activation memory; the pipeline needs %zu",
           cfg.model_scratch_bytes, scratch);
    }
    scratch_ptr_ = cfg.model_scratch;
  } else {
    scratch_ = alloc_.Allocate(scratch == 0 ? 64 : scratch, "pipeline.model_scratch");
    scratch_ptr_ = scratch_->data();
    bytes_reserved_ += scratch;
  }

  dcw_ = DcwConfig{};
  finish_fn_ = [this](int a) { FinishSlot(a); };
}

Pipeline::~Pipeline() = default;

void Pipeline::Carve(Carver& cv) {
  const size_t T = static_cast<size_t>(cfg_.max_frames);
  const size_t TD = T * kLatentDim;
  const size_t L = static_cast<size_t>(cfg_.max_cond_len);
  auto curve = [&](StoredCurve& c) { c.storage = cv.Floats(T); };
  auto cond = [&](StoredCond& c) {
    c.enc = cv.Floats(L * kEncoderDim);
    curve(c.weight);
  };
  for (StoredRequest& r : pool_) {
    r.ctx = cv.Floats(T * kContextDim);
    r.src = cv.Floats(TD);
    r.x0t = cv.Floats(TD);
    r.mask_orig = cv.Floats(TD);
    r.mask_noise = cv.Floats(TD);
    for (StoredCurve* c : {&r.x0_strength, &r.x0_curve, &r.init_noise, &r.mask, &r.guidance,
                           &r.momentum, &r.rescale, &r.vscale, &r.onc, &r.sdc})
      curve(*c);
    for (int i = 0; i < cfg_.max_pos_conds; ++i) cond(r.pos[i]);
    for (int i = 0; i < cfg_.max_neg_conds; ++i) cond(r.neg[i]);
  }
  for (Slot& s : slots_) {
    s.sched = cv.Floats(static_cast<size_t>(ScheduleCapacity(cfg_.steps)));
    for (float** p : {&s.xt, &s.apg, &s.noise, &s.vneg_cached, &s.mask_noise, &s.xtm_buf, &s.vpos,
                      &s.vneg, &s.v, &s.den})
      *p = cv.Floats(TD);
  }
  for (StoredCurve& c : shared_) curve(c);
  gain_ = cv.Floats(TD);
  dcw_low_ = cv.Floats(T);
  dcw_high_ = cv.Floats(T);
  emit_ = cv.Floats(TD);
  noise_cache_ = cv.Floats(TD);
  const size_t te = static_cast<size_t>(t_eff_max_);
  const size_t pos_rows = static_cast<size_t>(cfg_.max_depth * cfg_.max_pos_conds);
  const size_t neg_rows = static_cast<size_t>(cfg_.max_depth * cfg_.max_neg_conds);
  const size_t rows = std::max(pos_rows, neg_rows);
  b_hidden_ = cv.Floats(rows * te * kLatentDim);
  b_timestep_ = cv.Floats(rows);
  b_enc_ = cv.Floats(rows * L * kEncoderDim);
  b_ctx_ = cv.Floats(rows * te * kContextDim);
  b_vpos_ = cv.Floats(pos_rows * te * kLatentDim);
  b_vneg_ = cv.Floats(std::max<size_t>(neg_rows, 1) * te * kLatentDim);
  enc_rows_.rows.assign(rows, Content{});
  ctx_rows_.rows.assign(rows, Content{});
}

// ---------------------------------------------------------------------------------------------
// Submit

void Pipeline::Validate(const SlotRequest& req) const {
  using pipeline_detail::CheckCurve;
  const int T = req.frames;
  if (T < 1 || T > cfg_.max_frames)
    Fail(Status::kInvalidArgument, "pipeline: request T=%d not in [1,%d]", T, cfg_.max_frames);
  if (req.context_latents == nullptr)
    Fail(Status::kInvalidArgument, "pipeline: context_latents is required");
  if (!std::isfinite(req.denoise)) Fail(Status::kInvalidArgument, "pipeline: denoise not finite");
  if (req.num_extra_conditions < 0 || 1 + req.num_extra_conditions > cfg_.max_pos_conds)
    Fail(Status::kInvalidArgument, "pipeline: %d positive conditions, max %d",
         1 + req.num_extra_conditions, cfg_.max_pos_conds);
  if (req.num_neg_conditions < 0 || req.num_neg_conditions > cfg_.max_neg_conds)
    Fail(Status::kInvalidArgument, "pipeline: %d negative conditions, max %d",
         req.num_neg_conditions, cfg_.max_neg_conds);
  if (req.num_extra_conditions > 0 && req.extra_conditions == nullptr)
    Fail(Status::kInvalidArgument, "pipeline: extra_conditions is null");
  if (req.num_neg_conditions > 0 && req.neg_conditions == nullptr)
    Fail(Status::kInvalidArgument, "pipeline: neg_conditions is null");
  auto cond = [&](const SlotCondition& c) {
    if (c.enc == nullptr || c.len < 1 || c.len > cfg_.max_cond_len)
      Fail(Status::kInvalidArgument, "pipeline: condition L=%d not in [1,%d] (or enc null)", c.len,
           cfg_.max_cond_len);
    CheckCurve(c.temporal_weight, T, "temporal_weight");
  };
  cond(req.primary);
  for (int i = 0; i < req.num_extra_conditions; ++i) cond(req.extra_conditions[i]);
  for (int i = 0; i < req.num_neg_conditions; ++i) cond(req.neg_conditions[i]);
  CheckCurve(req.x0_target_strength, T, "x0_target_strength");
  CheckCurve(req.x0_target_curve, T, "x0_target_curve");
  CheckCurve(req.initial_noise_curve, T, "initial_noise_curve");
  CheckCurve(req.latent_mask.mask, T, "latent_mask.mask");
  CheckCurve(req.guidance, T, "guidance_curve");
  CheckCurve(req.apg_momentum, T, "apg_momentum");
  CheckCurve(req.cfg_rescale, T, "cfg_rescale_curve");
  CheckCurve(req.velocity_scale, T, "velocity_scale");
  CheckCurve(req.ode_noise, T, "ode_noise_curve");
  CheckCurve(req.sde_denoise, T, "sde_denoise_curve");
  if (req.latent_mask.mask.set() && req.latent_mask.original == nullptr)
    Fail(Status::kInvalidArgument, "pipeline: latent_mask needs original latents");
  // x0_target_curve without x0_target is ignored, as in DEMON (curve_x0 needs both).
}

void Pipeline::CopyInput(float* dst, Content& held, const float* src, uint64_t version, size_t n,
                         uint64_t id) {
  const Content want =
      version != 0 ? Content{src, version, n} : Content{dst, id, n};  // see Content
  if (version != 0 && held == want) return;
  std::memcpy(dst, src, n * sizeof(float));
  input_bytes_copied_ += n * sizeof(float);
  held = want;
}

void Pipeline::CopyIn(const SlotRequest& req, StoredRequest& r) {
  const size_t T = static_cast<size_t>(req.frames);
  const size_t TD = T * kLatentDim;
  r.frames = req.frames;
  r.seed =
      req.seed >= 0 ? static_cast<uint64_t>(req.seed) : SplitMix64(r.id ^ 0xD1B54A32D192ED03ull);
  r.denoise = req.denoise;
  r.rcfg = req.rcfg_mode;
  r.x0_gate = req.x0_target_gate;
  r.step_fn = req.latent_mask.step_strength;
  CopyInput(r.ctx, r.ctx_held, req.context_latents, req.context_version, T * kContextDim, r.id);
  r.has_src = req.source_latents != nullptr;
  if (r.has_src) CopyInput(r.src, r.src_held, req.source_latents, req.source_version, TD, r.id);
  r.has_x0t = req.x0_target != nullptr;
  if (r.has_x0t) CopyInput(r.x0t, r.x0t_held, req.x0_target, req.x0_target_version, TD, r.id);
  r.has_mask = req.latent_mask.mask.set();
  r.has_mask_noise = r.has_mask && req.latent_mask.noise != nullptr;
  if (r.has_mask) {
    std::memcpy(r.mask_orig, req.latent_mask.original, TD * sizeof(float));
    if (r.has_mask_noise) std::memcpy(r.mask_noise, req.latent_mask.noise, TD * sizeof(float));
  }
  r.x0_strength.Assign(req.x0_target_strength);
  r.x0_curve.Assign(req.x0_target_curve);
  r.init_noise.Assign(req.initial_noise_curve);
  r.mask.Assign(req.latent_mask.mask);
  r.guidance.Assign(req.guidance);
  r.momentum.Assign(req.apg_momentum);
  r.rescale.Assign(req.cfg_rescale);
  r.vscale.Assign(req.velocity_scale);
  r.onc.Assign(req.ode_noise);
  r.sdc.Assign(req.sde_denoise);
  auto cond = [&](const SlotCondition& c, StoredCond& d) {
    CopyInput(d.enc, d.enc_held, c.enc, c.version, static_cast<size_t>(c.len) * kEncoderDim, r.id);
    d.len = c.len;
    d.weight.Assign(c.temporal_weight);
    d.has_range = c.has_step_range;
    d.start = c.step_start;
    d.end = c.step_end;
  };
  r.n_pos = 1 + req.num_extra_conditions;
  cond(req.primary, r.pos[0]);
  for (int i = 0; i < req.num_extra_conditions; ++i) cond(req.extra_conditions[i], r.pos[1 + i]);
  r.n_neg = req.num_neg_conditions;
  for (int i = 0; i < req.num_neg_conditions; ++i) cond(req.neg_conditions[i], r.neg[i]);
  r.has_cfg =
      req.guidance.set() && (req.rcfg_mode == RcfgMode::kSelf || req.num_neg_conditions > 0);
}

void Pipeline::DropQueued(int qi) {
  pool_[static_cast<size_t>(queue_[static_cast<size_t>(qi)])].in_use = false;
  for (int k = qi; k + 1 < queue_len_; ++k)
    queue_[static_cast<size_t>(k)] = queue_[static_cast<size_t>(k + 1)];
  --queue_len_;
  ++dropped_;
}

uint64_t Pipeline::Submit(const SlotRequest& req) {
  Validate(req);
  while (queue_len_ >= depth_) DropQueued(0);  // drop the oldest
  int free_index = -1;
  for (size_t i = 0; i < pool_.size(); ++i) {
    if (!pool_[i].in_use) {
      free_index = static_cast<int>(i);
      break;
    }
  }
  if (free_index < 0) Fail(Status::kInternal, "pipeline: request pool exhausted");
  StoredRequest& r = pool_[static_cast<size_t>(free_index)];
  r.in_use = true;
  r.id = next_id_++;
  CopyIn(req, r);
  queue_[static_cast<size_t>(queue_len_++)] = free_index;
  return r.id;
}

// ---------------------------------------------------------------------------------------------
// Hot controls

// Deviation from DEMON, whose set_depth truncates slots[:n] and loses their work (§4.4): the
// issue asks for active slots to drain naturally. Slots at index >= n keep their request and
// step until it is emitted (still one emit per tick, index order); Fill never refills them.
void Pipeline::SetDepth(int n) {
  n = std::min(std::max(n, 1), cfg_.max_depth);
  while (queue_len_ > n) DropQueued(0);  // the queue cap is the new depth from now on
  depth_ = n;
}

void Pipeline::SetShift(float shift) {
  if (!(shift > 0.f) || !std::isfinite(shift))
    Fail(Status::kInvalidArgument, "pipeline: shift must be > 0");
  shift_ = shift;
}

void Pipeline::SetSharedCurve(SharedCurve which, const Curve& value) {
  const int w = static_cast<int>(which);
  if (w < 0 || w >= static_cast<int>(SharedCurve::kCount))
    Fail(Status::kInvalidArgument, "pipeline: unknown shared curve %d", w);
  if (value.len > cfg_.max_frames || (value.len > 1 && value.frames == nullptr))
    Fail(Status::kInvalidArgument, "pipeline: shared curve has %d values, max %d", value.len,
         cfg_.max_frames);
  shared_[static_cast<size_t>(w)].Assign(value);
}

bool Pipeline::SetSharedCurve(const char* name, const Curve& value) {
  struct Entry {
    const char* name;
    SharedCurve which;
  };
  static constexpr Entry kNames[] = {
      {"velocity_scale", SharedCurve::kVelocityScale},
      {"sde_denoise_curve", SharedCurve::kSdeDenoise},
      {"ode_noise_curve", SharedCurve::kOdeNoise},
      {"apg_momentum", SharedCurve::kApgMomentum},
      {"x0_target_strength", SharedCurve::kX0TargetStrength},
      {"cfg_rescale_curve", SharedCurve::kCfgRescale},
      {"guidance_curve", SharedCurve::kGuidance},
  };
  if (name == nullptr) return false;
  for (const Entry& e : kNames) {
    if (std::strcmp(e.name, name) == 0) {
      SetSharedCurve(e.which, value);
      return true;
    }
  }
  return false;
}

void Pipeline::ClearSharedCurves() {
  for (StoredCurve& c : shared_) c.c = Curve{};
}

void Pipeline::SetChannelGain(const float* gain, int frames) {
  if (gain == nullptr || frames <= 0) {
    gain_frames_ = 0;
    return;
  }
  if (frames > cfg_.max_frames)
    Fail(Status::kInvalidArgument, "pipeline: channel gain has %d frames, max %d", frames,
         cfg_.max_frames);
  std::memcpy(gain_, gain, static_cast<size_t>(frames) * kLatentDim * sizeof(float));
  gain_frames_ = frames;
}

void Pipeline::SetDcw(const DcwConfig& cfg) {
  ValidateDcw(cfg);
  for (const Curve* c : {&cfg.scaler, &cfg.high_scaler})
    if (c->len > cfg_.max_frames || (c->len > 1 && c->frames == nullptr))
      Fail(Status::kInvalidArgument, "pipeline: dcw curve has %d values, max %d", c->len,
           cfg_.max_frames);
  dcw_ = cfg;
  if (cfg.scaler.len > 1) {
    std::memcpy(dcw_low_, cfg.scaler.frames, static_cast<size_t>(cfg.scaler.len) * sizeof(float));
    dcw_.scaler.frames = dcw_low_;
  }
  if (cfg.high_scaler.len > 1) {
    std::memcpy(dcw_high_, cfg.high_scaler.frames,
                static_cast<size_t>(cfg.high_scaler.len) * sizeof(float));
    dcw_.high_scaler.frames = dcw_high_;
  }
}

const Curve& Pipeline::Knob(SharedCurve which, const Curve& own, int frames) const {
  const Curve& o = shared_[static_cast<size_t>(which)].c;
  if (!o.set()) return own;
  if (o.len > 1 && o.len != frames) return own;  // a per-frame override for another T
  return o;
}

// ---------------------------------------------------------------------------------------------
// Introspection

bool Pipeline::SlotBusy(int i) const {
  return i >= 0 && i < cfg_.max_depth && slots_[static_cast<size_t>(i)].req >= 0;
}
uint64_t Pipeline::SlotId(int i) const {
  return SlotBusy(i) ? pool_[static_cast<size_t>(slots_[static_cast<size_t>(i)].req)].id : 0;
}
int Pipeline::SlotStep(int i) const {
  return SlotBusy(i) ? slots_[static_cast<size_t>(i)].step : -1;
}
const float* Pipeline::SlotLatent(int i) const {
  return SlotBusy(i) ? slots_[static_cast<size_t>(i)].xt : nullptr;
}

// ---------------------------------------------------------------------------------------------
// Tick

void Pipeline::ReleaseSlot(Slot& s) {
  if (s.req >= 0) pool_[static_cast<size_t>(s.req)].in_use = false;
  s.req = -1;
}

void Pipeline::InitSlot(Slot& s, int pool_index) {
  using pipeline_detail::D;
  StoredRequest& r = pool_[static_cast<size_t>(pool_index)];
  s.req = pool_index;
  s.step = 0;
  s.vneg_valid = false;
  const int T = r.frames;
  const long n = static_cast<long>(T) * D;
  s.sched_len = BuildScheduleInto(cfg_.steps, shift_, r.denoise, s.sched);
  // The realtime app keeps one seed for every slot (spec §4.3), so the initial noise of
  // consecutive slots is identical: generate it once per (seed, T) and copy it after that.
  if (noise_cache_seed_ != r.seed || noise_cache_len_ != n) {
    FillNormal(noise_cache_, n, r.seed, pipeline_detail::kStreamInit);
    noise_cache_seed_ = r.seed;
    noise_cache_len_ = n;
  }
  const float* noise = noise_cache_;
  // Only RCFG "self" needs the initial noise later (as v_neg).
  if (r.has_cfg && r.rcfg == RcfgMode::kSelf)
    std::memcpy(s.noise, noise, static_cast<size_t>(n) * sizeof(float));
  const float* src = r.has_src ? r.src : (r.has_mask ? r.mask_orig : nullptr);
  const float t0 = s.sched[0];
  if (r.init_noise.c.set() && src != nullptr) {
    const Curve& c = r.init_noise.c;
    for (int f = 0; f < T; ++f) {
      const float cf = c.at(f);
      for (int ch = 0; ch < D; ++ch) {
        const long i = pipeline_detail::Idx(f, ch);
        s.xt[i] = cf * noise[i] + (1.f - cf) * src[i];
      }
    }
  } else if (src != nullptr && r.denoise < 1.f) {
    for (long i = 0; i < n; ++i) s.xt[i] = t0 * noise[i] + (1.f - t0) * src[i];
  } else {
    std::memcpy(s.xt, noise, static_cast<size_t>(n) * sizeof(float));
  }
  if (r.has_cfg) std::memset(s.apg, 0, static_cast<size_t>(n) * sizeof(float));
  if (r.has_mask) {
    if (r.has_mask_noise) {
      s.mask_noise_use = r.mask_noise;
    } else {
      FillNormal(s.mask_noise, n, r.seed, pipeline_detail::kStreamMask);
      s.mask_noise_use = s.mask_noise;
    }
  } else {
    s.mask_noise_use = nullptr;
  }
}

TickResult Pipeline::Tick() {
  TickResult res;
  // Check the channel gain against the T that will run, before changing anything.
  if (gain_frames_ > 1) {
    const int target =
        queue_len_ > 0
            ? pool_[static_cast<size_t>(queue_[static_cast<size_t>(queue_len_ - 1)])].frames
            : -1;
    auto check = [&](int T) {
      if (gain_frames_ != T)
        Fail(Status::kInvalidArgument, "pipeline: channel gain has %d frames, latent T=%d",
             gain_frames_, T);
    };
    if (target > 0) check(target);
    for (int i = 0; i < cfg_.max_depth; ++i) {
      const Slot& s = slots_[static_cast<size_t>(i)];
      if (s.req < 0) continue;
      const int T = pool_[static_cast<size_t>(s.req)].frames;
      if (target < 0 || T == target) check(T);
    }
  }

  // 1. T-coherence: the newest queued request decides T.
  if (queue_len_ > 0) {
    const int target =
        pool_[static_cast<size_t>(queue_[static_cast<size_t>(queue_len_ - 1)])].frames;
    for (int qi = queue_len_ - 1; qi >= 0; --qi) {
      if (pool_[static_cast<size_t>(queue_[static_cast<size_t>(qi)])].frames != target)
        DropQueued(qi);
    }
    for (int i = 0; i < cfg_.max_depth; ++i) {
      Slot& s = slots_[static_cast<size_t>(i)];
      if (s.req >= 0 && pool_[static_cast<size_t>(s.req)].frames != target) ReleaseSlot(s);
    }
  }

  // 2. Emit the first finished slot (index order), at most one. Slots beyond depth_ are
  // draining after a shrink (SetDepth): they emit like the others.
  for (int i = 0; i < cfg_.max_depth; ++i) {
    Slot& s = slots_[static_cast<size_t>(i)];
    if (s.req < 0 || s.step < s.sched_len - 1) continue;
    const StoredRequest& r = pool_[static_cast<size_t>(s.req)];
    // Hand the latent over instead of copying it: the slot takes the previous emit buffer,
    // which its next InitSlot overwrites.
    std::swap(emit_, s.xt);
    res.emitted = true;
    res.id = r.id;
    res.frames = r.frames;
    res.latent = emit_;
    ReleaseSlot(s);
    break;
  }

  // 3. Fill empty slots below depth_ from the queue (oldest first).
  for (int i = 0; i < depth_ && queue_len_ > 0; ++i) {
    Slot& s = slots_[static_cast<size_t>(i)];
    if (s.req >= 0) continue;
    const int pi = queue_[0];
    for (int k = 0; k + 1 < queue_len_; ++k)
      queue_[static_cast<size_t>(k)] = queue_[static_cast<size_t>(k + 1)];
    --queue_len_;
    InitSlot(s, pi);
  }

  // 4. Active slots, in decoder-batch order. A slot keeps its place from the last tick; a
  // leaving slot's place goes to the last one in the order and newcomers join at the end, so
  // most batch rows keep their request and BuildBatch need not copy their conditioning and
  // context again (rows are independent: their order does not change any result).
  bool active[kMaxDepth] = {};
  bool placed[kMaxDepth] = {};
  for (int i = 0; i < cfg_.max_depth; ++i) {
    const Slot& s = slots_[static_cast<size_t>(i)];
    active[i] = s.req >= 0 && s.step < s.sched_len - 1;
  }
  int n = num_active_;
  for (int p = 0; p < n;) {
    const int i = active_[static_cast<size_t>(p)];
    if (active[i]) {
      placed[i] = true;
      ++p;
    } else {
      active_[static_cast<size_t>(p)] = active_[static_cast<size_t>(--n)];
    }
  }
  for (int i = 0; i < cfg_.max_depth; ++i)
    if (active[i] && !placed[i]) active_[static_cast<size_t>(n++)] = i;
  num_active_ = n;
  res.active = num_active_;
  if (num_active_ == 0) return res;

  // 5. One step for every active slot.
  RunStep(res);
  ++ticks_;
  return res;
}

void Pipeline::PrepareSlot(Slot& s) {
  using pipeline_detail::D;
  const StoredRequest& r = pool_[static_cast<size_t>(s.req)];
  const int T = r.frames;
  s.total = s.sched_len - 1;
  s.t = s.sched[s.step];
  s.tn = s.sched[s.step + 1];
  const double frac = static_cast<double>(s.step) / s.total;

  // Mask pre-blend: xt_m = m⊙xt + (1−m)⊙(t·n_m + (1−t)·orig), m = mask·step_strength.
  if (r.has_mask) {
    s.mask_strength = r.step_fn ? r.step_fn(s.step, s.total) : 1.f;
    for (int f = 0; f < T; ++f) {
      const float m = r.mask.c.at(f) * s.mask_strength;
      for (int c = 0; c < D; ++c) {
        const long i = pipeline_detail::Idx(f, c);
        s.xtm_buf[i] =
            m * s.xt[i] + (1.f - m) * (s.t * s.mask_noise_use[i] + (1.f - s.t) * r.mask_orig[i]);
      }
    }
    s.xtm = s.xtm_buf;
  } else {
    s.mask_strength = 1.f;
    s.xtm = s.xt;
  }

  // Positive conditions active at this step; none → primary only.
  s.n_pos_sel = 0;
  for (int j = 0; j < r.n_pos; ++j)
    if (pipeline_detail::CondActive(r.pos[j].has_range, r.pos[j].start, r.pos[j].end, frac))
      s.pos_sel[s.n_pos_sel++] = j;
  if (s.n_pos_sel == 0) s.pos_sel[s.n_pos_sel++] = 0;

  // Negative conditions: needs_neg_forward(step), same filter, fallback neg[0].
  s.neg_now = r.has_cfg && r.rcfg != RcfgMode::kSelf &&
              (r.rcfg != RcfgMode::kInitialize || s.step == 0) && r.n_neg > 0;
  s.n_neg_sel = 0;
  if (s.neg_now) {
    for (int j = 0; j < r.n_neg; ++j)
      if (pipeline_detail::CondActive(r.neg[j].has_range, r.neg[j].start, r.neg[j].end, frac))
        s.neg_sel[s.n_neg_sel++] = j;
    if (s.n_neg_sel == 0) s.neg_sel[s.n_neg_sel++] = 0;
  }
}

// Fills the decoder batch for the positive or negative rows (ordered by slot then condition),
// zero-padding T to T_eff and every condition to the call's max L. Returns the row count and
// writes the call's L to *cond_len.
int Pipeline::BuildBatch(bool negative, int* cond_len) {
  using pipeline_detail::D;
  const int T = cur_frames_;
  const int te = T + (T % 2);
  int rows = 0;
  int L = 0;
  for (int a = 0; a < num_active_; ++a) {
    Slot& s = slots_[static_cast<size_t>(active_[static_cast<size_t>(a)])];
    const StoredRequest& r = pool_[static_cast<size_t>(s.req)];
    const int n = negative ? s.n_neg_sel : s.n_pos_sel;
    for (int j = 0; j < n; ++j) {
      const StoredCond& c = negative ? r.neg[s.neg_sel[j]] : r.pos[s.pos_sel[j]];
      L = std::max(L, c.len);
    }
  }
  const size_t enc_row = static_cast<size_t>(L) * kEncoderDim;
  enc_rows_.Restride(L);
  ctx_rows_.Restride(te);
  for (int a = 0; a < num_active_; ++a) {
    Slot& s = slots_[static_cast<size_t>(active_[static_cast<size_t>(a)])];
    const StoredRequest& r = pool_[static_cast<size_t>(s.req)];
    const int n = negative ? s.n_neg_sel : s.n_pos_sel;
    (negative ? s.neg_row0 : s.pos_row0) = rows;
    for (int j = 0; j < n; ++j, ++rows) {
      const StoredCond& c = negative ? r.neg[s.neg_sel[j]] : r.pos[s.pos_sel[j]];
      float* h = b_hidden_ + static_cast<size_t>(rows) * te * D;
      if (gain_frames_ == 0) {
        std::memcpy(h, s.xtm, static_cast<size_t>(T) * D * sizeof(float));
      } else {
        for (int f = 0; f < T; ++f) {
          const float* g = gain_ + (gain_frames_ == 1 ? 0 : pipeline_detail::Idx(f, 0));
          for (int ch = 0; ch < D; ++ch) {
            const long i = pipeline_detail::Idx(f, ch);
            h[i] = s.xtm[i] * g[ch];
          }
        }
      }
      if (te > T)
        std::memset(h + static_cast<size_t>(T) * D, 0,
                    static_cast<size_t>(te - T) * D * sizeof(float));
      b_timestep_[rows] = s.t;
      if (ctx_rows_.Stale(rows, r.ctx_held)) {
        float* ctx = b_ctx_ + static_cast<size_t>(rows) * te * kContextDim;
        std::memcpy(ctx, r.ctx, static_cast<size_t>(T) * kContextDim * sizeof(float));
        batch_bytes_copied_ += static_cast<uint64_t>(te) * kContextDim * sizeof(float);
        if (te > T)
          std::memset(ctx + static_cast<size_t>(T) * kContextDim, 0,
                      static_cast<size_t>(te - T) * kContextDim * sizeof(float));
      }
      if (enc_rows_.Stale(rows, c.enc_held)) {
        float* e = b_enc_ + static_cast<size_t>(rows) * enc_row;
        const size_t used = static_cast<size_t>(c.len) * kEncoderDim;
        std::memcpy(e, c.enc, used * sizeof(float));
        batch_bytes_copied_ += enc_row * sizeof(float);
        if (enc_row > used) std::memset(e + used, 0, (enc_row - used) * sizeof(float));
      }
    }
  }
  *cond_len = L;
  return rows;
}

void Pipeline::RunStep(TickResult& res) {
  cur_frames_ = pool_[static_cast<size_t>(slots_[static_cast<size_t>(active_[0])].req)].frames;
  bool any_neg = false;
  for (int a = 0; a < num_active_; ++a) {
    Slot& s = slots_[static_cast<size_t>(active_[static_cast<size_t>(a)])];
    PrepareSlot(s);
    any_neg = any_neg || s.neg_now;
  }
  const int te = cur_frames_ + (cur_frames_ % 2);
  auto call = [&](bool negative, int* rows_out, int* len_out) {
    int L = 0;
    const int rows = BuildBatch(negative, &L);
    DecoderInputs in;
    in.batch = rows;
    in.frames = te;
    in.cond_len = L;
    in.hidden_states = b_hidden_;
    in.timestep = b_timestep_;
    in.encoder_hidden_states = b_enc_;
    in.context_latents = b_ctx_;
    const auto t0 = std::chrono::steady_clock::now();
    model_.Forward(in, negative ? b_vneg_ : b_vpos_, scratch_ptr_, par_);
    res.model_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    *rows_out = rows;
    *len_out = L;
    ++res.decoder_calls;
  };
  call(false, &res.pos_rows, &res.pos_cond_len);
  if (any_neg) call(true, &res.neg_rows, &res.neg_cond_len);
  par_.For(num_active_, finish_fn_);
}

// Velocity assembly, guidance, integration (§4.5) and DCW for active slot #a.
void Pipeline::FinishSlot(int a) {
  using pipeline_detail::D;
  using pipeline_detail::Idx;
  Slot& s = slots_[static_cast<size_t>(active_[static_cast<size_t>(a)])];
  const StoredRequest& r = pool_[static_cast<size_t>(s.req)];
  const int T = r.frames;
  const long n = static_cast<long>(T) * D;
  const size_t stride = static_cast<size_t>(T + (T % 2)) * D;

  auto assemble = [&](const float* rows, int row0, int count, const StoredCond* conds,
                      const int* sel, float* out) -> const float* {
    if (count == 1) return rows + static_cast<size_t>(row0) * stride;
    const float* vs[kMaxCondsPerSlot];
    Curve ws[kMaxCondsPerSlot];
    for (int j = 0; j < count; ++j) {
      vs[j] = rows + static_cast<size_t>(row0 + j) * stride;
      ws[j] = conds[sel[j]].weight.c;
    }
    BlendVelocities(vs, ws, count, T, out);
    return out;
  };

  const float* vpos = assemble(b_vpos_, s.pos_row0, s.n_pos_sel, r.pos, s.pos_sel, s.vpos);
  const float* vneg = nullptr;
  if (r.has_cfg) {
    if (r.rcfg == RcfgMode::kSelf) {
      vneg = s.noise;
    } else if (s.neg_now) {
      vneg = assemble(b_vneg_, s.neg_row0, s.n_neg_sel, r.neg, s.neg_sel, s.vneg);
      if (r.rcfg == RcfgMode::kInitialize) {
        std::memcpy(s.vneg_cached, vneg, static_cast<size_t>(n) * sizeof(float));
        s.vneg_valid = true;
      }
    } else if (s.vneg_valid) {
      vneg = s.vneg_cached;
    }
  }
  const float* v = vpos;
  if (vneg != nullptr) {
    ApgStep(vpos, vneg, T, Knob(SharedCurve::kGuidance, r.guidance.c, T),
            Knob(SharedCurve::kApgMomentum, r.momentum.c, T), s.apg, s.v);
    CfgRescale(s.v, vpos, T, Knob(SharedCurve::kCfgRescale, r.rescale.c, T));
    v = s.v;
  }

  // Integration.
  const Curve& vs = Knob(SharedCurve::kVelocityScale, r.vscale.c, T);
  const Curve& onc = Knob(SharedCurve::kOdeNoise, r.onc.c, T);
  const Curve& sdc = Knob(SharedCurve::kSdeDenoise, r.sdc.c, T);
  const Curve& strength = Knob(SharedCurve::kX0TargetStrength, r.x0_strength.c, T);
  const float t = s.t;
  const float tn = s.tn;
  const int step = s.step;
  const int total = s.total;
  const bool sde_curve = sdc.set() && r.has_src;
  const bool use_sde = sde_curve || cfg_.sde;
  const bool x0_active = strength.any_nonzero();
  const bool scalar_x0 =
      r.has_x0t && x0_active && !r.x0_curve.c.set() && step >= total / 2 && t > 0.f;
  const bool curve_x0 = r.has_x0t && r.x0_curve.c.set();
  const bool complex = r.has_mask || r.n_pos > 1 || r.pos[0].weight.c.set() || r.pos[0].has_range ||
                       curve_x0 || r.has_cfg;
  const bool noise_on = onc.any_nonzero();  // ε only matters where onc ≠ 0 (counter RNG: no state)
  const uint64_t stream = pipeline_detail::kStreamStepBase + static_cast<uint64_t>(step);
  const float* xtm = s.xtm;
  float* xt = s.xt;
  float* den = s.den;
  const bool fast = !(complex || scalar_x0 || use_sde || tn <= 0.f);

  // The common streaming step (fast path, haar DCW closed form, no ODE noise) in one pass per
  // pair of frames, without storing the denoised estimate: the same arithmetic as the
  // general code below (integrate every frame, then ApplyDcw), in cache.
  HaarScalers haar;
  if (fast && !noise_on && PlanHaarClosedForm(dcw_, t, &haar)) {
    const float dt = tn - t;
    const int bands = (T + 1) / 2;
    for (int k = 0; k < bands; ++k) {
      const float sl = haar.sl(k, bands);
      const float sh = haar.sh(k, bands);
      const int fa = 2 * k;
      const long a = Idx(fa, 0);
      const float vsa = vs.at_or(fa, 1.f);
      if (fa + 1 == T) {  // odd T: a band of one frame
        for (int c = 0; c < D; ++c) {
          const float x = xtm[a + c];
          const float y = x - v[a + c] * t;
          const float xn = x + dt * (v[a + c] * vsa);
          const float d = xn - y;
          xt[a + c] = xn + (sl * d + sh * d) * 0.5f;
        }
        break;
      }
      const long b = a + D;
      const float vsb = vs.at_or(fa + 1, 1.f);
      DM_INDEPENDENT_ITERATIONS
      for (int c = 0; c < D; ++c) {
        const float xa = xtm[a + c];
        const float xb = xtm[b + c];
        const float ya = xa - v[a + c] * t;
        const float yb = xb - v[b + c] * t;
        const float na = xa + dt * (v[a + c] * vsa);
        const float nb = xb + dt * (v[b + c] * vsb);
        const float da = na - ya;
        const float db = nb - yb;
        const float lo = sl * (da + db);
        const float hi = sh * (da - db);
        xt[a + c] = na + (lo + hi) * 0.5f;
        xt[b + c] = nb + (lo - hi) * 0.5f;
      }
    }
    ++s.step;
    return;
  }

  if (fast) {
    const float dt = tn - t;
    for (int f = 0; f < T; ++f) {
      const float vsf = vs.at_or(f, 1.f);
      const float on = noise_on ? onc.at(f) * tn : 0.f;
      const long base = Idx(f, 0);
      const float* xm = xtm + base;
      const float* vf = v + base;
      float* df = den + base;
      float* xf = xt + base;  // may be xm itself (no latent mask): same index only
      DM_INDEPENDENT_ITERATIONS
      for (int c = 0; c < D; ++c) {
        const float x = xm[c];
        df[c] = x - vf[c] * t;
        xf[c] = x + dt * (vf[c] * vsf);
      }
      if (on != 0.f) {  // ODE noise injection: its own loop, so the one above vectorizes
        for (int c = 0; c < D; ++c)
          xf[c] += CounterNormal(r.seed, stream, static_cast<uint64_t>(base + c)) * on;
      }
    }
  } else {
    float gamma = 0.f;
    if (curve_x0) {
      const float p = static_cast<float>(step) / static_cast<float>(std::max(total - 1, 1));
      gamma = std::max(0.f, p - r.x0_gate) / std::max(1.f - r.x0_gate, 1e-6f);
    }
    // Per frame: the blends that apply to this slot and step are chosen once, each in its own
    // loop over the channels (vectorizable; the same per-element arithmetic as one fused loop).
    float x0[D];
    for (int f = 0; f < T; ++f) {
      const float vsf = vs.at_or(f, 1.f);
      const long base = Idx(f, 0);
      const float* xm = xtm + base;
      const float* vf = v + base;
      float* df = den + base;
      float* xf = xt + base;  // may be xm itself (no latent mask): same index only
      const float* x0t = r.x0t + base;
      const float* src = r.src + base;
      DM_INDEPENDENT_ITERATIONS
      for (int c = 0; c < D; ++c) {
        const float x = xm[c];
        df[c] = x - vf[c] * t;
        x0[c] = x - (vf[c] * vsf) * t;
      }
      if (r.has_mask) {
        const float m = r.mask.c.at(f) * s.mask_strength;
        const float* orig = r.mask_orig + base;
        for (int c = 0; c < D; ++c) x0[c] = m * x0[c] + (1.f - m) * orig[c];
      }
      if (curve_x0) {
        if (gamma > 0.f) {
          const float cc = r.x0_curve.c.at(f) * gamma;
          for (int c = 0; c < D; ++c) x0[c] = (1.f - cc) * x0[c] + cc * x0t[c];
        }
      } else if (scalar_x0) {
        const float st = strength.at(f);
        for (int c = 0; c < D; ++c) x0[c] = (1.f - st) * x0[c] + st * x0t[c];
      }
      const float sd = sde_curve ? sdc.at(f) : 0.f;
      if (tn <= 0.f) {
        if (sde_curve) {
          for (int c = 0; c < D; ++c) xf[c] = sd * x0[c] + (1.f - sd) * src[c];
        } else {
          for (int c = 0; c < D; ++c) xf[c] = x0[c];
        }
      } else if (sde_curve) {
        for (int c = 0; c < D; ++c) {
          const float nz = CounterNormal(r.seed, stream, static_cast<uint64_t>(base + c));
          xf[c] =
              sd * (tn * nz + (1.f - tn) * x0[c]) + (1.f - sd) * (tn * nz + (1.f - tn) * src[c]);
        }
      } else if (use_sde) {
        for (int c = 0; c < D; ++c) {
          const float nz = r.has_mask
                               ? s.mask_noise_use[base + c]
                               : CounterNormal(r.seed, stream, static_cast<uint64_t>(base + c));
          xf[c] = tn * nz + (1.f - tn) * x0[c];
        }
      } else {
        DM_INDEPENDENT_ITERATIONS
        for (int c = 0; c < D; ++c) {
          const float x = xm[c];
          const float vb = (x - x0[c]) / t;
          xf[c] = x + (tn - t) * vb;
        }
        const float on = noise_on ? onc.at(f) * tn : 0.f;
        if (on != 0.f) {
          for (int c = 0; c < D; ++c)
            xf[c] += CounterNormal(r.seed, stream, static_cast<uint64_t>(base + c)) * on;
        }
      }
    }
  }
  ApplyDcw(dcw_, t, xt, den, T);
  ++s.step;
}

// ---------------------------------------------------------------------------------------------

uint64_t Pipeline::Generate(const SlotRequest& req, float* out) {
  if (queue_len_ > 0) Fail(Status::kState, "pipeline: Generate needs an empty queue");
  for (const Slot& s : slots_)
    if (s.req >= 0) Fail(Status::kState, "pipeline: Generate needs an idle pipeline");
  struct DepthGuard {
    Pipeline& p;
    int saved;
    ~DepthGuard() { p.depth_ = saved; }
  } guard{*this, depth_};
  depth_ = 1;
  const uint64_t id = Submit(req);
  for (int k = 0; k < cfg_.steps + 2; ++k) {
    TickResult r = Tick();
    if (r.emitted) {
      std::memcpy(out, r.latent, static_cast<size_t>(r.frames) * kLatentDim * sizeof(float));
      return id;
    }
  }
  Fail(Status::kInternal, "pipeline: Generate did not finish in %d ticks", cfg_.steps + 2);
}

}  // namespace pipe
}  // namespace dm

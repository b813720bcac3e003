// Engines through the C API: what LoadEngine refuses, and in which order it checks; the
// decoder's I/O dtypes (fp32 and DEMON's bf16 "mixed" layout) through bindings, the
// streaming seam and a pipeline; symbolic dimensions; reading an I/O table without loading.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "capi/handles.h"
#include "core/bf16.h"
#include "core/constants.h"
#include "core/memory.h"
#include "core/rng.h"
#include "demon/demon.h"
#include "engine/engine_file.h"
#include "pipeline/pipeline.h"

namespace {

// Options for loading a reference engine file; `path` must outlive them.
dm_engine_options RefOptions(const std::string& path, const char* component, const char* owner) {
  dm_engine_options o{};
  o.path = path.c_str();
  o.component = component;
  o.backend = "cpu-ref";
  o.backend_version = "cpu-ref-1";
  o.owner = owner;
  return o;
}

class EngineLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(dm_faults_create("", &faults_, &err_), DM_OK) << err_.msg;
    dm_device_options o{};
    o.kind = DM_DEVICE_HOST;
    o.capacity_bytes = 1ull << 30;
    o.faults = faults_;
    ASSERT_EQ(dm_device_create(&o, &dev_, &err_), DM_OK) << err_.msg;
    path_ = ::testing::TempDir() + "engine_test_vae_encode.engine";
    dm_reference_options r{};
    r.component = "vae_encode";
    r.seed = 1;
    r.duration_s = 1;
    ASSERT_EQ(dm_reference_engine_write(&r, path_.c_str(), &err_), DM_OK) << err_.msg;
  }
  void TearDown() override {
    dm_ledger_totals t{};
    ASSERT_EQ(dm_ledger_totals_get(dev_, &t, &err_), DM_OK);
    EXPECT_EQ(t.used_bytes, 0u) << "a refused load left memory behind";
    EXPECT_EQ(t.live_handles, 0) << "a refused load left a handle behind";
    dm_device_free(&dev_);
    dm_faults_free(&faults_);
    std::remove(path_.c_str());
  }
  dm_engine_options Options() const { return RefOptions(path_, "vae_encode", "model:test"); }

  dm_faults* faults_ = nullptr;
  dm_device* dev_ = nullptr;
  dm_error err_{};
  std::string path_;
};

TEST_F(EngineLoad, ReferenceEngineLoads) {
  dm_engine_options o = Options();
  dm_engine* e = nullptr;
  ASSERT_EQ(dm_engine_load(dev_, &o, &e, &err_), DM_OK) << err_.msg;
  EXPECT_GT(dm_engine_io_count(e), 0);
  EXPECT_EQ(dm_faults_hits(faults_, "model.load.vae_encode"), 1);
  dm_engine_free(&e);
}

// No build has a TensorRT backend (engine.h, "The TensorRT seam"): the refusal says so and
// names no build switch, since none would help.
TEST_F(EngineLoad, TensorRTIsUnsupportedAndNamesNoBuildSwitch) {
  dm_engine_options o = Options();
  o.backend = "tensorrt";
  dm_engine* e = nullptr;
  EXPECT_EQ(dm_engine_load(dev_, &o, &e, &err_), DM_ERR_UNSUPPORTED);
  EXPECT_EQ(e, nullptr);
  EXPECT_NE(std::strstr(err_.msg, "no TensorRT backend"), nullptr) << err_.msg;
  EXPECT_NE(std::strstr(err_.msg, path_.c_str()), nullptr) << "names the file: " << err_.msg;
  EXPECT_EQ(std::strstr(err_.msg, "-tags"), nullptr) << err_.msg;
  EXPECT_EQ(std::strstr(err_.msg, "DEMON_WITH_TENSORRT"), nullptr) << err_.msg;
}

// The component is checked before model.load.<component> is hit: with a registry
// attached, an unknown component used to surface as NOT_FOUND "unknown fault point
// model.load.x". Nothing is read, allocated or counted.
TEST_F(EngineLoad, UnknownComponentIsAComponentErrorBeforeTheFaultPoint) {
  ASSERT_EQ(dm_faults_arm(faults_, "model.load.vae_encode=error", &err_), DM_OK) << err_.msg;
  std::vector<int64_t> before;
  for (int i = 0; i < dm_faults_point_count(); ++i) {
    before.push_back(dm_faults_hits(faults_, dm_faults_point_name(i)));
  }
  dm_engine_options o = Options();
  o.component = "lora";
  dm_engine* e = nullptr;
  EXPECT_EQ(dm_engine_load(dev_, &o, &e, &err_), DM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(e, nullptr);
  EXPECT_NE(std::strstr(err_.msg, "unknown component lora"), nullptr) << err_.msg;
  EXPECT_EQ(std::strstr(err_.msg, "fault point"), nullptr) << err_.msg;
  for (int i = 0; i < dm_faults_point_count(); ++i) {
    EXPECT_EQ(dm_faults_hits(faults_, dm_faults_point_name(i)), before[static_cast<size_t>(i)])
        << dm_faults_point_name(i) << " was hit";
  }
  // A known component still reaches its (armed) point first.
  o.component = "vae_encode";
  EXPECT_EQ(dm_engine_load(dev_, &o, &e, &err_), DM_ERR_FAULT_INJECTED);
  EXPECT_NE(std::strstr(err_.msg, "model.load.vae_encode"), nullptr) << err_.msg;
}

// ---------------------------------------------------------------------------------------
// The decoder's I/O dtypes (spec/engine.md §2.2, §7.1).

constexpr int D = dm::kLatentDim;

std::vector<float> Randn(size_t n, uint64_t stream) {
  std::vector<float> v(n);
  dm::FillNormal(v.data(), static_cast<long>(n), 20260531, stream);
  return v;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  dm::Bf16FromFloats(v.data(), v.size(), out.data());
  return out;
}

// One decoder call's inputs, fp32.
struct DecoderCall {
  int B, T, L;
  std::vector<float> hs, ts, enc, ctx;
  DecoderCall(int batch, int frames, int cond_len)
      : B(batch),
        T(frames),
        L(cond_len),
        hs(Randn(static_cast<size_t>(batch) * frames * D, 1)),
        ts(static_cast<size_t>(batch)),
        enc(Randn(static_cast<size_t>(batch) * cond_len * dm::kEncoderDim, 2)),
        ctx(Randn(static_cast<size_t>(batch) * frames * dm::kContextDim, 3)) {
    for (int b = 0; b < batch; ++b)
      ts[static_cast<size_t>(b)] = 0.3f + 0.2f * static_cast<float>(b);
  }
  size_t VelocityElements() const { return static_cast<size_t>(B) * T * D; }
};

class DecoderIo : public ::testing::Test {
 protected:
  void SetUp() override {
    dm_device_options o{};
    o.kind = DM_DEVICE_HOST;
    o.capacity_bytes = 4ull << 30;
    ASSERT_EQ(dm_device_create(&o, &dev_, &err_), DM_OK) << err_.msg;
  }
  void TearDown() override {
    for (dm_buffer*& b : buffers_) dm_buffer_free(&b);
    for (dm_context*& c : contexts_) dm_context_free(&c);
    for (dm_engine*& e : engines_) dm_engine_free(&e);
    dm_ledger_totals t{};
    ASSERT_EQ(dm_ledger_totals_get(dev_, &t, &err_), DM_OK);
    EXPECT_EQ(t.used_bytes, 0u);
    EXPECT_EQ(t.live_handles, 0);
    dm_device_free(&dev_);
    for (const std::string& p : paths_) std::remove(p.c_str());
  }

  std::string Write(const char* variant, const char* precision) {
    std::string path = ::testing::TempDir() + "engine_test_decoder_" + variant + "_" +
                       (precision ? precision : "null") + ".engine";
    dm_reference_options r{};
    r.component = "decoder";
    r.variant = variant;
    r.seed = 5;
    r.duration_s = 10;
    r.io_precision = precision;
    EXPECT_EQ(dm_reference_engine_write(&r, path.c_str(), &err_), DM_OK) << err_.msg;
    paths_.push_back(path);
    return path;
  }
  static dm_engine_options Options(const std::string& path) {
    return RefOptions(path, "decoder", "model:decoder");
  }
  dm_engine* Load(const char* variant, const char* precision) {
    const std::string path = Write(variant, precision);
    dm_engine_options o = Options(path);
    dm_engine* e = nullptr;
    EXPECT_EQ(dm_engine_load(dev_, &o, &e, &err_), DM_OK) << err_.msg;
    if (e != nullptr) engines_.push_back(e);
    return e;
  }
  dm_context* Context(dm_engine* e) {
    dm_context* c = nullptr;
    EXPECT_EQ(dm_context_create(e, "session:t", &c, &err_), DM_OK) << err_.msg;
    if (c != nullptr) contexts_.push_back(c);
    return c;
  }
  dm_buffer* Buffer(const void* data, size_t bytes) {
    dm_buffer* b = nullptr;
    EXPECT_EQ(dm_buffer_alloc(dev_, bytes, "test:io", &b, &err_), DM_OK) << err_.msg;
    if (b == nullptr) return nullptr;
    buffers_.push_back(b);
    if (data != nullptr) EXPECT_EQ(dm_buffer_write(b, 0, data, bytes, &err_), DM_OK) << err_.msg;
    return b;
  }
  template <typename T>
  dm_buffer* Buffer(const std::vector<T>& v) {
    return Buffer(v.data(), v.size() * sizeof(T));
  }
  int SetShapes(dm_context* c, const DecoderCall& in, int ctx_frames = 0) {
    const int64_t hs[] = {in.B, in.T, D};
    const int64_t ts[] = {in.B};
    const int64_t enc[] = {in.B, in.L, dm::kEncoderDim};
    const int64_t ctx[] = {in.B, ctx_frames > 0 ? ctx_frames : in.T, dm::kContextDim};
    int rc = dm_context_set_shape(c, "hidden_states", hs, 3, &err_);
    if (rc == DM_OK) rc = dm_context_set_shape(c, "timestep", ts, 1, &err_);
    if (rc == DM_OK) rc = dm_context_set_shape(c, "encoder_hidden_states", enc, 3, &err_);
    if (rc == DM_OK) rc = dm_context_set_shape(c, "context_latents", ctx, 3, &err_);
    return rc;
  }
  // Runs the call through a context, binding each tensor in the engine's declared dtype,
  // and returns the velocity as floats.
  std::vector<float> Run(dm_engine* e, const DecoderCall& in) {
    dm_context* c = Context(e);
    EXPECT_EQ(SetShapes(c, in), DM_OK) << err_.msg;
    const bool bf16 = Dtype(e, "velocity") == DM_DTYPE_BFLOAT16;
    auto bind = [&](const char* name, const std::vector<float>& v) {
      dm_buffer* b = Dtype(e, name) == DM_DTYPE_BFLOAT16 ? Buffer(ToBf16(v)) : Buffer(v);
      EXPECT_EQ(dm_context_bind(c, name, b, &err_), DM_OK) << err_.msg;
    };
    bind("hidden_states", in.hs);
    bind("timestep", in.ts);
    bind("encoder_hidden_states", in.enc);
    bind("context_latents", in.ctx);
    const size_t n = in.VelocityElements();
    dm_buffer* vel = Buffer(nullptr, n * (bf16 ? 2 : 4));
    EXPECT_EQ(dm_context_bind(c, "velocity", vel, &err_), DM_OK) << err_.msg;
    EXPECT_EQ(dm_context_execute(c, &err_), DM_OK) << err_.msg;
    std::vector<float> out(n);
    if (bf16) {
      std::vector<uint16_t> raw(n);
      EXPECT_EQ(dm_buffer_read(vel, 0, raw.data(), n * 2, &err_), DM_OK);
      dm::FloatsFromBf16(raw.data(), n, out.data());
    } else {
      EXPECT_EQ(dm_buffer_read(vel, 0, out.data(), n * 4, &err_), DM_OK);
    }
    return out;
  }
  int Dtype(dm_engine* e, const char* name) {
    for (int i = 0; i < dm_engine_io_count(e); ++i) {
      dm_tensor_desc d{};
      EXPECT_EQ(dm_engine_io(e, i, &d, &err_), DM_OK) << err_.msg;
      if (std::strcmp(d.name, name) == 0) return d.dtype;
    }
    ADD_FAILURE() << "no tensor " << name;
    return -1;
  }

  dm_device* dev_ = nullptr;
  dm_error err_{};
  std::vector<std::string> paths_;
  std::vector<dm_engine*> engines_;
  std::vector<dm_context*> contexts_;
  std::vector<dm_buffer*> buffers_;
};

double MaxAbs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

TEST_F(DecoderIo, MixedDeclaresDemons2BLayoutAndFp32DeclaresFloat32) {
  struct Want {
    const char* name;
    int mixed;
  };
  const Want want[] = {{"hidden_states", DM_DTYPE_BFLOAT16},
                       {"timestep", DM_DTYPE_FLOAT32},
                       {"encoder_hidden_states", DM_DTYPE_BFLOAT16},
                       {"context_latents", DM_DTYPE_BFLOAT16},
                       {"velocity", DM_DTYPE_BFLOAT16}};
  dm_engine* mixed = Load("oracle", "mixed");
  dm_engine* fp32 = Load("oracle", nullptr);
  ASSERT_NE(mixed, nullptr);
  ASSERT_NE(fp32, nullptr);
  for (const Want& w : want) {
    EXPECT_EQ(Dtype(mixed, w.name), w.mixed) << w.name;
    EXPECT_EQ(Dtype(fp32, w.name), DM_DTYPE_FLOAT32) << w.name;
  }
  // bf16 I/O needs fp32 staging for the math: a bigger context than the fp32 engine's.
  EXPECT_GT(dm_engine_context_bytes(mixed), dm_engine_context_bytes(fp32));
}

// Run converts bound bf16 buffers; the streaming seam rounds fp32 arrays through bf16. For
// the same values they must agree bit for bit, or a stream would not compute what the engine
// does.
TEST_F(DecoderIo, Bf16RunEqualsTheStreamingSeamBitForBit) {
  dm_engine* e = Load("tiny-dit", "mixed");
  ASSERT_NE(e, nullptr);
  const DecoderCall in(2, 126, 40);
  const std::vector<float> run = Run(e, in);

  const dm::VelocityModel* seam = e->engine->velocity_model();
  ASSERT_NE(seam, nullptr);
  dm::HostAllocator host;
  auto scratch = host.Allocate(seam->ScratchBytes(in.B, in.T, in.L), "scratch");
  dm::DecoderInputs di;
  di.batch = in.B;
  di.frames = in.T;
  di.cond_len = in.L;
  di.hidden_states = in.hs.data();
  di.timestep = in.ts.data();
  di.encoder_hidden_states = in.enc.data();
  di.context_latents = in.ctx.data();
  std::vector<float> seamed(in.VelocityElements());
  seam->Forward(di, seamed.data(), scratch->data(), *e->engine->parallel());
  ASSERT_EQ(run.size(), seamed.size());
  EXPECT_EQ(0, std::memcmp(run.data(), seamed.data(), run.size() * sizeof(float)))
      << "max |run - seam| = " << MaxAbsDiff(run, seamed);
  for (float v : seamed) ASSERT_EQ(v, dm::RoundBf16(v)) << "the seam's velocity is bf16-valued";
}

// Same weights (same seed), fp32 vs mixed I/O: the outputs differ (the conversion happens)
// by no more than bf16 rounding of the inputs and the output explains.
TEST_F(DecoderIo, Bf16OutputMatchesFp32WithinBf16Tolerance) {
  for (const char* variant : {"oracle", "tiny-dit"}) {
    SCOPED_TRACE(variant);
    dm_engine* fp32 = Load(variant, "fp32");
    dm_engine* mixed = Load(variant, "mixed");
    ASSERT_NE(fp32, nullptr);
    ASSERT_NE(mixed, nullptr);
    const DecoderCall in(2, 126, 40);
    const std::vector<float> a = Run(fp32, in);
    const std::vector<float> b = Run(mixed, in);
    const double scale = MaxAbs(a);
    ASSERT_GT(scale, 0.0);
    const double diff = MaxAbsDiff(a, b);
    EXPECT_GT(diff, scale / 4096.0) << "bf16 I/O must round (fp32 noise is far smaller)";
    // bf16 keeps 8 significant bits (relative step 2^-8): the inputs and the output are
    // each rounded once, so a few steps of the largest magnitude bound the difference.
    EXPECT_LT(diff, 4.0 * scale / 256.0) << "scale " << scale;
  }
}

// What the dtype means for a binding: a buffer sized for the wrong element type is refused by
// size when it is too small. A caller that assumed the mixed engine is bf16 throughout binds a
// 2-byte-per-element timestep, which the fp32 timestep refuses; a caller that sized the bf16
// hidden_states for its element count in bytes is refused too.
TEST_F(DecoderIo, BindingTooSmallForTheDeclaredDtypeIsRefused) {
  dm_engine* e = Load("oracle", "mixed");
  ASSERT_NE(e, nullptr);
  const DecoderCall in(2, 126, 32);
  dm_context* c = Context(e);
  ASSERT_EQ(SetShapes(c, in), DM_OK) << err_.msg;
  const size_t hs = in.hs.size(), enc = in.enc.size(), ctx = in.ctx.size();
  struct Bound {
    const char* name;
    size_t bytes;
  } ok[] = {{"hidden_states", hs * 2},
            {"timestep", in.ts.size() * 4},
            {"encoder_hidden_states", enc * 2},
            {"context_latents", ctx * 2},
            {"velocity", hs * 2}};
  for (const Bound& b : ok) {
    ASSERT_EQ(dm_context_bind(c, b.name, Buffer(nullptr, b.bytes), &err_), DM_OK) << err_.msg;
  }
  ASSERT_EQ(dm_context_execute(c, &err_), DM_OK) << err_.msg;

  ASSERT_EQ(dm_context_bind(c, "timestep", Buffer(nullptr, in.ts.size() * 2), &err_), DM_OK);
  EXPECT_EQ(dm_context_execute(c, &err_), DM_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(err_.msg, "tensor timestep needs 8 bytes, bound buffer has 4");
  ASSERT_EQ(dm_context_bind(c, "timestep", Buffer(nullptr, in.ts.size() * 4), &err_), DM_OK);

  ASSERT_EQ(dm_context_bind(c, "hidden_states", Buffer(nullptr, hs), &err_), DM_OK);
  EXPECT_EQ(dm_context_execute(c, &err_), DM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(err_.msg, "tensor hidden_states needs 32256 bytes, bound buffer has 16128"),
            nullptr)
      << err_.msg;
}

// A ring-buffer pipeline driving a bf16 oracle decoder through its seam still lands on the
// oracle's target, within bf16 rounding; the fp32 decoder lands on it exactly (control).
TEST_F(DecoderIo, PipelineOnABf16OracleDecoderConverges) {
  constexpr int T = 130, L = 40;
  const std::vector<float> ctx = Randn(static_cast<size_t>(T) * dm::kContextDim, 7);
  const std::vector<float> enc = Randn(static_cast<size_t>(L) * dm::kEncoderDim, 8);
  std::vector<float> C(static_cast<size_t>(T) * D);
  for (int c = 0; c < D; ++c) {
    double s = 0;
    for (int l = 0; l < L; ++l) s += enc[static_cast<size_t>(l) * dm::kEncoderDim + c];
    for (int t = 0; t < T; ++t) {
      C[static_cast<size_t>(t) * D + c] =
          ctx[static_cast<size_t>(t) * dm::kContextDim + c] + 0.1f * static_cast<float>(s / L);
    }
  }
  auto generate = [&](dm_engine* e) {
    dm::HostAllocator alloc;
    dm::pipe::PipelineConfig cfg;
    cfg.max_depth = 1;
    cfg.depth = 1;
    cfg.max_frames = T;
    cfg.max_cond_len = L;
    cfg.max_pos_conds = 1;
    cfg.max_neg_conds = 0;
    dm::pipe::Pipeline p(alloc, *e->engine->velocity_model(), *e->engine->parallel(), cfg);
    dm::pipe::SlotRequest r;
    r.frames = T;
    r.context_latents = ctx.data();
    r.primary.enc = enc.data();
    r.primary.len = L;
    r.seed = 3;
    std::vector<float> out(C.size());
    p.Generate(r, out.data());
    return out;
  };
  dm_engine* fp32 = Load("oracle", "fp32");
  dm_engine* mixed = Load("oracle", "mixed");
  ASSERT_NE(fp32, nullptr);
  ASSERT_NE(mixed, nullptr);
  EXPECT_LT(MaxAbsDiff(generate(fp32), C), 2e-5);
  const double err = MaxAbsDiff(generate(mixed), C);
  // The fp32 control is within 2e-5; bf16 I/O moves the result by a visible part of a bf16
  // step (2^-8 relative), and by no more than a few steps.
  EXPECT_GT(err, MaxAbs(C) / 4096.0) << "the bf16 decoder rounds";
  EXPECT_LT(err, 4.0 * MaxAbs(C) / 256.0) << "within a few bf16 steps of the target";
}

// Input dimensions that share a symbol must agree; the error names both tensors.
TEST_F(DecoderIo, UnequalDimensionsOfOneSymbolAreRefused) {
  dm_engine* e = Load("oracle", "fp32");
  ASSERT_NE(e, nullptr);
  dm_tensor_desc d{};
  ASSERT_EQ(dm_engine_io(e, 0, &d, &err_), DM_OK);
  EXPECT_STREQ(d.name, "hidden_states");
  EXPECT_STREQ(d.symbol[0], "B");
  EXPECT_STREQ(d.symbol[1], "T");
  EXPECT_STREQ(d.symbol[2], "");
  ASSERT_EQ(dm_engine_io(e, 2, &d, &err_), DM_OK);
  EXPECT_STREQ(d.symbol[1], "L");

  const DecoderCall in(2, 126, 32);
  dm_context* c = Context(e);
  ASSERT_EQ(SetShapes(c, in, 128), DM_OK) << err_.msg;
  EXPECT_EQ(dm_context_execute(c, &err_), DM_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(err_.msg,
               "tensor context_latents dim 1 (T) = 128, but tensor hidden_states dim 1 (T) = 126: "
               "dimensions named T must be equal");

  ASSERT_EQ(SetShapes(c, in), DM_OK) << err_.msg;
  const int64_t one[] = {1};
  ASSERT_EQ(dm_context_set_shape(c, "timestep", one, 1, &err_), DM_OK);
  EXPECT_EQ(dm_context_execute(c, &err_), DM_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(err_.msg,
               "tensor timestep dim 0 (B) = 1, but tensor hidden_states dim 0 (B) = 2: dimensions "
               "named B must be equal");
}

// dm_engine_inspect reads the table an engine will have from the header alone: equal to the
// loaded engine's, with no device involved and nothing allocated.
TEST_F(DecoderIo, InspectReadsTheIOTableWithoutLoading) {
  const std::string path = Write("tiny-dit", "mixed");
  dm_engine_options o = Options(path);
  int count = -1;
  ASSERT_EQ(dm_engine_inspect(&o, nullptr, 0, &count, &err_), DM_OK) << err_.msg;
  ASSERT_EQ(count, 5);
  std::vector<dm_tensor_desc> inspected(5);
  ASSERT_EQ(dm_engine_inspect(&o, inspected.data(), 5, &count, &err_), DM_OK) << err_.msg;
  dm_ledger_totals t{};
  ASSERT_EQ(dm_ledger_totals_get(dev_, &t, &err_), DM_OK);
  EXPECT_EQ(t.allocations, 0u);

  dm_engine* e = nullptr;
  ASSERT_EQ(dm_engine_load(dev_, &o, &e, &err_), DM_OK) << err_.msg;
  engines_.push_back(e);
  for (int i = 0; i < count; ++i) {
    dm_tensor_desc loaded{};
    ASSERT_EQ(dm_engine_io(e, i, &loaded, &err_), DM_OK);
    EXPECT_EQ(0, std::memcmp(&loaded, &inspected[static_cast<size_t>(i)], sizeof loaded))
        << loaded.name;
  }

  // Identity is checked like a load's.
  o.component = "vae_decode";
  EXPECT_EQ(dm_engine_inspect(&o, inspected.data(), 5, &count, &err_), DM_ERR_MISMATCH);
  EXPECT_NE(std::strstr(err_.msg, "engine is a decoder, expected a vae_decode"), nullptr)
      << err_.msg;
  o.component = "decoder";
  o.backend_version = "cpu-ref-0";
  EXPECT_EQ(dm_engine_inspect(&o, inspected.data(), 5, &count, &err_), DM_ERR_MISMATCH);
  o.backend_version = "cpu-ref-1";
  o.backend = "tensorrt";
  EXPECT_EQ(dm_engine_inspect(&o, inspected.data(), 5, &count, &err_), DM_ERR_UNSUPPORTED);
}

// The header-only read still catches a file cut short or grown, and an unknown I/O precision.
TEST_F(DecoderIo, InspectRefusesTruncatedFilesAndUnknownPrecisions) {
  const std::string path = Write("oracle", "mixed");
  std::vector<uint8_t> bytes = dm::ReadWholeFile(path);
  dm_engine_options o = Options(path);
  int count = 0;
  dm_tensor_desc out[5];

  dm::WriteWholeFile(path, std::vector<uint8_t>(bytes.begin(), bytes.end() - 3));
  EXPECT_EQ(dm_engine_inspect(&o, out, 5, &count, &err_), DM_ERR_CORRUPT);
  EXPECT_NE(std::strstr(err_.msg, "truncated engine file"), nullptr) << err_.msg;
  EXPECT_NE(std::strstr(err_.msg, path.c_str()), nullptr) << err_.msg;

  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  dm::WriteWholeFile(path, longer);
  EXPECT_EQ(dm_engine_inspect(&o, out, 5, &count, &err_), DM_ERR_CORRUPT);
  EXPECT_NE(std::strstr(err_.msg, "1 trailing bytes"), nullptr) << err_.msg;

  dm::EngineFile f = dm::ParseEngineFile(bytes.data(), bytes.size());
  f.header["io_precision"] = "fp8";
  dm::WriteWholeFile(path, dm::SerializeEngineFile(f));
  EXPECT_EQ(dm_engine_inspect(&o, out, 5, &count, &err_), DM_ERR_CORRUPT);
  EXPECT_NE(std::strstr(err_.msg, "unknown decoder io_precision fp8 (want fp32 or mixed)"), nullptr)
      << err_.msg;
  dm_engine* e = nullptr;
  EXPECT_EQ(dm_engine_load(dev_, &o, &e, &err_), DM_ERR_CORRUPT);
  EXPECT_NE(std::strstr(err_.msg, "unknown decoder io_precision fp8"), nullptr) << err_.msg;
}

TEST_F(DecoderIo, WriterRefusesPrecisionsItCannotBuild) {
  dm_reference_options r{};
  r.component = "decoder";
  r.variant = "oracle";
  r.seed = 1;
  r.duration_s = 10;
  r.io_precision = "fp16";
  const std::string path = ::testing::TempDir() + "engine_test_refused.engine";
  EXPECT_EQ(dm_reference_engine_write(&r, path.c_str(), &err_), DM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(err_.msg, "decoder io_precision fp16 (want fp32 or mixed)"), nullptr)
      << err_.msg;
  r.component = "vae_encode";
  r.io_precision = "mixed";
  EXPECT_EQ(dm_reference_engine_write(&r, path.c_str(), &err_), DM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(err_.msg, "only the decoder has a mixed layout"), nullptr) << err_.msg;
}

}  // namespace

// The cuda device against the FAKE CUDA driver (native/tests/fake_cuda/fake_cuda.c, built
// by CMake as a shared library; its path arrives as DM_FAKE_CUDA_LIBRARY). Everything here
// goes through the C API, exactly as Go calls it: the loader and its errors, the ledger
// against cuMemGetInfo, both out-of-memory paths, the fault points, the copy timing, and a
// CPU reference engine staged through pinned host shadows on a device the CPU cannot
// address (the fake's device pointers fault on any host access).
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "demon/demon.h"

#ifndef DM_FAKE_CUDA_LIBRARY
#error "DM_FAKE_CUDA_LIBRARY must name the fake driver (CMake sets it)"
#endif

namespace {

constexpr uint64_t kGiB = 1ull << 30;

class FakeCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("DEMON_CUDA_LIBRARY", DM_FAKE_CUDA_LIBRARY, 1);
    setenv("DEMON_FAKE_CUDA_TOTAL_BYTES", std::to_string(kGiB).c_str(), 1);
    for (const char* v :
         {"DEMON_FAKE_CUDA_RESERVED_BYTES", "DEMON_FAKE_CUDA_FAIL_ALLOC",
          "DEMON_FAKE_CUDA_FREE_LAG", "DEMON_FAKE_CUDA_NO_DEVICE", "DEMON_FAKE_CUDA_NO_POOLS"}) {
      unsetenv(v);
    }
  }
  void TearDown() override {
    if (dev_ != nullptr) {
      dm_ledger_totals t{};
      ASSERT_EQ(dm_ledger_totals_get(dev_, &t, nullptr), DM_OK);
      EXPECT_EQ(t.used_bytes, 0u) << "ledger back at zero";
      EXPECT_EQ(t.live_handles, 0) << "no live handles";
      dm_ledger_totals s{};
      ASSERT_EQ(dm_device_staging_totals(dev_, &s, nullptr), DM_OK);
      EXPECT_EQ(s.used_bytes, 0u) << "staging back at zero";
      dm_device_free(&dev_);
    }
    dm_faults_free(&faults_);
    EXPECT_EQ(FakeLive(nullptr), 0) << "the fake driver holds no allocation";
    EXPECT_EQ(FakeHazards(), 0) << "no stream-ordering hazard (see fake_cuda.c)";
    unsetenv("DEMON_CUDA_LIBRARY");
  }

  int Create(dm_error* err, int ordinal = 0) {
    dm_device_options o{};
    o.kind = DM_DEVICE_CUDA;
    o.ordinal = ordinal;
    o.faults = faults_;
    return dm_device_create(&o, &dev_, err);
  }

  // Live allocations in the fake driver (its test-only introspection entry point).
  static int FakeLive(unsigned long long* bytes) {
    void* h = dlopen(DM_FAKE_CUDA_LIBRARY, RTLD_NOW | RTLD_NOLOAD);
    if (h == nullptr) return 0;  // never loaded: nothing allocated
    auto fn = reinterpret_cast<int (*)(unsigned long long*)>(dlsym(h, "demon_fake_cuda_live"));
    int n = fn != nullptr ? fn(bytes) : -1;
    dlclose(h);
    return n;
  }

  // Resolves a function of the (loaded) fake driver, or null.
  template <typename Fn>
  static Fn FakeFn(const char* name) {
    void* h = dlopen(DM_FAKE_CUDA_LIBRARY, RTLD_NOW | RTLD_NOLOAD);
    if (h == nullptr) return nullptr;
    Fn fn = reinterpret_cast<Fn>(dlsym(h, name));
    dlclose(h);  // the fake is loaded RTLD_NODELETE by the device: fn stays valid
    return fn;
  }

  // Stream-ordering hazards the fake driver has seen since cuInit (0 if never loaded).
  static long FakeHazards() {
    auto fn = FakeFn<long (*)()>("demon_fake_cuda_hazards");
    return fn != nullptr ? fn() : 0;
  }

  // Stream-ordered calls the fake driver has seen since cuInit.
  static void FakeAsyncCalls(long* allocs, long* frees) {
    *allocs = *frees = -1;
    void* h = dlopen(DM_FAKE_CUDA_LIBRARY, RTLD_NOW | RTLD_NOLOAD);
    if (h == nullptr) return;
    auto fn = reinterpret_cast<void (*)(long*, long*)>(dlsym(h, "demon_fake_cuda_async_calls"));
    if (fn != nullptr) fn(allocs, frees);
    dlclose(h);
  }

  dm_device* dev_ = nullptr;
  dm_faults* faults_ = nullptr;
};

TEST_F(FakeCuda, NoDriverIsAClearCudaError) {
  setenv("DEMON_CUDA_LIBRARY", "/nonexistent/libcuda.so.1", 1);
  dm_error err{};
  EXPECT_EQ(Create(&err), DM_ERR_CUDA);
  EXPECT_EQ(dev_, nullptr);
  EXPECT_NE(std::strstr(err.msg, "no CUDA driver (/nonexistent/libcuda.so.1 not found: "), nullptr)
      << err.msg;
}

TEST_F(FakeCuda, NoDeviceCarriesTheDriverError) {
  setenv("DEMON_FAKE_CUDA_NO_DEVICE", "1", 1);
  dm_error err{};
  EXPECT_EQ(Create(&err), DM_ERR_CUDA);
  EXPECT_NE(std::strstr(err.msg, "cuInit: CUDA_ERROR_NO_DEVICE"), nullptr) << err.msg;
}

TEST_F(FakeCuda, UnknownOrdinal) {
  dm_error err{};
  EXPECT_EQ(Create(&err, 3), DM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(err.msg, "cuda device 3 does not exist"), nullptr) << err.msg;
}

TEST_F(FakeCuda, CapacityIsTheDriverTotal) {
  dm_error err{};
  ASSERT_EQ(Create(&err), DM_OK) << err.msg;
  char buf[256];
  ASSERT_EQ(dm_device_describe(dev_, buf, sizeof buf, &err), DM_OK);
  EXPECT_NE(std::strstr(buf, "cuda:0 FAKE CUDA device"), nullptr) << buf;
  EXPECT_NE(std::strstr(buf, ", uuid GPU-fa4ec0da-0000-4000-8000-000000000001, "), nullptr) << buf;
  dm_ledger_totals t{};
  ASSERT_EQ(dm_ledger_totals_get(dev_, &t, &err), DM_OK);
  EXPECT_EQ(t.capacity_bytes, kGiB);
  uint64_t free = 0, total = 0;
  ASSERT_EQ(dm_device_driver_memory(dev_, &free, &total, &err), DM_OK) << err.msg;
  EXPECT_EQ(total, kGiB);
  EXPECT_EQ(free, kGiB);
  EXPECT_EQ(dm_device_driver_memory(dev_, nullptr, &total, &err), DM_ERR_INVALID_ARGUMENT);
}

TEST_F(FakeCuda, BuffersLedgerAndDriverAgree) {
  dm_error err{};
  ASSERT_EQ(Create(&err), DM_OK) << err.msg;
  const uint64_t sizes[] = {100, 4 << 20, 12345};
  std::vector<dm_buffer*> bufs;
  uint64_t sum = 0;
  for (uint64_t s : sizes) {
    dm_buffer* b = nullptr;
    ASSERT_EQ(dm_buffer_alloc(dev_, s, "test:bufs", &b, &err), DM_OK) << err.msg;
    bufs.push_back(b);
    sum += s;
  }
  dm_ledger_totals t{};
  ASSERT_EQ(dm_ledger_totals_get(dev_, &t, &err), DM_OK);
  EXPECT_EQ(t.used_bytes, sum);
  uint64_t free = 0, total = 0;
  ASSERT_EQ(dm_device_driver_memory(dev_, &free, &total, &err), DM_OK);
  EXPECT_EQ(total - free, sum) << "the driver sees exactly what the ledger admitted";
  unsigned long long fake_bytes = 0;
  EXPECT_EQ(FakeLive(&fake_bytes), 3);
  EXPECT_EQ(fake_bytes, sum);

  // New memory reads back as zeros (the fake fills small allocations with garbage).
  std::vector<uint8_t> back(100, 0xff);
  ASSERT_EQ(dm_buffer_read(bufs[0], 0, back.data(), back.size(), &err), DM_OK) << err.msg;
  for (uint8_t v : back) ASSERT_EQ(v, 0);
  // Round trip through device memory, at an offset.
  std::vector<float> in(1000), out(1000);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i) * 0.5f;
  ASSERT_EQ(dm_buffer_write(bufs[1], 4096, in.data(), in.size() * 4, &err), DM_OK) << err.msg;
  ASSERT_EQ(dm_buffer_read(bufs[1], 4096, out.data(), out.size() * 4, &err), DM_OK) << err.msg;
  EXPECT_EQ(in, out);
  EXPECT_EQ(dm_buffer_write(bufs[0], 50, in.data(), 51, &err), DM_ERR_INVALID_ARGUMENT);

  for (dm_buffer*& b : bufs) dm_buffer_free(&b);
  ASSERT_EQ(dm_device_driver_memory(dev_, &free, &total, &err), DM_OK);
  EXPECT_EQ(free, total);
}

TEST_F(FakeCuda, LedgerRefusesBeforeTheDriverIsAsked) {
  dm_error err{};
  ASSERT_EQ(Create(&err), DM_OK) << err.msg;
  dm_buffer* b = nullptr;
  EXPECT_EQ(dm_buffer_alloc(dev_, 2 * kGiB, "test:big", &b, &err), DM_ERR_OUT_OF_MEMORY);
  EXPECT_NE(std::strstr(err.msg,
                        "requested 2147483648 bytes (2.00 GiB) for test:big, "
                        "1073741824 bytes (1.00 GiB) free"),
            nullptr)
      << err.msg;
  EXPECT_EQ(b, nullptr);
  EXPECT_EQ(FakeLive(nullptr), 0);
}

TEST_F(FakeCuda, DriverRefusalIsOutOfMemoryWithTheDriverName) {
  // Others hold all but 1 MiB: the ledger (capacity = total) admits, the driver refuses.
  setenv("DEMON_FAKE_CUDA_RESERVED_BYTES", std::to_string(kGiB - (1 << 20)).c_str(), 1);
  dm_error err{};
  ASSERT_EQ(Create(&err), DM_OK) << err.msg;
  dm_buffer* b = nullptr;
  EXPECT_EQ(dm_buffer_alloc(dev_, 2 << 20, "test:refused", &b, &err), DM_ERR_OUT_OF_MEMORY);
  EXPECT_NE(std::strstr(err.msg,
                        "cuMemAllocAsync of 2097152 bytes (2.00 MiB) on cuda:0: "
                        "CUDA_ERROR_OUT_OF_MEMORY (out of memory, code 2); the driver "
                        "reports 1048576 bytes (1.00 MiB) free"),
            nullptr)
      << err.msg;
  dm_ledger_totals t{};
  ASSERT_EQ(dm_ledger_totals_get(dev_, &t, &err), DM_OK);
  EXPECT_EQ(t.used_bytes, 0u);
  EXPECT_EQ(t.failed, 1u);
}

// With memory pools, buffers come from cuMemAllocAsync and go back with cuMemFreeAsync: a
// free is only queued, and reading the driver's memory synchronises the queue first, so
// the ledger/driver cross-check stays exact.
TEST_F(FakeCuda, StreamOrderedAllocationWherePoolsExist) {
  dm_error err{};
  ASSERT_EQ(Create(&err), DM_OK) << err.msg;
  char desc[256];
  ASSERT_EQ(dm_device_describe(dev_, desc, sizeof desc, &err), DM_OK);
  EXPECT_NE(std::strstr(desc, "stream-ordered allocation"), nullptr) << desc;
  dm_buffer *a = nullptr, *b = nullptr;
  ASSERT_EQ(dm_buffer_alloc(dev_, 3 << 20, "test:pool", &a, &err), DM_OK) << err.msg;
  ASSERT_EQ(dm_buffer_alloc(dev_, 1000, "test:pool", &b, &err), DM_OK) << err.msg;
  long allocs = 0, frees = 0;
  FakeAsyncCalls(&allocs, &frees);
  EXPECT_EQ(allocs, 2);
  EXPECT_EQ(frees, 0);
  std::vector<uint8_t> back(1000, 0xff);
  ASSERT_EQ(dm_buffer_read(b, 0, back.data(), back.size(), &err), DM_OK) << err.msg;
  for (uint8_t v : back) ASSERT_EQ(v, 0) << "new memory reads as zeros";

  dm_buffer_free(&a);
  FakeAsyncCalls(&allocs, &frees);
  EXPECT_EQ(frees, 1);
  EXPECT_EQ(FakeLive(nullptr), 2) << "the free is queued on the allocation stream";
  uint64_t free = 0, total = 0;
  ASSERT_EQ(dm_device_driver_memory(dev_, &free, &total, &err), DM_OK) << err.msg;
  EXPECT_EQ(total - free, 1000u) << "reading the driver's memory lands the queued frees";
  EXPECT_EQ(FakeLive(nullptr), 1);
  dm_buffer_free(&b);  // still queued when the device goes: its destructor synchronises
}

// The fake's ordering model catches the race this device avoids: legacy-stream work (a
// cuMemsetD8 that may still be running) followed by a cuMemFreeAsync on a non-blocking
// stream is a hazard; on a blocking stream, or after a legacy synchronisation, it is not.
TEST_F(FakeCuda, FakeDriverDetectsLegacyStreamHazards) {
  dm_error err{};
  ASSERT_EQ(Create(&err), DM_OK) << err.msg;  // loads the fake and initialises it
  using Result = int;
  auto retain = FakeFn<Result (*)(void**, int)>("cuDevicePrimaryCtxRetain");
  auto release = FakeFn<Result (*)(int)>("cuDevicePrimaryCtxRelease_v2");
  auto set_current = FakeFn<Result (*)(void*)>("cuCtxSetCurrent");
  auto stream_create = FakeFn<Result (*)(void**, unsigned)>("cuStreamCreate");
  auto stream_destroy = FakeFn<Result (*)(void*)>("cuStreamDestroy_v2");
  auto alloc = FakeFn<Result (*)(unsigned long long*, size_t)>("cuMemAlloc_v2");
  auto memset_legacy =
      FakeFn<Result (*)(unsigned long long, unsigned char, size_t)>("cuMemsetD8_v2");
  auto free_async = FakeFn<Result (*)(unsigned long long, void*)>("cuMemFreeAsync");
  auto ctx_sync = FakeFn<Result (*)()>("cuCtxSynchronize");
  for (void* fn : {(void*)retain, (void*)release, (void*)set_current, (void*)stream_create,
                   (void*)stream_destroy, (void*)alloc, (void*)memset_legacy, (void*)free_async,
                   (void*)ctx_sync}) {
    ASSERT_NE(fn, nullptr);
  }
  void* ctx = nullptr;
  ASSERT_EQ(retain(&ctx, 0), 0);
  ASSERT_EQ(set_current(ctx), 0);
  void *nonblocking = nullptr, *blocking = nullptr;
  ASSERT_EQ(stream_create(&nonblocking, 1), 0);
  ASSERT_EQ(stream_create(&blocking, 0), 0);
  unsigned long long p = 0;
  // Racing: a legacy memset, then a free on a non-blocking stream.
  ASSERT_EQ(alloc(&p, 4096), 0);
  ASSERT_EQ(memset_legacy(p, 0, 4096), 0);
  ASSERT_EQ(free_async(p, nonblocking), 0);
  EXPECT_EQ(FakeHazards(), 1);
  // Ordered: a blocking stream waits for the legacy stream.
  ASSERT_EQ(alloc(&p, 4096), 0);
  ASSERT_EQ(memset_legacy(p, 0, 4096), 0);
  ASSERT_EQ(free_async(p, blocking), 0);
  // Ordered: the legacy stream was synchronised first.
  ASSERT_EQ(alloc(&p, 4096), 0);
  ASSERT_EQ(memset_legacy(p, 0, 4096), 0);
  ASSERT_EQ(ctx_sync(), 0);
  ASSERT_EQ(free_async(p, nonblocking), 0);
  EXPECT_EQ(FakeHazards(), 1);
  ASSERT_EQ(stream_destroy(nonblocking), 0);
  ASSERT_EQ(stream_destroy(blocking), 0);
  ASSERT_EQ(release(0), 0);
  // Recreate the device: cuInit resets the fake's counters, so TearDown sees 0 hazards.
  dm_device_free(&dev_);
  dev_ = nullptr;
  ASSERT_EQ(Create(&err), DM_OK) << err.msg;
}

// The demon device puts its zero-fill, copies and stream-ordered frees on one stream: a
// buffer freed right after it was filled and written is no hazard, with memory pools and
// without (TearDown checks the fake's hazard count for every test here).
TEST_F(FakeCuda, FillCopyAndFreeAreOrderedOnTheDeviceStream) {
  for (const char* no_pools : {"0", "1"}) {
    setenv("DEMON_FAKE_CUDA_NO_POOLS", no_pools, 1);
    dm_error err{};
    ASSERT_EQ(Create(&err), DM_OK) << err.msg;
    std::vector<float> data(1 << 16, 1.5f);
    for (uint64_t bytes : {uint64_t(4096), uint64_t(3) << 20}) {
      dm_buffer* b = nullptr;
      ASSERT_EQ(dm_buffer_alloc(dev_, bytes, "test:order", &b, &err), DM_OK) << err.msg;
      ASSERT_EQ(dm_buffer_write(b, 0, data.data(), 4096, &err), DM_OK) << err.msg;
      dm_buffer_free(&b);  // at once: no synchronisation of ours in between
      EXPECT_EQ(FakeHazards(), 0) << "no_pools=" << no_pools << ", " << bytes << " bytes";
    }
    dm_copy_timing t{};
    ASSERT_EQ(dm_device_time_copies(dev_, 1 << 20, 2, "test:order", &t, &err), DM_OK) << err.msg;
    EXPECT_EQ(FakeHazards(), 0) << "no_pools=" << no_pools << ", time copies";
    dm_device_free(&dev_);
    dev_ = nullptr;
  }
}

// Without memory pools (old driver or GPU), plain cuMemAlloc / cuMemFree.
TEST_F(FakeCuda, WithoutMemoryPoolsPlainCuMemAlloc) {
  setenv("DEMON_FAKE_CUDA_NO_POOLS", "1", 1);
  setenv("DEMON_FAKE_CUDA_RESERVED_BYTES", std::to_string(kGiB - (1 << 20)).c_str(), 1);
  dm_error err{};
  ASSERT_EQ(Create(&err), DM_OK) << err.msg;
  char desc[256];
  ASSERT_EQ(dm_device_describe(dev_, desc, sizeof desc, &err), DM_OK);
  EXPECT_NE(std::strstr(desc, ", cuMemAlloc, "), nullptr) << desc;
  dm_buffer *a = nullptr, *b = nullptr;
  ASSERT_EQ(dm_buffer_alloc(dev_, 4096, "test:plain", &a, &err), DM_OK) << err.msg;
  EXPECT_EQ(dm_buffer_alloc(dev_, 2 << 20, "test:plain", &b, &err), DM_ERR_OUT_OF_MEMORY);
  EXPECT_NE(std::strstr(err.msg, "cuMemAlloc_v2 of 2097152 bytes"), nullptr) << err.msg;
  dm_buffer_free(&a);
  EXPECT_EQ(FakeLive(nullptr), 0) << "cuMemFree returns the memory at once";
  long allocs = 0, frees = 0;
  FakeAsyncCalls(&allocs, &frees);
  EXPECT_EQ(allocs, 0);
  EXPECT_EQ(frees, 0);
}

TEST_F(FakeCuda, NthDriverAllocationFails) {
  setenv("DEMON_FAKE_CUDA_FAIL_ALLOC", "2", 1);
  dm_error err{};
  ASSERT_EQ(Create(&err), DM_OK) << err.msg;
  dm_buffer *a = nullptr, *b = nullptr, *c = nullptr;
  ASSERT_EQ(dm_buffer_alloc(dev_, 64, "test:nth", &a, &err), DM_OK);
  EXPECT_EQ(dm_buffer_alloc(dev_, 64, "test:nth", &b, &err), DM_ERR_OUT_OF_MEMORY);
  EXPECT_NE(std::strstr(err.msg, "CUDA_ERROR_OUT_OF_MEMORY"), nullptr) << err.msg;
  ASSERT_EQ(dm_buffer_alloc(dev_, 64, "test:nth", &c, &err), DM_OK);
  dm_buffer_free(&a);
  dm_buffer_free(&c);
}

TEST_F(FakeCuda, FaultPointsFireOnTheCudaDevice) {
  dm_error err{};
  ASSERT_EQ(dm_faults_create("device.create=error", &faults_, &err), DM_OK);
  EXPECT_EQ(Create(&err), DM_ERR_FAULT_INJECTED);
  EXPECT_EQ(dev_, nullptr);
  EXPECT_EQ(dm_faults_hits(faults_, "device.create"), 1);

  ASSERT_EQ(dm_faults_arm(faults_, "device.create=off,device.alloc=oom@2", &err), DM_OK);
  ASSERT_EQ(Create(&err), DM_OK) << err.msg;
  dm_buffer *a = nullptr, *b = nullptr;
  ASSERT_EQ(dm_buffer_alloc(dev_, 256, "test:fault", &a, &err), DM_OK);
  EXPECT_EQ(dm_buffer_alloc(dev_, 256, "test:fault", &b, &err), DM_ERR_OUT_OF_MEMORY);
  EXPECT_EQ(FakeLive(nullptr), 1) << "the injected failure never reached the driver";
  dm_buffer_free(&a);
}

TEST_F(FakeCuda, TimeCopiesFreesEverything) {
  dm_error err{};
  ASSERT_EQ(Create(&err), DM_OK) << err.msg;
  dm_copy_timing t{};
  ASSERT_EQ(dm_device_time_copies(dev_, 8 << 20, 4, "gpu-check", &t, &err), DM_OK) << err.msg;
  EXPECT_EQ(t.bytes, 8u << 20);
  EXPECT_EQ(t.iterations, 4);
  EXPECT_GE(t.h2d_ms, 0.0);
  EXPECT_GE(t.d2h_ms, 0.0);
  dm_ledger_totals s{};
  ASSERT_EQ(dm_device_staging_totals(dev_, &s, &err), DM_OK);
  EXPECT_EQ(s.allocations, 1u) << "one pinned staging buffer";
  EXPECT_EQ(s.peak_bytes, 8u << 20);
  EXPECT_EQ(dm_device_time_copies(dev_, 8 << 20, 0, "gpu-check", &t, &err),
            DM_ERR_INVALID_ARGUMENT);
}

// A CPU reference engine on the cuda device: its inputs and outputs live in device memory
// the CPU cannot touch; Execute stages them through pinned shadows. The result must equal
// the host device's, bit for bit.
class StagedEngine : public FakeCuda {
 protected:
  std::vector<float> Embed(dm_device* dev, const std::string& path) {
    dm_error err{};
    dm_engine_options eo{};
    eo.path = path.c_str();
    eo.component = "text_encoder";
    eo.backend = "cpu-ref";
    eo.backend_version = "cpu-ref-1";
    eo.owner = "model:text_encoder";
    dm_engine* eng = nullptr;
    EXPECT_EQ(dm_engine_load(dev, &eo, &eng, &err), DM_OK) << err.msg;
    if (eng == nullptr) return {};
    dm_context* ctx = nullptr;
    EXPECT_EQ(dm_context_create(eng, "session:staged", &ctx, &err), DM_OK) << err.msg;
    dm_prompt p{};
    p.tags = "warm pads";
    int32_t ids[512];
    int len = 0;
    EXPECT_EQ(dm_prompt_tokenize(&p, 0, ids, 512, &len, &err), DM_OK) << err.msg;
    dm_buffer *in = nullptr, *out = nullptr;
    EXPECT_EQ(dm_buffer_alloc(dev, uint64_t(len) * 4, "session:staged", &in, &err), DM_OK);
    EXPECT_EQ(dm_buffer_alloc(dev, uint64_t(len) * 2048 * 4, "session:staged", &out, &err), DM_OK);
    EXPECT_EQ(dm_buffer_write(in, 0, ids, uint64_t(len) * 4, &err), DM_OK) << err.msg;
    int64_t dims[2] = {1, len};
    EXPECT_EQ(dm_context_set_shape(ctx, "token_ids", dims, 2, &err), DM_OK) << err.msg;
    EXPECT_EQ(dm_context_bind(ctx, "token_ids", in, &err), DM_OK) << err.msg;
    EXPECT_EQ(dm_context_bind(ctx, "encoder_hidden_states", out, &err), DM_OK) << err.msg;
    EXPECT_EQ(dm_context_execute(ctx, &err), DM_OK) << err.msg;
    std::vector<float> result(size_t(len) * 2048);
    EXPECT_EQ(dm_buffer_read(out, 0, result.data(), result.size() * 4, &err), DM_OK) << err.msg;
    if (dev == dev_) {
      dm_ledger_totals s{};
      EXPECT_EQ(dm_device_staging_totals(dev, &s, &err), DM_OK);
      EXPECT_EQ(s.live_handles, 3) << "scratch and two tensor shadows";
      EXPECT_EQ(s.used_bytes, 64 + uint64_t(len) * 4 + uint64_t(len) * 2048 * 4);
    }
    dm_buffer_free(&in);
    dm_buffer_free(&out);
    dm_context_free(&ctx);
    dm_engine_free(&eng);
    return result;
  }
};

TEST_F(StagedEngine, MatchesTheHostDevice) {
  std::string path = ::testing::TempDir() + "/staged_text_encoder.dmeng";
  dm_reference_options ro{};
  ro.component = "text_encoder";
  ro.seed = 7;
  ro.duration_s = 10;
  dm_error err{};
  ASSERT_EQ(dm_reference_engine_write(&ro, path.c_str(), &err), DM_OK) << err.msg;

  dm_device_options ho{};
  ho.kind = DM_DEVICE_HOST;
  ho.capacity_bytes = kGiB;
  dm_device* host = nullptr;
  ASSERT_EQ(dm_device_create(&ho, &host, &err), DM_OK);
  std::vector<float> want = Embed(host, path);
  dm_device_free(&host);

  ASSERT_EQ(Create(&err), DM_OK) << err.msg;
  std::vector<float> got = Embed(dev_, path);
  ASSERT_FALSE(want.empty());
  EXPECT_EQ(got, want);
  std::remove(path.c_str());
}

}  // namespace

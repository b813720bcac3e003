// The GPU tier of the native suite (CMake -DDEMON_WITH_CUDA=ON, ctest -L gpu): the cuda
// device against the real CUDA driver. Every test skips, with the reason, when there is no
// CUDA here (no driver library, no CUDA device), so the tier is safe to build anywhere —
// but not on a machine that evidently has a GPU ($DEMON_REQUIRE_GPU=1, /dev/nvidia0, or a
// GPU listed by `nvidia-smi -L`): there a skip would hide a broken loader, so it fails.
// Any other error creating the device fails too. The fake driver is refused (skipped)
// unless $DEMON_GPU_TIER_ALLOW_FAKE=1 (scripts/gpu-check.sh --fake), as in the Go tier.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "demon/demon.h"

namespace {

bool EnvIs(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

// Why this machine evidently has an NVIDIA GPU ("" when nothing says so).
std::string GpuEvidence() {
  if (EnvIs("DEMON_REQUIRE_GPU", "1")) return "$DEMON_REQUIRE_GPU=1";
  if (access("/dev/nvidia0", F_OK) == 0) return "/dev/nvidia0 exists";
  std::string listed;
  if (FILE* p = popen("nvidia-smi -L 2>/dev/null", "r")) {
    char line[512];
    while (listed.empty() && std::fgets(line, sizeof line, p) != nullptr) {
      if (std::strncmp(line, "GPU ", 4) == 0) listed = "nvidia-smi -L lists " + std::string(line);
    }
    pclose(p);
  }
  while (!listed.empty() && (listed.back() == '\n' || listed.back() == '\r')) listed.pop_back();
  return listed;
}

class Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    dm_device_options o{};
    o.kind = DM_DEVICE_CUDA;
    dm_error err{};
    std::string no_cuda;  // set when the only problem is that there is no CUDA here
    char buf[256] = {};
    if (dm_device_create(&o, &dev_, &err) != DM_OK) {
      bool unavailable = err.code == DM_ERR_CUDA &&
                         (std::strncmp(err.msg, "no CUDA driver (", 16) == 0 ||
                          std::strstr(err.msg, "cuInit: CUDA_ERROR_NO_DEVICE") != nullptr);
      ASSERT_TRUE(unavailable) << "CUDA is present but the cuda device failed: " << err.msg;
      no_cuda = std::string("no GPU: ") + err.msg;
    } else {
      ASSERT_EQ(dm_device_describe(dev_, buf, sizeof buf, &err), DM_OK);
      if (std::strstr(buf, "FAKE") != nullptr && !EnvIs("DEMON_GPU_TIER_ALLOW_FAKE", "1")) {
        no_cuda = std::string("the fake driver is loaded: ") + buf;
      }
    }
    if (!no_cuda.empty()) {
      std::string evidence = GpuEvidence();
      ASSERT_TRUE(evidence.empty())
          << no_cuda << "; but this machine has a GPU (" << evidence << "): the tier must run";
      GTEST_SKIP() << no_cuda;
    }
    std::printf("device: %s\n", buf);
  }
  void TearDown() override {
    if (dev_ == nullptr) return;
    dm_ledger_totals t{};
    ASSERT_EQ(dm_ledger_totals_get(dev_, &t, nullptr), DM_OK);
    EXPECT_EQ(t.used_bytes, 0u);
    EXPECT_EQ(t.live_handles, 0);
    dm_device_free(&dev_);
  }
  dm_device* dev_ = nullptr;
};

TEST_F(Gpu, CapacityIsTheDriverTotal) {
  dm_ledger_totals t{};
  ASSERT_EQ(dm_ledger_totals_get(dev_, &t, nullptr), DM_OK);
  uint64_t free = 0, total = 0;
  dm_error err{};
  ASSERT_EQ(dm_device_driver_memory(dev_, &free, &total, &err), DM_OK) << err.msg;
  EXPECT_EQ(t.capacity_bytes, total);
  EXPECT_LT(free, total) << "the context itself uses some memory";
}

TEST_F(Gpu, AllocRoundTripAndDriverSeesIt) {
  dm_error err{};
  uint64_t free0 = 0, total = 0;
  ASSERT_EQ(dm_device_driver_memory(dev_, &free0, &total, &err), DM_OK);
  const uint64_t n = 256ull << 20;
  std::vector<dm_buffer*> bufs;
  for (int i = 0; i < 4; ++i) {
    dm_buffer* b = nullptr;
    ASSERT_EQ(dm_buffer_alloc(dev_, n, "gpu:test", &b, &err), DM_OK) << err.msg;
    bufs.push_back(b);
  }
  uint64_t free1 = 0;
  ASSERT_EQ(dm_device_driver_memory(dev_, &free1, &total, &err), DM_OK);
  EXPECT_GE(free0 - free1, 4 * n) << "the driver sees at least what the ledger admitted";

  std::vector<float> in(16 << 20), out(in.size());
  std::mt19937 rng(1);
  for (float& v : in) v = static_cast<float>(rng()) / 4e9f;
  ASSERT_EQ(dm_buffer_write(bufs[2], 4096, in.data(), in.size() * 4, &err), DM_OK) << err.msg;
  ASSERT_EQ(dm_buffer_read(bufs[2], 4096, out.data(), out.size() * 4, &err), DM_OK) << err.msg;
  EXPECT_TRUE(in == out);
  std::vector<uint8_t> zeros(1 << 20, 0xff);
  ASSERT_EQ(dm_buffer_read(bufs[3], 0, zeros.data(), zeros.size(), &err), DM_OK);
  for (uint8_t v : zeros) ASSERT_EQ(v, 0) << "new device memory is zero-filled";
  for (dm_buffer*& b : bufs) dm_buffer_free(&b);
}

TEST_F(Gpu, DriverRefusalIsOutOfMemory) {
  dm_ledger_totals t{};
  ASSERT_EQ(dm_ledger_totals_get(dev_, &t, nullptr), DM_OK);
  dm_buffer* b = nullptr;
  dm_error err{};
  // The whole capacity: the ledger admits it, the driver cannot (its context uses some).
  EXPECT_EQ(dm_buffer_alloc(dev_, t.capacity_bytes, "gpu:too-big", &b, &err), DM_ERR_OUT_OF_MEMORY);
  EXPECT_NE(std::strstr(err.msg, "CUDA_ERROR_OUT_OF_MEMORY"), nullptr) << err.msg;
  EXPECT_EQ(b, nullptr);
}

TEST_F(Gpu, CopyThroughput) {
  dm_copy_timing t{};
  dm_error err{};
  ASSERT_EQ(dm_device_time_copies(dev_, 64ull << 20, 10, "gpu:bench", &t, &err), DM_OK) << err.msg;
  double h2d = double(t.bytes) * t.iterations / t.h2d_ms / 1e6;
  double d2h = double(t.bytes) * t.iterations / t.d2h_ms / 1e6;
  std::printf("pinned copies: H2D %.1f GB/s, D2H %.1f GB/s\n", h2d, d2h);
  EXPECT_GT(h2d, 1.0);
  EXPECT_GT(d2h, 1.0);
}

}  // namespace

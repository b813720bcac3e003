// Engine loading through the C API: what LoadEngine refuses, and in which order it checks.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "demon/demon.h"

namespace {

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
  dm_engine_options Options() const {
    dm_engine_options o{};
    o.path = path_.c_str();
    o.component = "vae_encode";
    o.backend = "cpu-ref";
    o.backend_version = "cpu-ref-1";
    o.owner = "model:test";
    return o;
  }

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

}  // namespace

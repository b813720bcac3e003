// Tests of the C API surface itself: NULL handling, statuses and messages.
#include <gtest/gtest.h>

#include <cstring>

#include "demon/demon.h"

namespace {

class CApi : public ::testing::Test {
 protected:
  void SetUp() override {
    dm_device_options o{};
    o.kind = DM_DEVICE_HOST;
    o.capacity_bytes = 1 << 20;
    ASSERT_EQ(dm_device_create(&o, &dev_, &err_), DM_OK) << err_.msg;
  }
  void TearDown() override {
    dm_ledger_totals t{};
    ASSERT_EQ(dm_ledger_totals_get(dev_, &t, &err_), DM_OK);
    EXPECT_EQ(t.used_bytes, 0u) << "test leaked device memory";
    EXPECT_EQ(t.live_handles, 0) << "test leaked handles";
    dm_device_free(dev_);
  }
  dm_device* dev_ = nullptr;
  dm_error err_{};
};

TEST_F(CApi, NullOutPointers) {
  EXPECT_EQ(dm_buffer_alloc(dev_, 10, "x", nullptr, &err_), DM_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(err_.msg, "out-pointer is NULL"), nullptr) << err_.msg;
  EXPECT_EQ(dm_device_create(nullptr, &dev_, &err_), DM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(dm_faults_create("", nullptr, &err_), DM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(dm_ledger_totals_get(dev_, nullptr, &err_), DM_ERR_INVALID_ARGUMENT);
  int n = 0;
  EXPECT_EQ(dm_ledger_by_owner(dev_, nullptr, 4, &n, &err_), DM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(dm_ledger_by_owner(dev_, nullptr, 0, nullptr, &err_), DM_ERR_INVALID_ARGUMENT);
}

TEST_F(CApi, NullHandlesAndNullErr) {
  dm_buffer* b = nullptr;
  EXPECT_EQ(dm_buffer_alloc(nullptr, 10, "x", &b, nullptr), DM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(b, nullptr) << "*out untouched on error";
  dm_buffer_free(nullptr);
  dm_device_free(nullptr);
  dm_faults_free(nullptr);
  dm_faults_reset(nullptr);
  dm_ledger_reset_peak(nullptr);
  EXPECT_EQ(dm_buffer_size(nullptr), 0u);
  EXPECT_EQ(dm_faults_hits(nullptr, "device.alloc"), -1);
  EXPECT_EQ(dm_faults_point_name(-1), nullptr);
  EXPECT_EQ(dm_faults_point_name(dm_faults_point_count()), nullptr);
}

TEST_F(CApi, ErrorClearedOnSuccess) {
  dm_buffer* b = nullptr;
  err_.code = 99;
  std::strcpy(err_.msg, "stale");
  ASSERT_EQ(dm_buffer_alloc(dev_, 10, "x", &b, &err_), DM_OK);
  EXPECT_EQ(err_.code, DM_OK);
  EXPECT_STREQ(err_.msg, "");
  dm_buffer_free(b);
}

TEST_F(CApi, LedgerEntriesReportTotalBeyondCap) {
  dm_buffer* b[3] = {};
  const char* owners[3] = {"a", "b", "c"};
  for (int i = 0; i < 3; ++i) ASSERT_EQ(dm_buffer_alloc(dev_, 8, owners[i], &b[i], &err_), DM_OK);
  dm_ledger_entry e[2];
  int n = 0;
  ASSERT_EQ(dm_ledger_by_owner(dev_, e, 2, &n, &err_), DM_OK);
  EXPECT_EQ(n, 3);
  EXPECT_STREQ(e[0].name, "a");
  EXPECT_STREQ(e[1].name, "b");
  for (auto* p : b) dm_buffer_free(p);
}

TEST_F(CApi, ExceptionBarrier) {
  EXPECT_EQ(dm_debug_throw(DM_DEBUG_THROW_STD, &err_), DM_ERR_INTERNAL);
  EXPECT_EQ(dm_debug_throw(DM_DEBUG_THROW_BAD_ALLOC, &err_), DM_ERR_OUT_OF_MEMORY);
  EXPECT_EQ(dm_debug_throw(DM_DEBUG_THROW_DM_ERROR, &err_), DM_ERR_CORRUPT);
  EXPECT_EQ(dm_debug_throw(DM_DEBUG_THROW_UNKNOWN, &err_), DM_ERR_INTERNAL);
  EXPECT_EQ(dm_debug_throw(42, nullptr), DM_ERR_INVALID_ARGUMENT);
}

TEST_F(CApi, FaultedAllocationLeavesNothing) {
  dm_faults* f = nullptr;
  ASSERT_EQ(dm_faults_create("device.alloc=oom@1", &f, &err_), DM_OK);
  dm_device_options o{};
  o.kind = DM_DEVICE_HOST;
  o.capacity_bytes = 4096;
  o.faults = f;
  dm_device* d = nullptr;
  ASSERT_EQ(dm_device_create(&o, &d, &err_), DM_OK);
  dm_buffer* b = nullptr;
  EXPECT_EQ(dm_buffer_alloc(d, 100, "x", &b, &err_), DM_ERR_OUT_OF_MEMORY);
  dm_ledger_totals t{};
  ASSERT_EQ(dm_ledger_totals_get(d, &t, &err_), DM_OK);
  EXPECT_EQ(t.used_bytes, 0u);
  EXPECT_EQ(t.live_handles, 0);
  EXPECT_EQ(t.failed, 1u);
  ASSERT_EQ(dm_buffer_alloc(d, 100, "x", &b, &err_), DM_OK);
  dm_buffer_free(b);
  dm_device_free(d);
  dm_faults_free(f);
}

}  // namespace

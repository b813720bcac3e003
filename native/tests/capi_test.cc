// Tests of the C API surface itself: NULL handling, statuses and messages, and the
// exception barrier (every entry point noexcept, checked at compile time).
//
// This binary replaces the global operator new so a test can make host allocation fail
// (g_fail_new) and check that the entry points turn std::bad_alloc into a status.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>

#include "demon/demon.h"

namespace {
std::atomic<bool> g_fail_new{false};
}  // namespace

// GCC flags malloc/free inside replaced operators as "mismatched" (a false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(std::size_t n) {
  if (g_fail_new.load(std::memory_order_relaxed)) throw std::bad_alloc();
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (g_fail_new.load(std::memory_order_relaxed)) throw std::bad_alloc();
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

// The exception barrier in the type system. Since C++17 noexcept is part of a function's
// type, so this matches only functions declared noexcept (DM_NOEXCEPT in demon.h); a
// definition without it would not even compile against the header. One line per entry
// point; EveryEntryPointIsChecked below fails when demon.h gains one missing here.
template <typename F>
struct IsNoexceptFunction : std::false_type {};
template <typename R, typename... A>
struct IsNoexceptFunction<R(A...) noexcept> : std::true_type {};

#define DM_ENTRY_POINTS(X)     \
  X(dm_version)                \
  X(dm_faults_create)          \
  X(dm_faults_free)            \
  X(dm_faults_arm)             \
  X(dm_faults_reset)           \
  X(dm_faults_hit)             \
  X(dm_faults_arming)          \
  X(dm_faults_hits)            \
  X(dm_faults_point_count)     \
  X(dm_faults_point_name)      \
  X(dm_device_create)          \
  X(dm_device_free)            \
  X(dm_device_describe)        \
  X(dm_ledger_totals_get)      \
  X(dm_ledger_by_kind)         \
  X(dm_ledger_by_owner)        \
  X(dm_ledger_reset_peak)      \
  X(dm_device_driver_memory)   \
  X(dm_device_staging_totals)  \
  X(dm_device_time_copies)     \
  X(dm_buffer_alloc)           \
  X(dm_buffer_free)            \
  X(dm_buffer_size)            \
  X(dm_buffer_write)           \
  X(dm_buffer_read)            \
  X(dm_engine_load)            \
  X(dm_engine_free)            \
  X(dm_engine_io_count)        \
  X(dm_engine_io)              \
  X(dm_engine_context_bytes)   \
  X(dm_context_create)         \
  X(dm_context_free)           \
  X(dm_context_set_shape)      \
  X(dm_context_bind)           \
  X(dm_context_execute)        \
  X(dm_context_shape)          \
  X(dm_prompt_tokenize)        \
  X(dm_engine_file_check)      \
  X(dm_reference_engine_write) \
  X(dm_stream_create)          \
  X(dm_stream_free)            \
  X(dm_stream_bytes)           \
  X(dm_stream_set_source)      \
  X(dm_stream_set_condition)   \
  X(dm_stream_set_curve)       \
  X(dm_stream_set_blend_curve) \
  X(dm_stream_set_playback)    \
  X(dm_stream_read_playback)   \
  X(dm_stream_tick)            \
  X(dm_stream_decode_window)   \
  X(dm_debug_throw)

#define DM_ASSERT_NOEXCEPT(fn) \
  static_assert(IsNoexceptFunction<decltype(fn)>::value, #fn " must be declared DM_NOEXCEPT");
DM_ENTRY_POINTS(DM_ASSERT_NOEXCEPT)
#undef DM_ASSERT_NOEXCEPT

// The control case: the trait is not vacuously true.
int MayThrow(int);
static_assert(!IsNoexceptFunction<decltype(MayThrow)>::value, "trait must reject a throwing fn");

// Every function demon.h declares is in DM_ENTRY_POINTS, so the static_asserts above cover
// the whole API. The header is found next to this file (CMake passes absolute paths).
TEST(CApiBarrier, EveryEntryPointIsChecked) {
  std::string here = __FILE__;
  const std::string suffix = "tests/capi_test.cc";
  ASSERT_GT(here.size(), suffix.size());
  ASSERT_EQ(here.substr(here.size() - suffix.size()), suffix) << here;
  std::string header = here.substr(0, here.size() - suffix.size()) + "include/demon/demon.h";
  std::ifstream in(header);
  ASSERT_TRUE(in.good()) << "cannot read " << header;
  std::stringstream ss;
  ss << in.rdbuf();
  // Declarations only: drop the comments, which also name functions ("dm_x()").
  std::string text = std::regex_replace(ss.str(), std::regex(R"(/\*[\s\S]*?\*/)"), "");
  std::set<std::string> declared;
  std::regex decl(R"(\b(dm_\w+)\s*\()");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), decl); it != std::sregex_iterator();
       ++it) {
    declared.insert((*it)[1].str());
  }
#define DM_NAME(fn) #fn,
  const std::set<std::string> checked = {DM_ENTRY_POINTS(DM_NAME)};
#undef DM_NAME
  EXPECT_GE(declared.size(), 40u) << "the header parse found too few functions";
  for (const auto& name : declared) {
    EXPECT_EQ(checked.count(name), 1u) << name << " is declared in demon.h but not in "
                                       << "DM_ENTRY_POINTS (add it, and make it noexcept)";
  }
  for (const auto& name : checked) {
    EXPECT_EQ(declared.count(name), 1u) << name << " is checked but not declared in demon.h";
  }
}

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

// The entry points that once built their results outside the barrier: with host
// allocation failing they return a status (or their "nothing" value) instead of letting
// std::bad_alloc reach C (which, through noexcept, would be std::terminate).
TEST_F(CApi, BadAllocInsideValueAndListFunctionsIsAStatus) {
  dm_buffer* b = nullptr;
  ASSERT_EQ(dm_buffer_alloc(dev_, 8, "an-owner-tag-longer-than-sso", &b, &err_), DM_OK);
  dm_faults* f = nullptr;
  ASSERT_EQ(dm_faults_create("", &f, &err_), DM_OK);
  // A name longer than std::string's small buffer, so looking it up allocates.
  const char* point = "model.load.vae_decode_windowed";
  ASSERT_EQ(dm_faults_hit(f, point, &err_), DM_OK);
  dm_ledger_entry e[4];
  int n = -7;

  g_fail_new = true;
  int by_kind = dm_ledger_by_kind(dev_, e, 4, &n, &err_);
  dm_error kind_err = err_;
  int by_owner = dm_ledger_by_owner(dev_, e, 4, &n, &err_);
  dm_error owner_err = err_;
  int64_t hits = dm_faults_hits(f, point);
  int count = dm_faults_point_count();
  g_fail_new = false;

  EXPECT_EQ(by_kind, DM_ERR_OUT_OF_MEMORY);
  EXPECT_NE(std::strstr(kind_err.msg, "bad_alloc"), nullptr) << kind_err.msg;
  EXPECT_EQ(by_owner, DM_ERR_OUT_OF_MEMORY);
  EXPECT_EQ(owner_err.code, DM_ERR_OUT_OF_MEMORY);
  EXPECT_EQ(n, -7) << "count untouched on error";
  EXPECT_EQ(hits, -1) << "the documented nothing value";
  EXPECT_GT(count, 0) << "listing the points allocates nothing";

  // And with memory back, the same calls answer.
  ASSERT_EQ(dm_ledger_by_owner(dev_, e, 4, &n, &err_), DM_OK) << err_.msg;
  EXPECT_EQ(n, 1);
  EXPECT_STREQ(e[0].name, "an-owner-tag-longer-than-sso");
  EXPECT_EQ(dm_faults_hits(f, point), 1);
  dm_faults_free(f);
  dm_buffer_free(b);
}

// A device shares its fault registry: freeing the dm_faults handle first leaves the device
// a live, disarmed registry rather than a dangling pointer (ASan would flag the next hit).
TEST_F(CApi, FaultsFreedBeforeTheirDevice) {
  dm_faults* f = nullptr;
  ASSERT_EQ(dm_faults_create("device.alloc=error@2", &f, &err_), DM_OK);
  dm_device_options o{};
  o.kind = DM_DEVICE_HOST;
  o.capacity_bytes = 4096;
  o.faults = f;
  dm_device* d = nullptr;
  ASSERT_EQ(dm_device_create(&o, &d, &err_), DM_OK);
  dm_buffer* b[3] = {};
  ASSERT_EQ(dm_buffer_alloc(d, 8, "x", &b[0], &err_), DM_OK) << err_.msg;
  dm_faults_free(f);
  // Hit 2 was armed to fail; the free disarmed it, and the hit lands on live memory.
  EXPECT_EQ(dm_buffer_alloc(d, 8, "x", &b[1], &err_), DM_OK) << err_.msg;
  EXPECT_EQ(dm_buffer_alloc(d, 8, "x", &b[2], &err_), DM_OK) << err_.msg;
  for (auto* p : b) dm_buffer_free(p);
  dm_device_free(d);
}

// Freeing the handle releases a hit hung on the registry (nobody could re-arm it).
TEST_F(CApi, FreeingFaultsReleasesAHungHit) {
  dm_faults* f = nullptr;
  ASSERT_EQ(dm_faults_create("device.alloc=hang", &f, &err_), DM_OK);
  dm_device_options o{};
  o.kind = DM_DEVICE_HOST;
  o.capacity_bytes = 4096;
  o.faults = f;
  dm_device* d = nullptr;
  ASSERT_EQ(dm_device_create(&o, &d, &err_), DM_OK);
  std::atomic<int> rc{-1};
  dm_buffer* b = nullptr;
  std::thread t([&] {
    dm_error e{};
    rc = dm_buffer_alloc(d, 8, "x", &b, &e);
  });
  // Hits are counted under the registry's lock, which the hung hit releases only while it
  // waits: one recorded hit means the allocation is parked in the hang.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (dm_faults_hits(f, "device.alloc") < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(dm_faults_hits(f, "device.alloc"), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(rc.load(), -1) << "the allocation hangs";
  auto freed = std::chrono::steady_clock::now();
  dm_faults_free(f);
  t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - freed, std::chrono::seconds(5));
  EXPECT_EQ(rc.load(), DM_OK);
  dm_buffer_free(b);
  dm_device_free(d);
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

// Tests of the C API surface itself: NULL handling, statuses and messages, and the
// exception barrier (every entry point noexcept, checked at compile time).
//
// This binary replaces the global operator new so a test can make host allocation fail
// (g_fail_new) and check that the entry points turn std::bad_alloc into a status.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <new>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

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
  X(dm_engine_inspect)         \
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

// The text of demon.h, found next to this file (CMake passes absolute paths); empty, with
// a test failure, if it cannot be read.
std::string ReadHeader() {
  std::string here = __FILE__;
  const std::string suffix = "tests/capi_test.cc";
  if (here.size() <= suffix.size() || here.substr(here.size() - suffix.size()) != suffix) {
    ADD_FAILURE() << "unexpected source path " << here;
    return "";
  }
  std::string header = here.substr(0, here.size() - suffix.size()) + "include/demon/demon.h";
  std::ifstream in(header);
  if (!in.good()) {
    ADD_FAILURE() << "cannot read " << header;
    return "";
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every function demon.h declares is in DM_ENTRY_POINTS, so the static_asserts above cover
// the whole API.
TEST(CApiBarrier, EveryEntryPointIsChecked) {
  std::string source = ReadHeader();
  ASSERT_FALSE(source.empty());
  // Declarations only: drop the comments, which also name functions ("dm_x()").
  std::string text = std::regex_replace(source, std::regex(R"(/\*[\s\S]*?\*/)"), "");
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

// STYLE item 16 and the header's conventions: the comment right above every declaration
// states ownership on success and on error ("Owns:"), NULL handling ("NULL:") and the
// thread rule ("Threads:").
TEST(CApiDocs, EveryFunctionStatesOwnershipNullAndThreads) {
  std::istringstream lines(ReadHeader());
  const std::regex decl(R"(\b(dm_\w+)\s*\()");
  std::map<std::string, std::string> doc;  // function -> the comment right above it
  std::string comment;
  bool in_comment = false;
  for (std::string line; std::getline(lines, line);) {
    if (in_comment || line.rfind("/*", 0) == 0) {
      if (!in_comment) comment.clear();
      comment += line + "\n";
      in_comment = line.find("*/") == std::string::npos;
      continue;
    }
    std::smatch m;
    if (line.rfind("#", 0) != 0 && std::regex_search(line, m, decl)) {
      doc[m[1].str()] = comment;
    }
    comment.clear();  // a comment documents only the declaration right below it
  }
#define DM_NAME(fn) #fn,
  const std::vector<std::string> functions = {DM_ENTRY_POINTS(DM_NAME)};
#undef DM_NAME
  for (const auto& fn : functions) {
    ASSERT_EQ(doc.count(fn), 1u) << fn << " not found in demon.h";
    for (const char* part : {"Owns:", "NULL:", "Threads:"}) {
      EXPECT_NE(doc[fn].find(part), std::string::npos)
          << fn << ": the comment above it lacks \"" << part << "\"";
    }
  }
}

// A host device of `capacity` bytes using `faults` (may be NULL); NULL, and a test failure,
// if it cannot be created.
dm_device* NewHostDevice(uint64_t capacity, dm_faults* faults = nullptr) {
  dm_device_options o{};
  o.kind = DM_DEVICE_HOST;
  o.capacity_bytes = capacity;
  o.faults = faults;
  dm_device* d = nullptr;
  dm_error err{};
  EXPECT_EQ(dm_device_create(&o, &d, &err), DM_OK) << err.msg;
  return d;
}

class CApi : public ::testing::Test {
 protected:
  void SetUp() override {
    dev_ = NewHostDevice(1 << 20);
    ASSERT_NE(dev_, nullptr);
  }
  void TearDown() override {
    dm_ledger_totals t{};
    ASSERT_EQ(dm_ledger_totals_get(dev_, &t, &err_), DM_OK);
    EXPECT_EQ(t.used_bytes, 0u) << "test leaked device memory";
    EXPECT_EQ(t.live_handles, 0) << "test leaked handles";
    dm_device_free(&dev_);
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

// The live handles of `kind` on the ledger of `dev` (0 when the kind holds nothing).
int64_t LiveOfKind(const dm_device* dev, const char* kind) {
  dm_ledger_entry e[16];
  int n = 0;
  dm_error err{};
  EXPECT_EQ(dm_ledger_by_kind(dev, e, 16, &n, &err), DM_OK) << err.msg;
  for (int i = 0; i < n && i < 16; ++i) {
    if (std::strcmp(e[i].name, kind) == 0) return e[i].live_handles;
  }
  return 0;
}

// Every free takes the caller's variable: NULL and a variable holding NULL are no-ops, and
// freeing the same variable twice frees once (under ASan a real second free would abort).
TEST_F(CApi, FreesAreNullSafeAndIdempotent) {
  dm_faults_free(nullptr);
  dm_device_free(nullptr);
  dm_buffer_free(nullptr);
  dm_engine_free(nullptr);
  dm_context_free(nullptr);
  dm_stream_free(nullptr);
  dm_faults* no_faults = nullptr;
  dm_device* no_device = nullptr;
  dm_buffer* no_buffer = nullptr;
  dm_engine* no_engine = nullptr;
  dm_context* no_context = nullptr;
  dm_stream* no_stream = nullptr;
  dm_faults_free(&no_faults);
  dm_device_free(&no_device);
  dm_buffer_free(&no_buffer);
  dm_engine_free(&no_engine);
  dm_context_free(&no_context);
  dm_stream_free(&no_stream);

  // Engines, a context and a stream on the fixture's device (capacity 1 MiB is too small).
  dm_device* dev = NewHostDevice(1ull << 30);
  ASSERT_NE(dev, nullptr);
  auto engine = [&](const char* component, const char* variant) {
    std::string path = ::testing::TempDir() + "/capi_free_" + component + ".dmeng";
    dm_reference_options r{};
    r.component = component;
    r.variant = variant;
    r.seed = 3;
    r.duration_s = 10;
    EXPECT_EQ(dm_reference_engine_write(&r, path.c_str(), &err_), DM_OK) << err_.msg;
    dm_engine_options eo{};
    eo.path = path.c_str();
    eo.component = component;
    eo.backend = "cpu-ref";
    eo.backend_version = "cpu-ref-1";
    eo.owner = "model:free";
    dm_engine* e = nullptr;
    EXPECT_EQ(dm_engine_load(dev, &eo, &e, &err_), DM_OK) << err_.msg;
    std::remove(path.c_str());
    return e;
  };
  dm_engine* dec = engine("decoder", "oracle");
  dm_engine* vae = engine("vae_decode_windowed", "");
  ASSERT_NE(dec, nullptr);
  ASSERT_NE(vae, nullptr);
  dm_context* ctx = nullptr;
  ASSERT_EQ(dm_context_create(dec, "session:free", &ctx, &err_), DM_OK) << err_.msg;
  dm_stream_options so{};
  so.frames = 126;
  so.max_depth = 1;
  so.depth = 1;
  so.steps = 1;
  so.shift = 1;
  so.max_cond_len = 32;
  dm_stream* stream = nullptr;
  ASSERT_EQ(dm_stream_create(ctx, vae, "session:free", &so, &stream, &err_), DM_OK) << err_.msg;
  dm_buffer* buf = nullptr;
  ASSERT_EQ(dm_buffer_alloc(dev, 64, "session:free", &buf, &err_), DM_OK) << err_.msg;
  dm_faults* faults = nullptr;
  ASSERT_EQ(dm_faults_create("", &faults, &err_), DM_OK) << err_.msg;

  // Each free clears the variable and drops exactly one handle of its kind; the second free
  // of the same variable changes nothing.
  auto twice = [&](const char* kind, auto** handle, auto free_fn) {
    SCOPED_TRACE(kind);
    int64_t live = LiveOfKind(dev, kind);
    ASSERT_GE(live, 1);
    free_fn(handle);
    EXPECT_EQ(*handle, nullptr) << "the variable is cleared";
    EXPECT_EQ(LiveOfKind(dev, kind), live - 1);
    free_fn(handle);
    EXPECT_EQ(*handle, nullptr);
    EXPECT_EQ(LiveOfKind(dev, kind), live - 1) << "the second free is a no-op";
  };
  twice("stream", &stream, dm_stream_free);
  twice("buffer", &buf, dm_buffer_free);
  twice("context", &ctx, dm_context_free);
  twice("engine", &dec, dm_engine_free);
  twice("engine", &vae, dm_engine_free);
  dm_faults_free(&faults);
  EXPECT_EQ(faults, nullptr);
  dm_faults_free(&faults);

  dm_ledger_totals t{};
  ASSERT_EQ(dm_ledger_totals_get(dev, &t, &err_), DM_OK);
  EXPECT_EQ(t.used_bytes, 0u);
  EXPECT_EQ(t.live_handles, 0);
  EXPECT_EQ(t.allocations, t.frees) << "every allocation freed exactly once";
  dm_device_free(&dev);
  EXPECT_EQ(dev, nullptr);
  dm_device_free(&dev);
}

TEST_F(CApi, ErrorClearedOnSuccess) {
  dm_buffer* b = nullptr;
  err_.code = 99;
  std::strcpy(err_.msg, "stale");
  ASSERT_EQ(dm_buffer_alloc(dev_, 10, "x", &b, &err_), DM_OK);
  EXPECT_EQ(err_.code, DM_OK);
  EXPECT_STREQ(err_.msg, "");
  dm_buffer_free(&b);
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
  for (auto*& p : b) dm_buffer_free(&p);
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
  dm_faults_free(&f);
  dm_buffer_free(&b);
}

// A device shares its fault registry: freeing the dm_faults handle first leaves the device
// a live, disarmed registry rather than a dangling pointer (ASan would flag the next hit).
TEST_F(CApi, FaultsFreedBeforeTheirDevice) {
  dm_faults* f = nullptr;
  ASSERT_EQ(dm_faults_create("device.alloc=error@2", &f, &err_), DM_OK);
  dm_device* d = NewHostDevice(4096, f);
  ASSERT_NE(d, nullptr);
  dm_buffer* b[3] = {};
  ASSERT_EQ(dm_buffer_alloc(d, 8, "x", &b[0], &err_), DM_OK) << err_.msg;
  dm_faults_free(&f);
  // Hit 2 was armed to fail; the free disarmed it, and the hit lands on live memory.
  EXPECT_EQ(dm_buffer_alloc(d, 8, "x", &b[1], &err_), DM_OK) << err_.msg;
  EXPECT_EQ(dm_buffer_alloc(d, 8, "x", &b[2], &err_), DM_OK) << err_.msg;
  for (auto*& p : b) dm_buffer_free(&p);
  dm_device_free(&d);
}

// Freeing the handle releases a hit hung on the registry (nobody could re-arm it).
TEST_F(CApi, FreeingFaultsReleasesAHungHit) {
  dm_faults* f = nullptr;
  ASSERT_EQ(dm_faults_create("device.alloc=hang", &f, &err_), DM_OK);
  dm_device* d = NewHostDevice(4096, f);
  ASSERT_NE(d, nullptr);
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
  dm_faults_free(&f);
  t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - freed, std::chrono::seconds(5));
  EXPECT_EQ(rc.load(), DM_OK);
  dm_buffer_free(&b);
  dm_device_free(&d);
}

// A raw allocation the ledger admitted but the device could not make (an anonymous
// mapping larger than the address space) is refused with DM_ERR_OUT_OF_MEMORY and moves
// only `failed`: not used, peak, allocations or frees.
TEST_F(CApi, RefusedRawAllocationMovesOnlyTheFailureCount) {
  dm_device* d = NewHostDevice(1ull << 62);
  ASSERT_NE(d, nullptr);
  dm_buffer* kept = nullptr;
  ASSERT_EQ(dm_buffer_alloc(d, 4096, "x", &kept, &err_), DM_OK);
  dm_ledger_totals before{};
  ASSERT_EQ(dm_ledger_totals_get(d, &before, &err_), DM_OK);
  dm_buffer* b = nullptr;
  EXPECT_EQ(dm_buffer_alloc(d, 1ull << 60, "x", &b, &err_), DM_ERR_OUT_OF_MEMORY);
  EXPECT_NE(std::strstr(err_.msg, "host mapping of"), nullptr) << err_.msg;
  EXPECT_EQ(b, nullptr);
  dm_ledger_totals after{};
  ASSERT_EQ(dm_ledger_totals_get(d, &after, &err_), DM_OK);
  EXPECT_EQ(after.used_bytes, before.used_bytes);
  EXPECT_EQ(after.peak_bytes, before.peak_bytes);
  EXPECT_EQ(after.allocations, before.allocations);
  EXPECT_EQ(after.frees, before.frees);
  EXPECT_EQ(after.live_handles, before.live_handles);
  EXPECT_EQ(after.failed, before.failed + 1);
  dm_buffer_free(&kept);
  dm_device_free(&d);
}

TEST_F(CApi, FaultedAllocationLeavesNothing) {
  dm_faults* f = nullptr;
  ASSERT_EQ(dm_faults_create("device.alloc=oom@1", &f, &err_), DM_OK);
  dm_device* d = NewHostDevice(4096, f);
  ASSERT_NE(d, nullptr);
  dm_buffer* b = nullptr;
  EXPECT_EQ(dm_buffer_alloc(d, 100, "x", &b, &err_), DM_ERR_OUT_OF_MEMORY);
  dm_ledger_totals t{};
  ASSERT_EQ(dm_ledger_totals_get(d, &t, &err_), DM_OK);
  EXPECT_EQ(t.used_bytes, 0u);
  EXPECT_EQ(t.live_handles, 0);
  EXPECT_EQ(t.failed, 1u);
  ASSERT_EQ(dm_buffer_alloc(d, 100, "x", &b, &err_), DM_OK);
  dm_buffer_free(&b);
  dm_device_free(&d);
  dm_faults_free(&f);
}

}  // namespace

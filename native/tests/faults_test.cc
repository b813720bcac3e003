#include "faults/faults.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace dm {
namespace {

Status StatusOf(FaultRegistry& f, const char* point) {
  try {
    f.Hit(point);
    return Status::kOk;
  } catch (const Error& e) {
    return e.status();
  }
}

TEST(Faults, UnarmedPointsCountHits) {
  FaultRegistry f;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(StatusOf(f, "device.alloc"), Status::kOk);
  EXPECT_EQ(f.Hits("device.alloc"), 3);
  EXPECT_EQ(f.Hits("device.create"), 0);
  EXPECT_EQ(f.Hits("nope"), -1);
}

TEST(Faults, NthHitOnly) {
  FaultRegistry f("device.alloc=error@2");
  EXPECT_EQ(StatusOf(f, "device.alloc"), Status::kOk);
  EXPECT_EQ(StatusOf(f, "device.alloc"), Status::kFaultInjected);
  EXPECT_EQ(StatusOf(f, "device.alloc"), Status::kOk);
}

TEST(Faults, EveryHitAndOom) {
  FaultRegistry f(" device.alloc = oom , device.create=error ");
  EXPECT_EQ(StatusOf(f, "device.alloc"), Status::kOutOfMemory);
  EXPECT_EQ(StatusOf(f, "device.alloc"), Status::kOutOfMemory);
  EXPECT_EQ(StatusOf(f, "device.create"), Status::kFaultInjected);
  f.Arm("device.alloc=off");
  EXPECT_EQ(StatusOf(f, "device.alloc"), Status::kOk);
  f.Reset();
  EXPECT_EQ(StatusOf(f, "device.create"), Status::kOk);
  EXPECT_EQ(f.Hits("device.create"), 1);
}

TEST(Faults, MalformedSpecsChangeNothing) {
  FaultRegistry f;
  const char* bad[] = {"device.alloc",
                       "x=error",
                       "device.alloc=boom",
                       "device.alloc=error@",
                       "device.alloc=error@-1",
                       "device.alloc=error@2x",
                       "=error"};
  for (const char* spec : bad) {
    EXPECT_THROW(f.Arm(spec), Error) << spec;
  }
  EXPECT_THROW(f.Arm("device.alloc=error,unknown.point=error"), Error);
  EXPECT_EQ(StatusOf(f, "device.alloc"), Status::kOk);
  EXPECT_NO_THROW(f.Arm(""));
  EXPECT_NO_THROW(f.Arm(",,"));
}

// Both grammar errors list every action the parser accepts, hang included.
TEST(Faults, SpecErrorsListEveryAction) {
  FaultRegistry f;
  for (const char* spec : {"device.alloc", "device.alloc=boom"}) {
    try {
      f.Arm(spec);
      ADD_FAILURE() << spec << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::kInvalidArgument) << spec;
      EXPECT_NE(std::string(e.what()).find("error, oom, hang or off"), std::string::npos)
          << spec << ": " << e.what();
    }
  }
  EXPECT_NO_THROW(f.Arm("device.alloc=hang@3")) << "hang is a real action";
  f.Reset();
}

TEST(Faults, UnknownPointHitThrowsNotFound) {
  FaultRegistry f;
  EXPECT_EQ(StatusOf(f, "made.up"), Status::kNotFound);
}

TEST(Faults, DeclaredListHasNoDuplicates) {
  const auto& d = kFaultPoints;
  for (size_t i = 0; i < kFaultPointCount; ++i) {
    for (size_t j = i + 1; j < kFaultPointCount; ++j) EXPECT_STRNE(d[i], d[j]);
  }
}

}  // namespace
}  // namespace dm

namespace dm {
namespace {

TEST(Faults, HangBlocksUntilRearmed) {
  FaultRegistry f("device.alloc=hang@2");
  EXPECT_EQ(StatusOf(f, "device.alloc"), Status::kOk);
  std::atomic<bool> returned{false};
  std::thread t([&] {
    f.Hit("device.alloc");
    returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(returned.load()) << "the second hit hangs";
  f.Arm("device.alloc=off");
  t.join();
  EXPECT_TRUE(returned.load());
}

}  // namespace
}  // namespace dm

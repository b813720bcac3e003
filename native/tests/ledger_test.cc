#include "core/ledger.h"

#include <gtest/gtest.h>

namespace dm {
namespace {

TEST(Ledger, ReserveReleaseIsExact) {
  Ledger l(1000);
  l.Reserve(HandleKind::kEngine, "model:decoder", 600);
  l.Reserve(HandleKind::kStream, "session:a", 399);
  EXPECT_EQ(l.Totals().used_bytes, 999u);
  EXPECT_EQ(l.FreeBytes(), 1u);
  l.Reserve(HandleKind::kStream, "session:a", 1);
  EXPECT_EQ(l.FreeBytes(), 0u);
  EXPECT_THROW(l.Reserve(HandleKind::kStream, "session:b", 1), Error);
  l.Release(HandleKind::kStream, "session:a", 400);
  l.Release(HandleKind::kEngine, "model:decoder", 600);
  LedgerTotals t = l.Totals();
  EXPECT_EQ(t.used_bytes, 0u);
  EXPECT_EQ(t.peak_bytes, 1000u);
  EXPECT_EQ(t.allocations, 3u);
  EXPECT_EQ(t.frees, 2u);
  EXPECT_EQ(t.failed, 1u);
  EXPECT_TRUE(l.ByOwner().empty());
  EXPECT_TRUE(l.ByKind().empty());
}

TEST(Ledger, OutOfMemoryMessageNamesBytes) {
  Ledger l(2048);
  l.Reserve(HandleKind::kBuffer, "x", 2000);
  try {
    l.Reserve(HandleKind::kBuffer, "session:s1", 49);
    FAIL() << "expected out of memory";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kOutOfMemory);
    std::string msg = e.what();
    EXPECT_NE(msg.find("requested 49 bytes for session:s1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("48 bytes free"), std::string::npos) << msg;
    EXPECT_NE(msg.find("of 2048 bytes (2.00 KiB)"), std::string::npos) << msg;
  }
}

TEST(Ledger, KindsOwnersAndHandles) {
  Ledger l(1 << 20);
  l.AddHandle(HandleKind::kModel, "model");
  l.AddHandle(HandleKind::kContext, "session:a");
  l.Reserve(HandleKind::kContext, "session:a", 100);
  auto owners = l.ByOwner();
  ASSERT_EQ(owners.size(), 2u);
  EXPECT_EQ(owners[0].name, "model");
  EXPECT_EQ(owners[0].live_handles, 1);
  EXPECT_EQ(owners[1].name, "session:a");
  EXPECT_EQ(owners[1].used_bytes, 100u);
  auto kinds = l.ByKind();
  ASSERT_EQ(kinds.size(), 2u);
  EXPECT_EQ(kinds[0].name, "context");
  EXPECT_EQ(kinds[1].name, "model");
  EXPECT_EQ(l.Totals().live_handles, 2);
  l.Release(HandleKind::kContext, "session:a", 100);
  l.RemoveHandle(HandleKind::kContext, "session:a");
  l.RemoveHandle(HandleKind::kModel, "model");
  EXPECT_EQ(l.Totals().live_handles, 0);
  EXPECT_TRUE(l.ByOwner().empty());
}

TEST(Ledger, FormatBytes) {
  EXPECT_EQ(FormatBytes(0), "0 bytes");
  EXPECT_EQ(FormatBytes(1023), "1023 bytes");
  EXPECT_EQ(FormatBytes(1536), "1536 bytes (1.50 KiB)");
  EXPECT_EQ(FormatBytes(13500000000ull), "13500000000 bytes (12.57 GiB)");
}

}  // namespace
}  // namespace dm

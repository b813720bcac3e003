#include "core/ledger.h"

#include <gtest/gtest.h>

#include <utility>

namespace dm {
namespace {

TEST(Ledger, ReserveReleaseIsExact) {
  Ledger l(1000);
  l.Reserve(HandleKind::kEngine, "model:decoder", 600).Commit();
  l.Reserve(HandleKind::kStream, "session:a", 399).Commit();
  EXPECT_EQ(l.Totals().used_bytes, 999u);
  EXPECT_EQ(l.FreeBytes(), 1u);
  l.Reserve(HandleKind::kStream, "session:a", 1).Commit();
  EXPECT_EQ(l.FreeBytes(), 0u);
  EXPECT_THROW(l.Reserve(HandleKind::kStream, "session:b", 1).Commit(), Error);
  auto kinds = l.ByKind();
  ASSERT_EQ(kinds.size(), 2u);
  EXPECT_EQ(kinds[0].name, "engine");
  EXPECT_EQ(kinds[0].used_bytes, 600u);
  EXPECT_EQ(kinds[1].name, "stream");
  EXPECT_EQ(kinds[1].used_bytes, 400u);
  EXPECT_EQ(kinds[1].peak_bytes, 400u);
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
  l.Reserve(HandleKind::kBuffer, "x", 2000).Commit();
  try {
    l.Reserve(HandleKind::kBuffer, "session:s1", 49).Commit();
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
  l.Reserve(HandleKind::kContext, "session:a", 100).Commit();
  auto owners = l.ByOwner();
  ASSERT_EQ(owners.size(), 2u);
  EXPECT_EQ(owners[0].name, "model");
  EXPECT_EQ(owners[0].live_handles, 1);
  EXPECT_EQ(owners[1].name, "session:a");
  EXPECT_EQ(owners[1].used_bytes, 100u);
  auto kinds = l.ByKind();
  ASSERT_EQ(kinds.size(), 2u);
  EXPECT_EQ(kinds[0].name, "context");
  EXPECT_EQ(kinds[0].used_bytes, 100u);
  EXPECT_EQ(kinds[0].live_handles, 1);
  EXPECT_EQ(kinds[1].name, "model");
  EXPECT_EQ(kinds[1].used_bytes, 0u) << "a handle without bytes";
  EXPECT_EQ(kinds[1].live_handles, 1);
  EXPECT_EQ(l.Totals().live_handles, 2);
  l.Release(HandleKind::kContext, "session:a", 100);
  l.RemoveHandle(HandleKind::kContext, "session:a");
  l.RemoveHandle(HandleKind::kModel, "model");
  EXPECT_EQ(l.Totals().live_handles, 0);
  EXPECT_TRUE(l.ByOwner().empty());
  EXPECT_TRUE(l.ByKind().empty());
}

// A raw allocation that fails after its bytes were admitted (the reservation is destroyed
// uncommitted) moves only the failure count: used, peak, allocations and frees, and every
// per-kind and per-owner entry, are as they were.
TEST(Ledger, CancelledReservationMovesOnlyTheFailureCount) {
  Ledger l(1000);
  l.Reserve(HandleKind::kBuffer, "session:a", 100).Commit();
  const LedgerTotals before = l.Totals();
  {
    Ledger::Reservation in_flight = l.Reserve(HandleKind::kEngine, "model:x", 800);
    EXPECT_EQ(l.FreeBytes(), 100u) << "admitted bytes are not free";
    EXPECT_EQ(l.Totals().used_bytes, 100u) << "... and not used before the commit";
    EXPECT_THROW(l.Reserve(HandleKind::kBuffer, "session:b", 101).Commit(), Error)
        << "admission counts the bytes in flight";
    // The raw allocation throws here: `in_flight` is destroyed uncommitted.
  }
  const LedgerTotals after = l.Totals();
  EXPECT_EQ(after.used_bytes, before.used_bytes);
  EXPECT_EQ(after.peak_bytes, before.peak_bytes);
  EXPECT_EQ(after.allocations, before.allocations);
  EXPECT_EQ(after.frees, before.frees);
  EXPECT_EQ(after.failed, before.failed + 2) << "the refusal and the cancelled reservation";
  EXPECT_EQ(l.FreeBytes(), 900u);
  auto kinds = l.ByKind();
  ASSERT_EQ(kinds.size(), 1u);
  EXPECT_EQ(kinds[0].name, "buffer");
  EXPECT_EQ(kinds[0].used_bytes, 100u);
  auto owners = l.ByOwner();
  ASSERT_EQ(owners.size(), 1u);
  EXPECT_EQ(owners[0].name, "session:a");
  l.Release(HandleKind::kBuffer, "session:a", 100);
}

// The peak is the high-water mark of memory handed out, never of bytes merely in flight.
TEST(Ledger, PeakCountsOnlyCommittedBytes) {
  Ledger l(100);
  Ledger::Reservation a = l.Reserve(HandleKind::kBuffer, "a", 60);
  {
    Ledger::Reservation b = l.Reserve(HandleKind::kBuffer, "b", 30);
    a.Commit();
    EXPECT_EQ(l.Totals().peak_bytes, 60u) << "b is admitted but not handed out";
  }
  LedgerTotals t = l.Totals();
  EXPECT_EQ(t.used_bytes, 60u);
  EXPECT_EQ(t.peak_bytes, 60u);
  EXPECT_EQ(t.allocations, 1u);
  EXPECT_EQ(t.failed, 1u);
  auto kinds = l.ByKind();
  ASSERT_EQ(kinds.size(), 1u);
  EXPECT_EQ(kinds[0].used_bytes, 60u);
  EXPECT_EQ(kinds[0].peak_bytes, 60u);
  l.Release(HandleKind::kBuffer, "a", 60);
}

// A moved-from reservation neither commits nor cancels; the one it moved to does.
TEST(Ledger, ReservationMovesOnce) {
  Ledger l(100);
  {
    Ledger::Reservation first = l.Reserve(HandleKind::kContext, "s", 10);
    Ledger::Reservation second(std::move(first));
    first.Commit();  // moved from: does nothing
    EXPECT_EQ(l.Totals().allocations, 0u);
    second.Commit();
    second.Commit();  // committed: does nothing more
  }
  LedgerTotals t = l.Totals();
  EXPECT_EQ(t.used_bytes, 10u);
  EXPECT_EQ(t.allocations, 1u);
  EXPECT_EQ(t.failed, 0u);
  l.Release(HandleKind::kContext, "s", 10);
  EXPECT_EQ(l.Totals().used_bytes, 0u);
}

TEST(Ledger, FormatBytes) {
  EXPECT_EQ(FormatBytes(0), "0 bytes");
  EXPECT_EQ(FormatBytes(1023), "1023 bytes");
  EXPECT_EQ(FormatBytes(1536), "1536 bytes (1.50 KiB)");
  EXPECT_EQ(FormatBytes(13500000000ull), "13500000000 bytes (12.57 GiB)");
}

}  // namespace
}  // namespace dm

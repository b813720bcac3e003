// The ledger: every byte and every handle on a device, exact to the byte.
//
// "Nothing leaked" is a number: tests compare the ledger before and after a session
// (totals, per handle kind, per owner tag). Sizes are the exact bytes requested, not the
// rounded sizes the allocator hands out, so expectations in tests are simple sums.
//
// An allocation is two steps around the raw allocation: Reserve admits the bytes against
// the capacity (so concurrent allocations cannot overcommit it), and the Reservation it
// returns is committed once the memory exists. Only a commit counts: used bytes, peaks and
// the allocation count move then. A raw allocation that fails leaves the reservation
// uncommitted, and its destructor gives the bytes back and counts one failure, so a failed
// allocation never shows in peak, allocations or frees (and an in-flight one that later
// fails never raised a peak).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"

namespace dm {

// The kinds of handle a device can hold. Bytes are attributed to the kind of the object
// that asked for them (an engine's weights count as "engine", a buffer a caller allocated
// through the C API as "buffer").
enum class HandleKind : int {
  kBuffer = 0,
  kEngine,
  kContext,
  kModel,
  kStream,
  kSession,
  kStaging,
  kCount
};
const char* HandleKindName(HandleKind kind);

struct LedgerEntry {
  std::string name;
  uint64_t used_bytes = 0;
  uint64_t peak_bytes = 0;
  int64_t live_handles = 0;
};

struct LedgerTotals {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t peak_bytes = 0;
  uint64_t allocations = 0;
  uint64_t frees = 0;
  uint64_t failed = 0;
  int64_t live_handles = 0;
};

class Ledger {
 public:
  explicit Ledger(uint64_t capacity) : capacity_(capacity) {}
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Bytes admitted against the capacity but not handed out yet. Commit() once the memory
  // exists; destroyed uncommitted (the raw allocation threw), it cancels: the bytes are
  // free again and the ledger counts one failure. Move-only; the ledger must outlive it.
  class [[nodiscard]] Reservation {
   public:
    Reservation(Reservation&& other) noexcept;
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    Reservation& operator=(Reservation&&) = delete;
    ~Reservation();

    // Counts the allocation: used bytes (total, kind, owner), peaks and allocations.
    void Commit() noexcept;

   private:
    friend class Ledger;
    Reservation(Ledger* ledger, LedgerEntry* kind, LedgerEntry* owner, uint64_t bytes)
        : ledger_(ledger), kind_(kind), owner_(owner), bytes_(bytes) {}

    Ledger* ledger_;  // nullptr once committed or moved from
    LedgerEntry* kind_;
    LedgerEntry* owner_;
    uint64_t bytes_;
  };

  // Admits `bytes` for (kind, owner) or throws kOutOfMemory naming the bytes asked and free
  // (counting one failure). Bytes reserved and not yet committed count against the free
  // capacity but not as used.
  Reservation Reserve(HandleKind kind, const std::string& owner, uint64_t bytes);
  // Gives back the bytes of a committed allocation and counts one free.
  void Release(HandleKind kind, const std::string& owner, uint64_t bytes);
  // Counts a refused allocation that never reached Reserve (e.g. an injected fault).
  void CountFailure();

  void AddHandle(HandleKind kind, const std::string& owner);
  void RemoveHandle(HandleKind kind, const std::string& owner);

  LedgerTotals Totals() const;
  std::vector<LedgerEntry> ByKind() const;
  std::vector<LedgerEntry> ByOwner() const;
  void ResetPeak();
  uint64_t FreeBytes() const;
  uint64_t capacity() const { return capacity_; }

 private:
  static void Grow(LedgerEntry& e, uint64_t bytes);
  static std::vector<LedgerEntry> Live(const std::map<std::string, LedgerEntry>& m);
  uint64_t FreeBytesLocked() const { return capacity_ - totals_.used_bytes - reserved_; }

  const uint64_t capacity_;
  mutable std::mutex mu_;
  LedgerTotals totals_;
  uint64_t reserved_ = 0;  // admitted by Reserve, not yet committed or cancelled
  // Entries are never erased (Live() skips empty ones), so a Reservation may point at them.
  std::map<std::string, LedgerEntry> kinds_;
  std::map<std::string, LedgerEntry> owners_;
};

// Formats a byte count for messages: "1536 bytes (1.50 KiB)".
std::string FormatBytes(uint64_t bytes);

}  // namespace dm

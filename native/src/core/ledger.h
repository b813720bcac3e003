// The ledger: every byte and every handle on a device, exact to the byte.
//
// "Nothing leaked" is a number: tests compare the ledger before and after a session
// (totals, per handle kind, per owner tag). Sizes are the exact bytes requested, not the
// rounded sizes the allocator hands out, so expectations in tests are simple sums.
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

  // Admits `bytes` for (kind, owner) or throws kOutOfMemory naming the bytes asked and free.
  void Reserve(HandleKind kind, const std::string& owner, uint64_t bytes);
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

  const uint64_t capacity_;
  mutable std::mutex mu_;
  LedgerTotals totals_;
  std::map<std::string, LedgerEntry> kinds_;
  std::map<std::string, LedgerEntry> owners_;
};

// Formats a byte count for messages: "1536 bytes (1.50 KiB)".
std::string FormatBytes(uint64_t bytes);

}  // namespace dm

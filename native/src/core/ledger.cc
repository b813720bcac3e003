#include "core/ledger.h"

namespace dm {

const char* HandleKindName(HandleKind kind) {
  switch (kind) {
    case HandleKind::kBuffer: return "buffer";
    case HandleKind::kEngine: return "engine";
    case HandleKind::kContext: return "context";
    case HandleKind::kModel: return "model";
    case HandleKind::kStream: return "stream";
    case HandleKind::kSession: return "session";
    case HandleKind::kStaging: return "staging";
    case HandleKind::kCount: break;
  }
  return "unknown";
}

std::string FormatBytes(uint64_t bytes) {
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return Format("%llu bytes", static_cast<unsigned long long>(bytes));
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 1024.0 && u < 3) {
    v /= 1024.0;
    ++u;
  }
  return Format("%llu bytes (%.2f %s)", static_cast<unsigned long long>(bytes), v, units[u]);
}

void Ledger::Grow(LedgerEntry& e, uint64_t bytes) {
  e.used_bytes += bytes;
  if (e.used_bytes > e.peak_bytes) e.peak_bytes = e.used_bytes;
}

Ledger::Reservation Ledger::Reserve(HandleKind kind, const std::string& owner, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t free = FreeBytesLocked();
  if (bytes > free) {
    totals_.failed++;
    throw Error(Status::kOutOfMemory, "out of memory: requested " + FormatBytes(bytes) + " for " +
                                          owner + ", " + FormatBytes(free) + " free of " +
                                          FormatBytes(capacity_));
  }
  // The entries first (inserting may throw bad_alloc): nothing is admitted until they exist.
  auto& k = kinds_[HandleKindName(kind)];
  k.name = HandleKindName(kind);
  auto& o = owners_[owner];
  o.name = owner;
  reserved_ += bytes;
  return Reservation(this, &k, &o, bytes);
}

Ledger::Reservation::Reservation(Reservation&& other) noexcept
    : ledger_(other.ledger_), kind_(other.kind_), owner_(other.owner_), bytes_(other.bytes_) {
  other.ledger_ = nullptr;
}

Ledger::Reservation::~Reservation() {
  if (ledger_ == nullptr) return;
  std::lock_guard<std::mutex> lock(ledger_->mu_);
  ledger_->reserved_ -= bytes_;
  ledger_->totals_.failed++;
}

void Ledger::Reservation::Commit() noexcept {
  if (ledger_ == nullptr) return;
  std::lock_guard<std::mutex> lock(ledger_->mu_);
  LedgerTotals& t = ledger_->totals_;
  ledger_->reserved_ -= bytes_;
  t.used_bytes += bytes_;
  if (t.used_bytes > t.peak_bytes) t.peak_bytes = t.used_bytes;
  t.allocations++;
  Grow(*kind_, bytes_);
  Grow(*owner_, bytes_);
  ledger_ = nullptr;
}

void Ledger::Release(HandleKind kind, const std::string& owner, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  totals_.used_bytes -= bytes;
  totals_.frees++;
  kinds_[HandleKindName(kind)].used_bytes -= bytes;
  owners_[owner].used_bytes -= bytes;
}

void Ledger::CountFailure() {
  std::lock_guard<std::mutex> lock(mu_);
  totals_.failed++;
}

void Ledger::AddHandle(HandleKind kind, const std::string& owner) {
  std::lock_guard<std::mutex> lock(mu_);
  totals_.live_handles++;
  auto& k = kinds_[HandleKindName(kind)];
  k.name = HandleKindName(kind);
  k.live_handles++;
  auto& o = owners_[owner];
  o.name = owner;
  o.live_handles++;
}

void Ledger::RemoveHandle(HandleKind kind, const std::string& owner) {
  std::lock_guard<std::mutex> lock(mu_);
  totals_.live_handles--;
  kinds_[HandleKindName(kind)].live_handles--;
  owners_[owner].live_handles--;
}

LedgerTotals Ledger::Totals() const {
  std::lock_guard<std::mutex> lock(mu_);
  LedgerTotals t = totals_;
  t.capacity_bytes = capacity_;
  return t;
}

std::vector<LedgerEntry> Ledger::Live(const std::map<std::string, LedgerEntry>& m) {
  std::vector<LedgerEntry> out;
  for (const auto& [name, e] : m) {
    if (e.used_bytes != 0 || e.live_handles != 0) out.push_back(e);
  }
  return out;
}

std::vector<LedgerEntry> Ledger::ByKind() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Live(kinds_);
}

std::vector<LedgerEntry> Ledger::ByOwner() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Live(owners_);
}

void Ledger::ResetPeak() {
  std::lock_guard<std::mutex> lock(mu_);
  totals_.peak_bytes = totals_.used_bytes;
  for (auto& [n, e] : kinds_) e.peak_bytes = e.used_bytes;
  for (auto& [n, e] : owners_) e.peak_bytes = e.used_bytes;
}

uint64_t Ledger::FreeBytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return FreeBytesLocked();
}

}  // namespace dm

// Named fault points with hit counters (see points.def for the list).
//
// A registry is an object, not process state: each device is given one (or none), so tests
// and the daemon arm points independently. Hitting a point is cheap (a hash lookup and an
// atomic increment under a mutex) and happens only on cold paths: creation, loading,
// session start and teardown — never per tick.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"

namespace dm {

// Every declared point, in points.def order. A constant array rather than a lazily built
// container, so listing the points can neither allocate nor throw (the C API's
// dm_faults_point_count and dm_faults_point_name read it directly).
inline constexpr const char* kFaultPoints[] = {
#define DM_FAULT_POINT(name, where) name,
#include "faults/points.def"
#undef DM_FAULT_POINT
};
inline constexpr size_t kFaultPointCount = sizeof kFaultPoints / sizeof kFaultPoints[0];

class FaultRegistry {
 public:
  enum class Action { kOff, kError, kOom, kHang };

  // Validates and applies `spec` (grammar in demon.h). Throws kInvalidArgument or
  // kNotFound on a malformed spec or an undeclared point, changing nothing.
  explicit FaultRegistry(const std::string& spec = "");
  void Arm(const std::string& spec);
  void Reset();
  // Disarms every point and releases hung hits; hit counters are kept. For the handle's
  // free: devices that share the registry keep counting but nothing fires any more.
  void DisarmAll();

  // Records a hit; throws the injected error when the point fires.
  void Hit(const char* point);
  // Hits so far; -1 for an undeclared point.
  int64_t Hits(const char* point) const;
  // The point's arming (throws kNotFound for an undeclared point).
  void ArmingOf(const char* point, Action* action, int64_t* nth) const;

  static bool IsDeclared(const std::string& point);

 private:
  struct Arming {
    Action action = Action::kOff;
    int64_t nth = 0;  // 0 = every hit
  };
  struct State {
    Arming arming;
    int64_t hits = 0;
  };
  static std::vector<std::pair<std::string, Arming>> Parse(const std::string& spec);

  mutable std::mutex mu_;
  std::condition_variable rearmed_;  // wakes hung points when arming changes
  uint64_t generation_ = 0;          // bumped by Arm and Reset
  std::unordered_map<std::string, State> points_;
};

// Hits `point` on `faults` if a registry is attached; a no-op otherwise.
inline void HitFault(FaultRegistry* faults, const char* point) {
  if (faults != nullptr) faults->Hit(point);
}

}  // namespace dm

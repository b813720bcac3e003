#include "faults/faults.h"

#include <chrono>
#include <cstdlib>

namespace dm {
namespace faults_detail {

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\n");
  return s.substr(b, e - b + 1);
}

}  // namespace faults_detail

bool FaultRegistry::IsDeclared(const std::string& point) {
  for (const char* p : kFaultPoints) {
    if (point == p) return true;
  }
  return false;
}

FaultRegistry::FaultRegistry(const std::string& spec) {
  for (const char* p : kFaultPoints) points_.emplace(p, State{});
  Arm(spec);
}

std::vector<std::pair<std::string, FaultRegistry::Arming>> FaultRegistry::Parse(
    const std::string& spec) {
  std::vector<std::pair<std::string, Arming>> out;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string::npos) comma = spec.size();
    std::string item = faults_detail::Trim(spec.substr(pos, comma - pos));
    pos = comma + 1;
    if (item.empty()) {
      if (comma == spec.size()) break;
      continue;
    }
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      Fail(Status::kInvalidArgument,
           "fault spec item %s: want point=action[@N] with action error, oom, hang or off",
           item.c_str());
    }
    std::string name = faults_detail::Trim(item.substr(0, eq));
    std::string action = faults_detail::Trim(item.substr(eq + 1));
    if (!IsDeclared(name)) {
      Fail(Status::kNotFound, "unknown fault point %s (see docs/faultpoints.md)", name.c_str());
    }
    Arming arming;
    size_t at = action.find('@');
    if (at != std::string::npos) {
      std::string n = action.substr(at + 1);
      action = action.substr(0, at);
      char* end = nullptr;
      long long v = n.empty() ? 0 : std::strtoll(n.c_str(), &end, 10);
      if (n.empty() || *end != '\0' || v < 1) {
        Fail(Status::kInvalidArgument, "fault spec item %s: @N needs a whole number >= 1",
             item.c_str());
      }
      arming.nth = v;
    }
    if (action == "error") {
      arming.action = Action::kError;
    } else if (action == "oom") {
      arming.action = Action::kOom;
    } else if (action == "hang") {
      arming.action = Action::kHang;
    } else if (action == "off") {
      arming.action = Action::kOff;
    } else {
      Fail(Status::kInvalidArgument,
           "fault spec item %s: unknown action %s (want error, oom, hang or off)", item.c_str(),
           action.c_str());
    }
    out.emplace_back(name, arming);
  }
  return out;
}

void FaultRegistry::Arm(const std::string& spec) {
  auto items = Parse(spec);  // validate everything before changing anything
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, arming] : items) points_[name].arming = arming;
  generation_++;
  rearmed_.notify_all();
}

void FaultRegistry::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, state] : points_) state = State{};
  generation_++;
  rearmed_.notify_all();
}

void FaultRegistry::DisarmAll() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, state] : points_) state.arming = Arming{};
  generation_++;
  rearmed_.notify_all();
}

void FaultRegistry::Hit(const char* point) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = points_.find(point);
  if (it == points_.end()) Fail(Status::kNotFound, "unknown fault point %s", point);
  State& st = it->second;
  st.hits++;
  bool fire = st.arming.action != Action::kOff && (st.arming.nth == 0 || st.arming.nth == st.hits);
  if (!fire) return;
  if (st.arming.action == Action::kHang) {
    // Simulates a stuck call (a hung kernel, a wedged driver) so watchdogs can be tested:
    // blocks until the registry is re-armed or reset, at most ten minutes.
    const uint64_t gen = generation_;
    rearmed_.wait_for(lock, std::chrono::minutes(10), [&] { return generation_ != gen; });
    return;
  }
  if (st.arming.action == Action::kOom) {
    Fail(Status::kOutOfMemory, "out of memory (injected at fault point %s, hit %lld)", point,
         static_cast<long long>(st.hits));
  }
  Fail(Status::kFaultInjected, "fault injected at %s (hit %lld)", point,
       static_cast<long long>(st.hits));
}

void FaultRegistry::ArmingOf(const char* point, Action* action, int64_t* nth) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = points_.find(point);
  if (it == points_.end()) Fail(Status::kNotFound, "unknown fault point %s", point);
  *action = it->second.arming.action;
  *nth = it->second.arming.nth;
}

int64_t FaultRegistry::Hits(const char* point) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = points_.find(point);
  return it == points_.end() ? -1 : it->second.hits;
}

}  // namespace dm

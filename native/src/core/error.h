// Errors inside the shim are exceptions of one type carrying a public status code.
// They never cross the C API: every extern "C" entry point maps them (see capi/guard.h).
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>

namespace dm {

// Mirrors the DM_* status codes of demon.h (kept numerically identical).
enum class Status : int {
  kOk = 0,
  kInvalidArgument = 1,
  kOutOfMemory = 2,
  kNotFound = 3,
  kCorrupt = 4,      // a file or payload failed validation
  kMismatch = 5,     // a file is valid but not for this component/backend/version/profile
  kUnsupported = 6,  // e.g. a backend this build lacks
  kFaultInjected = 7,
  kState = 8,  // call not valid in the object's current state
  kCuda = 9,
  kInternal = 10,
};

class Error : public std::runtime_error {
 public:
  Error(Status status, std::string msg) : std::runtime_error(std::move(msg)), status_(status) {}
  Status status() const { return status_; }

 private:
  Status status_;
};

// Formats like printf into a std::string (messages are short; 512 bytes cross the C API).
template <typename... Args>
std::string Format(const char* fmt, Args... args) {
  char buf[1024];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

template <typename... Args>
[[noreturn]] void Fail(Status status, const char* fmt, Args... args) {
  throw Error(status, Format(fmt, args...));
}

inline void Check(bool ok, Status status, const char* msg) {
  if (!ok) throw Error(status, msg);
}

}  // namespace dm

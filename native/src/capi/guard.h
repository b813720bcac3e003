// The exception barrier every extern "C" function goes through (STYLE item 3).
#pragma once

#include <cstdio>
#include <cstring>
#include <new>
#include <utility>

#include "core/error.h"
#include "demon/demon.h"
#include "device/cuda_driver.h"

namespace dm {

inline int SetError(dm_error* err, Status status, const char* msg) {
  if (err != nullptr) {
    err->code = static_cast<int>(status);
    std::strncpy(err->msg, msg, sizeof err->msg - 1);
    err->msg[sizeof err->msg - 1] = '\0';
  }
  return static_cast<int>(status);
}

inline int ClearError(dm_error* err) {
  if (err != nullptr) {
    err->code = DM_OK;
    err->msg[0] = '\0';
  }
  return DM_OK;
}

// Runs fn and maps whatever it throws to a status code and message.
template <typename Fn>
int Guard(dm_error* err, Fn&& fn) noexcept {
  try {
    std::forward<Fn>(fn)();
    return ClearError(err);
  } catch (const CudaError& e) {
    // The driver's failure: DM_ERR_CUDA, or DM_ERR_OUT_OF_MEMORY for
    // CUDA_ERROR_OUT_OF_MEMORY (its status() says which); the message names the CUresult.
    return SetError(err, e.status(), e.what());
  } catch (const Error& e) {
    return SetError(err, e.status(), e.what());
  } catch (const std::bad_alloc&) {
    return SetError(err, Status::kOutOfMemory, "out of memory: host allocation failed (bad_alloc)");
  } catch (const std::exception& e) {
    // Formatted in place: building a std::string here could throw out of a noexcept
    // function when host memory is what ran out.
    if (err != nullptr) {
      err->code = static_cast<int>(Status::kInternal);
      std::snprintf(err->msg, sizeof err->msg, "internal error: %s", e.what());
    }
    return static_cast<int>(Status::kInternal);
  } catch (...) {
    return SetError(err, Status::kInternal, "internal error: unknown exception");
  }
}

// The barrier for the few entry points that return a value instead of a dm_status (sizes,
// counts, hit counters): runs fn and returns what it returns, or `on_error` if it throws,
// because such a function has no dm_error to report through. demon.h documents each
// function's `on_error` as its "nothing" value.
template <typename T, typename Fn>
T GuardValue(T on_error, Fn&& fn) noexcept {
  try {
    return std::forward<Fn>(fn)();
  } catch (...) {
    return on_error;
  }
}

// The barrier for void entry points that "never fail" (resets): what they call can throw
// only on a broken invariant (std::mutex::lock's std::system_error), and there is nothing
// to report it through, so it is swallowed rather than let cross into C.
template <typename Fn>
void GuardVoid(Fn&& fn) noexcept {
  try {
    std::forward<Fn>(fn)();
  } catch (...) {
  }
}

template <typename T>
void CheckOut(T** out, const char* what) {
  if (out == nullptr) Fail(Status::kInvalidArgument, "%s: out-pointer is NULL", what);
}

template <typename T>
void CheckHandle(const T* h, const char* what) {
  if (h == nullptr) Fail(Status::kInvalidArgument, "%s: handle is NULL", what);
}

}  // namespace dm

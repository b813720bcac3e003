// The exception barrier every extern "C" function goes through (STYLE item 3).
#pragma once

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
    return SetError(err, Status::kInternal, (std::string("internal error: ") + e.what()).c_str());
  } catch (...) {
    return SetError(err, Status::kInternal, "internal error: unknown exception");
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

// The CUDA driver API, loaded at run time.
//
// demon never links against libcuda and never includes NVIDIA's headers: the shim builds
// on machines with no CUDA at all (CI), and a daemon started with `--device host` must not
// need a driver. CudaDriver dlopen()s "libcuda.so.1" (or $DEMON_CUDA_LIBRARY, which the
// tests point at a fake driver built from native/tests/fake_cuda/fake_cuda.c) and resolves
// with dlsym only the entry points the cuda device uses. The few types and constants below
// are written from the public driver API reference (ABI only: CUresult is an int, handles
// are pointers to opaque structs, CUdeviceptr is a 64-bit integer on 64-bit hosts).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "core/error.h"

namespace dm {
namespace cu {

using Result = int;                        // CUresult
using DeviceId = int;                      // CUdevice
using Ctx = struct CUctx_st*;              // CUcontext
using DevPtr = unsigned long long;         // CUdeviceptr (64-bit hosts)
using StreamHandle = struct CUstream_st*;  // CUstream
using EventHandle = struct CUevent_st*;    // CUevent
struct Uuid {                              // CUuuid
  unsigned char bytes[16];
};

constexpr Result kSuccess = 0;                   // CUDA_SUCCESS
constexpr Result kErrorOutOfMemory = 2;          // CUDA_ERROR_OUT_OF_MEMORY
constexpr int kAttrComputeCapabilityMajor = 75;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttrComputeCapabilityMinor = 76;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
constexpr int kAttrMemoryPoolsSupported = 115;   // CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED
constexpr unsigned kStreamNonBlocking = 1;       // CU_STREAM_NON_BLOCKING
constexpr unsigned kEventDefault = 0;            // CU_EVENT_DEFAULT

}  // namespace cu

// A failure the CUDA driver reported. The message carries the operation, the driver's
// error name and string ("cuMemAlloc_v2 of 1.00 GiB on cuda:0: CUDA_ERROR_OUT_OF_MEMORY
// (out of memory)"). CUDA_ERROR_OUT_OF_MEMORY maps to Status::kOutOfMemory, so admission
// and callers treat a driver refusal like a ledger refusal (errors.Is(err,
// trt.ErrOutOfMemory) in Go); every other driver error is Status::kCuda (DM_ERR_CUDA).
class CudaError : public Error {
 public:
  CudaError(cu::Result result, std::string msg)
      : Error(result == cu::kErrorOutOfMemory ? Status::kOutOfMemory : Status::kCuda,
              std::move(msg)),
        result_(result) {}
  // The driver's CUresult.
  cu::Result result() const { return result_; }

 private:
  cu::Result result_;
};

// The driver library and the entry points demon uses. Created by Load(); shared by the
// devices and RAII objects that call into it. Thread-safe (the driver API is).
struct CudaDriver {
  // Loads the driver: $DEMON_CUDA_LIBRARY if set and non-empty, else "libcuda.so.1".
  // Throws Error(kCuda) "no CUDA driver (libcuda.so.1 not found: <dlerror>)" when the library
  // cannot be loaded, and names a missing entry point when one cannot be resolved.
  static std::shared_ptr<CudaDriver> Load();
  ~CudaDriver();
  CudaDriver(const CudaDriver&) = delete;
  CudaDriver& operator=(const CudaDriver&) = delete;

  // "CUDA_ERROR_OUT_OF_MEMORY (out of memory)" for r, from the driver's own tables.
  std::string Describe(cu::Result r) const;
  // Throws CudaError("<what>: <name> (<string>)") unless r is CUDA_SUCCESS.
  void Check(cu::Result r, const char* what) const;

  std::string path;     // what was dlopen()ed
  void* lib = nullptr;  // dlopen handle (RTLD_NODELETE: see cuda_driver.cc)

  cu::Result (*cuInit)(unsigned flags) = nullptr;
  cu::Result (*cuDriverGetVersion)(int* version) = nullptr;
  cu::Result (*cuDeviceGetCount)(int* count) = nullptr;
  cu::Result (*cuDeviceGet)(cu::DeviceId* dev, int ordinal) = nullptr;
  cu::Result (*cuDeviceGetName)(char* name, int len, cu::DeviceId dev) = nullptr;
  cu::Result (*cuDeviceGetAttribute)(int* value, int attribute, cu::DeviceId dev) = nullptr;
  // The GPU's UUID (CUDA 9.2+), the same one NVML reports as "GPU-…": how telemetry finds
  // the NVML device that is this CUDA ordinal. Optional: null when the driver lacks it.
  cu::Result (*cuDeviceGetUuid)(cu::Uuid* uuid, cu::DeviceId dev) = nullptr;
  cu::Result (*cuDevicePrimaryCtxRetain)(cu::Ctx* ctx, cu::DeviceId dev) = nullptr;
  cu::Result (*cuDevicePrimaryCtxRelease)(cu::DeviceId dev) = nullptr;
  cu::Result (*cuCtxSetCurrent)(cu::Ctx ctx) = nullptr;
  cu::Result (*cuMemGetInfo)(size_t* free, size_t* total) = nullptr;
  cu::Result (*cuMemAlloc)(cu::DevPtr* ptr, size_t bytes) = nullptr;
  cu::Result (*cuMemFree)(cu::DevPtr ptr) = nullptr;
  // Stream-ordered allocation (CUDA 11.2+). Optional: null when the driver lacks them.
  cu::Result (*cuMemAllocAsync)(cu::DevPtr* ptr, size_t bytes, cu::StreamHandle s) = nullptr;
  cu::Result (*cuMemFreeAsync)(cu::DevPtr ptr, cu::StreamHandle s) = nullptr;
  cu::Result (*cuMemAllocHost)(void** ptr, size_t bytes) = nullptr;
  cu::Result (*cuMemFreeHost)(void* ptr) = nullptr;
  // Every memset and copy runs on the device's own stream (see cuda_device.cc).
  cu::Result (*cuMemsetD8Async)(cu::DevPtr dst, unsigned char value, size_t n,
                                cu::StreamHandle s) = nullptr;
  cu::Result (*cuMemcpyHtoDAsync)(cu::DevPtr dst, const void* src, size_t n,
                                  cu::StreamHandle s) = nullptr;
  cu::Result (*cuMemcpyDtoHAsync)(void* dst, cu::DevPtr src, size_t n,
                                  cu::StreamHandle s) = nullptr;
  cu::Result (*cuStreamCreate)(cu::StreamHandle* s, unsigned flags) = nullptr;
  cu::Result (*cuStreamDestroy)(cu::StreamHandle s) = nullptr;
  cu::Result (*cuStreamSynchronize)(cu::StreamHandle s) = nullptr;
  cu::Result (*cuEventCreate)(cu::EventHandle* e, unsigned flags) = nullptr;
  cu::Result (*cuEventRecord)(cu::EventHandle e, cu::StreamHandle s) = nullptr;
  cu::Result (*cuEventSynchronize)(cu::EventHandle e) = nullptr;
  cu::Result (*cuEventElapsedTime)(float* ms, cu::EventHandle start, cu::EventHandle end) = nullptr;
  cu::Result (*cuEventDestroy)(cu::EventHandle e) = nullptr;
  cu::Result (*cuGetErrorName)(cu::Result r, const char** name) = nullptr;
  cu::Result (*cuGetErrorString)(cu::Result r, const char** str) = nullptr;

 private:
  CudaDriver() = default;
};

}  // namespace dm

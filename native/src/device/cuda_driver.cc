// Loading the CUDA driver API at run time (see cuda_driver.h for why).
//
// The library is opened with RTLD_NODELETE: dlclose() then only drops our reference and
// never unmaps the driver, whose helper threads may outlive the last context we release.
// Each device holds the driver through a shared_ptr, so the function pointers stay valid
// for as long as any object that calls them.
#include "device/cuda_driver.h"

#include <dlfcn.h>

#include <cstdlib>
#include <initializer_list>

namespace dm {
namespace cuda_detail {

// Resolves the first of `names` the library exports into *fn, or throws naming them all.
template <typename Fn>
void Resolve(void* lib, const std::string& path, Fn* fn, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (void* p = dlsym(lib, n)) {
      *fn = reinterpret_cast<Fn>(p);
      return;
    }
  }
  Fail(Status::kCuda, "CUDA driver %s lacks the entry point %s (driver too old?)", path.c_str(),
       *names.begin());
}

// Resolves an optional entry point: *fn stays null when the library does not export it.
template <typename Fn>
void ResolveOptional(void* lib, Fn* fn, const char* name) {
  if (void* p = dlsym(lib, name)) *fn = reinterpret_cast<Fn>(p);
}

}  // namespace cuda_detail

std::shared_ptr<CudaDriver> CudaDriver::Load() {
  const char* env = std::getenv("DEMON_CUDA_LIBRARY");
  std::string path = (env != nullptr && env[0] != '\0') ? env : "libcuda.so.1";
  dlerror();  // clear any stale message
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (lib == nullptr) {
    const char* why = dlerror();
    Fail(Status::kCuda, "no CUDA driver (%s not found: %s)", path.c_str(),
         why != nullptr ? why : "unknown dlopen error");
  }
  std::shared_ptr<CudaDriver> d(new CudaDriver());
  d->path = path;
  d->lib = lib;
  using cuda_detail::Resolve;
  void* l = lib;
  Resolve(l, path, &d->cuInit, {"cuInit"});
  Resolve(l, path, &d->cuDriverGetVersion, {"cuDriverGetVersion"});
  Resolve(l, path, &d->cuDeviceGetCount, {"cuDeviceGetCount"});
  Resolve(l, path, &d->cuDeviceGet, {"cuDeviceGet"});
  Resolve(l, path, &d->cuDeviceGetName, {"cuDeviceGetName"});
  Resolve(l, path, &d->cuDeviceGetAttribute, {"cuDeviceGetAttribute"});
  cuda_detail::ResolveOptional(l, &d->cuDeviceGetUuid, "cuDeviceGetUuid");
  Resolve(l, path, &d->cuDevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"});
  Resolve(l, path, &d->cuDevicePrimaryCtxRelease,
          {"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"});
  Resolve(l, path, &d->cuCtxSetCurrent, {"cuCtxSetCurrent"});
  Resolve(l, path, &d->cuMemGetInfo, {"cuMemGetInfo_v2"});
  Resolve(l, path, &d->cuMemAlloc, {"cuMemAlloc_v2"});
  Resolve(l, path, &d->cuMemFree, {"cuMemFree_v2"});
  cuda_detail::ResolveOptional(l, &d->cuMemAllocAsync, "cuMemAllocAsync");
  cuda_detail::ResolveOptional(l, &d->cuMemFreeAsync, "cuMemFreeAsync");
  Resolve(l, path, &d->cuMemAllocHost, {"cuMemAllocHost_v2"});
  Resolve(l, path, &d->cuMemFreeHost, {"cuMemFreeHost"});
  Resolve(l, path, &d->cuMemsetD8Async, {"cuMemsetD8Async"});
  Resolve(l, path, &d->cuMemcpyHtoDAsync, {"cuMemcpyHtoDAsync_v2"});
  Resolve(l, path, &d->cuMemcpyDtoHAsync, {"cuMemcpyDtoHAsync_v2"});
  Resolve(l, path, &d->cuStreamCreate, {"cuStreamCreate"});
  Resolve(l, path, &d->cuStreamDestroy, {"cuStreamDestroy_v2", "cuStreamDestroy"});
  Resolve(l, path, &d->cuStreamSynchronize, {"cuStreamSynchronize"});
  Resolve(l, path, &d->cuEventCreate, {"cuEventCreate"});
  Resolve(l, path, &d->cuEventRecord, {"cuEventRecord"});
  Resolve(l, path, &d->cuEventSynchronize, {"cuEventSynchronize"});
  Resolve(l, path, &d->cuEventElapsedTime, {"cuEventElapsedTime"});
  Resolve(l, path, &d->cuEventDestroy, {"cuEventDestroy_v2", "cuEventDestroy"});
  Resolve(l, path, &d->cuGetErrorName, {"cuGetErrorName"});
  Resolve(l, path, &d->cuGetErrorString, {"cuGetErrorString"});
  return d;
}

CudaDriver::~CudaDriver() {
  if (lib != nullptr) dlclose(lib);
}

std::string CudaDriver::Describe(cu::Result r) const {
  const char* name = nullptr;
  const char* str = nullptr;
  if (cuGetErrorName == nullptr || cuGetErrorName(r, &name) != cu::kSuccess || name == nullptr) {
    name = "CUDA_ERROR_UNKNOWN_CODE";
  }
  if (cuGetErrorString == nullptr || cuGetErrorString(r, &str) != cu::kSuccess || str == nullptr) {
    str = "no description from the driver";
  }
  return Format("%s (%s, code %d)", name, str, r);
}

void CudaDriver::Check(cu::Result r, const char* what) const {
  if (r == cu::kSuccess) return;
  throw CudaError(r, std::string(what) + ": " + Describe(r));
}

}  // namespace dm

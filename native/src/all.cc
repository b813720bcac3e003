// Unity build of the shim: one translation unit that cgo compiles (through trt/shim.cc)
// and CMake builds as the demon_shim library. Add every new .cc file here.
#include "core/ledger.cc"
#include "faults/faults.cc"
#include "device/device.cc"
#include "device/host_device.cc"
#include "device/cuda_device.cc"
#include "capi/capi_core.cc"

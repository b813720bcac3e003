// Unity build of the shim: one translation unit that cgo compiles (through trt/shim.cc)
// and CMake builds as the demon_shim library. Add every new .cc file here.

// Foundation: the ledger, fault points, devices.
#include "core/ledger.cc"
#include "faults/faults.cc"
#include "device/device.cc"
#include "device/host_device.cc"
#include "device/cuda_driver.cc"
#include "device/cuda_device.cc"

// Reference model math (CPU).
#include "ref/thread_pool.cc"
#include "ref/gemm.cc"
#include "ref/oracle.cc"
#include "ref/tiny_dit.cc"
#include "ref/vae.cc"
#include "ref/semantic.cc"
#include "ref/text_encoder.cc"
#include "ref/stems.cc"

// Engines: the file container, contexts, the CPU reference backend.
#include "engine/engine_file.cc"
#include "engine/engine.cc"
#include "engine/cpu_ref_engines.cc"

// The streaming pipeline and the per-session stream.
#include "pipeline/schedule.cc"
#include "pipeline/guidance.cc"
#include "pipeline/dcw.cc"
#include "pipeline/decode.cc"
#include "pipeline/pipeline.cc"
#include "stream/stream.cc"

// The C API.
#include "capi/capi_core.cc"
#include "capi/capi_engine.cc"
#include "capi/capi_stream.cc"
#include "capi/capi_gpu.cc"

// Engines and execution contexts, the shape of TensorRT's API that every backend keeps.
//
// An Engine holds what is loaded once and shared: its weights, resident on the device in
// a block of the engine's declared footprint (so a reference engine occupies what the real
// one would). A Context is one user's activation memory, allocated through the ledger when
// it is created (TensorRT's user-managed device memory: ask the size, allocate it ourselves,
// so out-of-memory is a clean error before any state exists), plus its shapes and bindings.
// Contexts hold the engine alive, so freeing handles in any order is memory-safe; the
// ledger shows what is still held.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "device/device.h"
#include "engine/engine_file.h"
#include "ref/velocity_model.h"

namespace dm {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2, kInt32 = 3 };
size_t DTypeSize(DType t);
const char* DTypeName(DType t);

struct TensorDesc {
  std::string name;
  bool input = true;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> min, opt, max;  // per dimension; fixed where min == max
  // Per dimension: the symbol of a dynamic dimension ("B" batch, "T" latent frames, "L"
  // conditioning tokens, "S" audio samples), "" for a static one. Input dimensions that share
  // a symbol must be set to equal values (Context::Execute enforces it for every engine).
  std::vector<std::string> symbols;
};

class Context;

// The windowed-decode seam: decodes a latent window z [frames, 64] (frame-major) into
// audio [2, frames·1920] (planar). Must not allocate.
class WindowDecoder {
 public:
  virtual ~WindowDecoder() = default;
  virtual void DecodeWindow(const float* z, int frames, float* audio) const = 0;
};

// What an engine loader is told (from the validated sidecar).
struct EngineOptions {
  std::string path;
  std::string component;         // expected component
  std::string backend;           // "cpu-ref" or "tensorrt"
  std::string backend_version;   // expected backend version
  std::string owner;             // ledger owner tag, e.g. "model:decoder"
  uint64_t footprint_bytes = 0;  // declared resident bytes (0 = what the weights need)
  uint64_t context_bytes = 0;    // declared activation bytes per context (0 = what it needs)
};

class Engine : public std::enable_shared_from_this<Engine> {
 public:
  virtual ~Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const std::string& component() const { return component_; }
  const std::string& owner() const { return owner_; }
  const std::vector<TensorDesc>& io() const { return io_; }
  const TensorDesc& Tensor(const std::string& name) const;  // throws kNotFound
  const std::shared_ptr<Device>& device() const { return device_; }
  // Activation bytes one context allocates: max(declared, what the profile max needs).
  uint64_t ContextBytes() const;

  // Creates a context whose activation memory is accounted to `owner`.
  std::unique_ptr<Context> CreateContext(const std::string& owner);

  // Runs the engine on a context whose shapes are set and buffers bound.
  virtual void Run(Context& ctx) = 0;

  // In-process seams the streaming pipeline drives without per-tensor calls (null when the
  // engine is not of that kind): a decoder's velocity model and its worker pool, and a
  // windowed VAE decoder. The velocity model takes and returns fp32 host arrays whatever the
  // engine's I/O dtypes; a decoder with bf16 I/O tensors rounds those inputs and its output
  // through bf16 at this seam, exactly as Run converts its bound buffers, so a stream driving
  // the seam computes what the engine computes.
  virtual const VelocityModel* velocity_model() const { return nullptr; }
  virtual Parallel* parallel() { return nullptr; }
  virtual const WindowDecoder* window_decoder() const { return nullptr; }
  // Fills output shapes from input shapes; throws kInvalidArgument on inconsistent inputs.
  virtual void InferShapes(Context& ctx) const = 0;
  // True when Run computes on the CPU (every cpu-ref engine). On a device the CPU cannot
  // address, a context of such an engine stages its bindings and scratch through host
  // shadows (see Context). A GPU backend (TensorRT) returns false and gets device pointers.
  virtual bool RunsOnHost() const { return true; }
  // Scratch bytes the CPU math needs at the profile maximum (the host shadow's size).
  uint64_t HostScratchBytes() const { return NeededContextBytes(); }

 protected:
  Engine(std::shared_ptr<Device> device, const EngineOptions& opts);
  // Reserves the resident block: max(declared footprint, needed) bytes. Call once, after
  // the weights are parsed and before they are placed.
  void* ReserveResident(uint64_t needed);
  // Activation bytes the profile maximum needs (backend-specific).
  virtual uint64_t NeededContextBytes() const = 0;

  std::vector<TensorDesc> io_;

 private:
  std::shared_ptr<Device> device_;
  std::string component_;
  std::string owner_;
  uint64_t footprint_bytes_;
  uint64_t context_bytes_;
  HandleToken token_;                       // the engine handle on the ledger
  std::unique_ptr<DeviceBuffer> resident_;  // weights + reserve, freed before the token
};

// Staging on a device the CPU cannot address (the cuda device) for an engine that
// RunsOnHost(): the activation memory stays on the device (so the ledger and admission see
// it), and the context also holds host shadows in staging memory: one for the CPU scratch
// (HostScratchBytes) and one per bound tensor, allocated by Bind (not by Execute).
// Execute copies each input device-to-host into its shadow, runs the CPU math on the
// shadows, and copies each output host-to-device. On a host-accessible device there are
// no shadows and Binding()/scratch() are the bound pointers and the activation memory.
class Context {
 public:
  Context(std::shared_ptr<Engine> engine, const std::string& owner);
  ~Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Engine& engine() { return *engine_; }
  void SetShape(const std::string& name, const std::vector<int64_t>& dims);
  const std::vector<int64_t>& Shape(const std::string& name) const;  // empty if unset
  void SetOutputShape(const std::string& name, const std::vector<int64_t>& dims);
  void Bind(const std::string& name, void* ptr, uint64_t bytes);
  // Validates shapes (each in its profile, equal symbols equal), bindings (each at least the
  // bytes its shape and dtype need), infers outputs, runs. Throws with the tensor named.
  void Execute();

  // For engine implementations: the memory the engine computes on (a host shadow when
  // the context stages, else the bound pointer / the activation memory).
  template <typename T>
  T* Input(const std::string& name) {
    return static_cast<T*>(Binding(name));
  }
  void* Binding(const std::string& name) const;
  void* scratch() { return host_scratch_->data(); }
  uint64_t scratch_bytes() const { return host_scratch_->size(); }
  // Shared so a stream driving this context's memory keeps it alive even if the context
  // handle is freed first; the ledger keeps showing the bytes until both are gone.
  std::shared_ptr<DeviceBuffer> activation() const { return activation_; }
  // The scratch the CPU math uses: the activation memory itself, or its host shadow when
  // the context stages. Shared for the same reason as activation().
  std::shared_ptr<Block> host_scratch() const { return host_scratch_; }
  // True when bindings and scratch go through host shadows (see the class comment).
  bool staged() const { return staged_; }
  int64_t Elements(const std::string& name) const;

 private:
  size_t Index(const std::string& name) const;
  // Throws kInvalidArgument, naming both tensors, if two input dimensions that share a
  // symbol were set to different values.
  void CheckSymbols() const;

  std::shared_ptr<Engine> engine_;
  std::string owner_;
  bool staged_;
  HandleToken token_;
  std::shared_ptr<DeviceBuffer> activation_;
  std::shared_ptr<Block> host_scratch_;  // == activation_ unless staged_
  std::vector<std::vector<int64_t>> shapes_;
  std::vector<void*> ptrs_;
  std::vector<uint64_t> bytes_;
  std::vector<std::unique_ptr<StagingBuffer>> shadows_;  // per tensor; only when staged_
};

// Throws kInvalidArgument, naming the known components, unless `component` is one of
// decoder, vae_encode, vae_decode, vae_decode_windowed, text_encoder, stem_separator.
void CheckComponent(const std::string& component);

// The TensorRT seam. Only the cpu-ref backend exists; a "tensorrt" engine is refused with
// kUnsupported, and CMake's DEMON_WITH_TENSORRT=ON stops at configure time (no machine
// this project builds on has the SDK, and an untested backend would be a fake one). The
// interfaces above are shaped so a backend can be added without changing its callers:
//  - LoadEngine dispatches on opts.backend; a TensorRT loader validates the sidecar's
//    component, backend and version like the cpu-ref path, deserializes the plan
//    (IRuntime::deserializeCudaEngine), fills io_ from the engine's I/O tensors
//    (getNbIOTensors, getIOTensorName, getTensorIOMode, getTensorDataType, and
//    getProfileShape for min/opt/max of profile 0), and calls ReserveResident with the
//    engine's weight footprint so the ledger sees it.
//  - NeededContextBytes is the engine's activation size (getDeviceMemorySizeV2): Context
//    allocates it through the ledger, and the backend hands that block to a context created
//    with ExecutionContextAllocationStrategy::kUSER_MANAGED (setDeviceMemoryV2) — the
//    "ask the size, allocate it ourselves" rule of the class comment above.
//  - RunsOnHost() returns false, so contexts bind device pointers with no host shadows;
//    InferShapes forwards input shapes (setInputShape) and reads outputs back
//    (getTensorShape); Run sets every tensor address (setTensorAddress) and enqueues
//    (enqueueV3) on the device's stream, then synchronizes, keeping Execute synchronous.
//  - The per-context IExecutionContext needs a place on Context (a backend-state member),
//    which is the one interface change the backend brings.
//  - TensorRT reports a dynamic dimension as -1, without its ONNX name, and cannot list a
//    plan's tensors without deserializing it (which allocates device memory). So the
//    backend needs the sidecar's dimension symbols passed in EngineOptions, InspectEngine
//    cannot compare a plan before loading it, and for TensorRT the model repository's
//    post-load cross-check is the one that compares the sidecar with the plan.
// Until then, DM_WITH_TENSORRT is an #error in engine.cc, so no build half-enables it.

// Loads an engine file of any backend this build has. Validates the container and that it
// is the expected component, backend and version before allocating anything.
// Fault points: model.load.<component> once the owner and component name are checked (so an
// unknown component is a component error, not an undeclared fault point) and before anything
// is read or allocated; model.place_<component> after the weights are resident (declared for
// the decoder).
std::shared_ptr<Engine> LoadEngine(std::shared_ptr<Device> device, const EngineOptions& opts);

// The I/O table the engine at opts.path would have once loaded, read from the file's header
// alone: the same identity checks as LoadEngine (component, backend, version, container
// framing) but no payload, no device, no allocation on any ledger and no fault point, so a
// model repository can cross-check it against the sidecar before loading anything.
std::vector<TensorDesc> InspectEngine(const EngineOptions& opts);

// Writes a reference (cpu-ref) engine file for a component.
struct ReferenceOptions {
  std::string component;
  std::string variant;  // decoder: "tiny-dit" or "oracle"
  uint64_t seed = 1;
  int duration_s = 60;
  // Decoder I/O precision: "fp32" (every tensor float32) or "mixed" (DEMON's 2B layout,
  // spec/engine.md §2.2: bfloat16 hidden_states, encoder_hidden_states, context_latents and
  // velocity, float32 timestep). The math is fp32 either way; bf16 tensors are converted at
  // the engine boundary. "" means "fp32".
  std::string io_precision;
};
void WriteReferenceEngine(const ReferenceOptions& opts, const std::string& path);

}  // namespace dm

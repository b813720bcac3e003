#include "engine/engine.h"

#include <algorithm>

namespace dm {

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kFloat32: return 4;
    case DType::kBFloat16: return 2;
    case DType::kFloat16: return 2;
    case DType::kInt32: return 4;
  }
  return 0;
}

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat16: return "float16";
    case DType::kInt32: return "int32";
  }
  return "unknown";
}

Engine::Engine(std::shared_ptr<Device> device, const EngineOptions& opts)
    : device_(std::move(device)),
      component_(opts.component),
      owner_(opts.owner),
      footprint_bytes_(opts.footprint_bytes),
      context_bytes_(opts.context_bytes),
      token_(device_, HandleKind::kEngine, opts.owner) {}

const TensorDesc& Engine::Tensor(const std::string& name) const {
  for (const auto& t : io_) {
    if (t.name == name) return t;
  }
  Fail(Status::kNotFound, "%s engine has no tensor %s", component_.c_str(), name.c_str());
}

uint64_t Engine::ContextBytes() const { return std::max(context_bytes_, NeededContextBytes()); }

void* Engine::ReserveResident(uint64_t needed) {
  if (resident_) Fail(Status::kInternal, "engine resident memory reserved twice");
  uint64_t bytes = std::max<uint64_t>({footprint_bytes_, needed, 1});
  resident_ = std::make_unique<DeviceBuffer>(device_, HandleKind::kEngine, owner_, bytes);
  return resident_->data();
}

std::unique_ptr<Context> Engine::CreateContext(const std::string& owner) {
  CheckOwner(owner.c_str());
  HitFault(device_->faults(), "session.init.context");
  return std::make_unique<Context>(shared_from_this(), owner);
}

Context::Context(std::shared_ptr<Engine> engine, const std::string& owner)
    : engine_(std::move(engine)),
      owner_(owner),
      staged_(!engine_->device()->HostAccessible() && engine_->RunsOnHost()),
      token_(engine_->device(), HandleKind::kContext, owner),
      activation_(std::make_shared<DeviceBuffer>(engine_->device(), HandleKind::kContext, owner,
                                                 std::max<uint64_t>(engine_->ContextBytes(), 64))),
      shapes_(engine_->io().size()),
      ptrs_(engine_->io().size(), nullptr),
      bytes_(engine_->io().size(), 0),
      shadows_(engine_->io().size()) {
  // Staged: the CPU math's scratch is a host shadow (the device activation memory stays
  // reserved for the ledger and admission). Otherwise the activation memory is the scratch.
  if (staged_) {
    host_scratch_ = std::make_shared<StagingBuffer>(
        engine_->device(), owner, std::max<uint64_t>(engine_->HostScratchBytes(), 64));
  } else {
    host_scratch_ = activation_;
  }
}

size_t Context::Index(const std::string& name) const {
  const auto& io = engine_->io();
  for (size_t i = 0; i < io.size(); ++i) {
    if (io[i].name == name) return i;
  }
  Fail(Status::kNotFound, "%s engine has no tensor %s", engine_->component().c_str(), name.c_str());
}

void Context::SetShape(const std::string& name, const std::vector<int64_t>& dims) {
  size_t i = Index(name);
  const TensorDesc& t = engine_->io()[i];
  if (!t.input)
    Fail(Status::kInvalidArgument, "tensor %s is an output; its shape is inferred", name.c_str());
  if (dims.size() != t.min.size()) {
    Fail(Status::kInvalidArgument, "tensor %s has rank %zu, got %zu dims", name.c_str(),
         t.min.size(), dims.size());
  }
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] < t.min[d] || dims[d] > t.max[d]) {
      Fail(Status::kInvalidArgument,
           "tensor %s dim %zu = %lld is outside the engine profile [%lld, %lld]", name.c_str(), d,
           static_cast<long long>(dims[d]), static_cast<long long>(t.min[d]),
           static_cast<long long>(t.max[d]));
    }
  }
  shapes_[i] = dims;
}

void Context::SetOutputShape(const std::string& name, const std::vector<int64_t>& dims) {
  shapes_[Index(name)] = dims;
}

const std::vector<int64_t>& Context::Shape(const std::string& name) const {
  return shapes_[Index(name)];
}

void Context::Bind(const std::string& name, void* ptr, uint64_t bytes) {
  size_t i = Index(name);
  if (ptr == nullptr || bytes == 0) {
    Fail(Status::kInvalidArgument, "binding for %s is empty", name.c_str());
  }
  if (staged_) {
    // The tensor's host shadow, sized to the bound buffer; reused when big enough, so a
    // rebind to a same-sized buffer allocates nothing. Drop the old one first: a failed
    // allocation leaves the tensor unbound rather than bound to a too-small shadow.
    if (!shadows_[i] || shadows_[i]->size() < bytes) {
      ptrs_[i] = nullptr;
      bytes_[i] = 0;
      shadows_[i].reset();
      shadows_[i] = std::make_unique<StagingBuffer>(engine_->device(), owner_, bytes);
    }
  }
  ptrs_[i] = ptr;
  bytes_[i] = bytes;
}

void* Context::Binding(const std::string& name) const {
  size_t i = Index(name);
  return staged_ && shadows_[i] ? shadows_[i]->data() : ptrs_[i];
}

int64_t Context::Elements(const std::string& name) const {
  int64_t n = 1;
  for (int64_t d : shapes_[Index(name)]) n *= d;
  return n;
}

void Context::CheckSymbols() const {
  // A handful of tensors of rank <= 3: a pairwise scan, allocation-free.
  const auto& io = engine_->io();
  for (size_t i = 0; i < io.size(); ++i) {
    if (!io[i].input) continue;
    for (size_t d = 0; d < io[i].symbols.size(); ++d) {
      const std::string& sym = io[i].symbols[d];
      if (sym.empty()) continue;
      for (size_t j = 0; j <= i; ++j) {
        if (!io[j].input) continue;
        const size_t dims = j == i ? d : io[j].symbols.size();
        for (size_t e = 0; e < dims; ++e) {
          if (io[j].symbols[e] != sym || shapes_[j][e] == shapes_[i][d]) continue;
          Fail(Status::kInvalidArgument,
               "tensor %s dim %zu (%s) = %lld, but tensor %s dim %zu (%s) = %lld: dimensions "
               "named %s must be equal",
               io[i].name.c_str(), d, sym.c_str(), static_cast<long long>(shapes_[i][d]),
               io[j].name.c_str(), e, sym.c_str(), static_cast<long long>(shapes_[j][e]),
               sym.c_str());
        }
      }
    }
  }
}

void Context::Execute() {
  const auto& io = engine_->io();
  for (size_t i = 0; i < io.size(); ++i) {
    if (io[i].input && shapes_[i].empty()) {
      Fail(Status::kState, "input %s has no shape set", io[i].name.c_str());
    }
  }
  CheckSymbols();
  engine_->InferShapes(*this);
  for (size_t i = 0; i < io.size(); ++i) {
    if (ptrs_[i] == nullptr) Fail(Status::kState, "tensor %s is not bound", io[i].name.c_str());
    uint64_t need = static_cast<uint64_t>(Elements(io[i].name)) * DTypeSize(io[i].dtype);
    if (bytes_[i] < need) {
      Fail(Status::kInvalidArgument, "tensor %s needs %llu bytes, bound buffer has %llu",
           io[i].name.c_str(), static_cast<unsigned long long>(need),
           static_cast<unsigned long long>(bytes_[i]));
    }
  }
  if (!staged_) {
    engine_->Run(*this);
    return;
  }
  // Staged (a CPU engine on a GPU): inputs device → shadow, run on the shadows, outputs
  // shadow → device. Only the bytes the current shapes use are copied.
  Device& dev = *engine_->device();
  auto need = [&](size_t i) {
    return static_cast<size_t>(Elements(io[i].name)) * DTypeSize(io[i].dtype);
  };
  for (size_t i = 0; i < io.size(); ++i) {
    if (io[i].input) dev.CopyToHost(shadows_[i]->data(), ptrs_[i], need(i));
  }
  engine_->Run(*this);
  for (size_t i = 0; i < io.size(); ++i) {
    if (!io[i].input) dev.CopyToDevice(ptrs_[i], shadows_[i]->data(), need(i));
  }
}

std::shared_ptr<Engine> CreateCpuRefEngine(std::shared_ptr<Device> device,
                                           const EngineOptions& opts, const EngineFile& file);
std::vector<TensorDesc> CpuRefTensors(const std::string& component, const EngineFile& header);

// The TensorRT backend is a seam (engine.h, "The TensorRT seam"), not an implementation:
// a build that defines DM_WITH_TENSORRT would otherwise compile and then fail to link.
#ifdef DM_WITH_TENSORRT
#error "DM_WITH_TENSORRT is set, but the TensorRT backend is not implemented (see engine.h)"
#endif

void CheckComponent(const std::string& component) {
  static const char* const kComponents[] = {"decoder",      "vae_encode",
                                            "vae_decode",   "vae_decode_windowed",
                                            "text_encoder", "stem_separator"};
  for (const char* k : kComponents) {
    if (component == k) return;
  }
  Fail(Status::kInvalidArgument,
       "unknown component %s (want decoder, vae_encode, vae_decode, vae_decode_windowed, "
       "text_encoder or stem_separator)",
       component.c_str());
}

namespace engine_detail {

// Refuses a backend this build cannot load, before anything is read.
void CheckBackend(const EngineOptions& opts) {
  if (opts.backend == "tensorrt") {
    // No build switch turns this on: the backend is a seam (engine.h), so say so rather
    // than point at an option that would not help.
    Fail(Status::kUnsupported,
         "%s: a TensorRT engine, and this build has no TensorRT backend (the backend is not "
         "implemented yet; load a cpu-ref engine)",
         opts.path.c_str());
  }
  if (opts.backend != "cpu-ref") {
    Fail(Status::kUnsupported, "%s: unknown engine backend %s", opts.path.c_str(),
         opts.backend.c_str());
  }
}

// Refuses a file that is not the expected component, backend and version.
void CheckIdentity(const EngineOptions& opts, const EngineFile& file) {
  const std::string& component = file.Get("component");
  if (component != opts.component) {
    Fail(Status::kMismatch, "%s: engine is a %s, expected a %s", opts.path.c_str(),
         component.c_str(), opts.component.c_str());
  }
  if (file.Get("backend") != "cpu-ref" || file.Get("backend_version") != opts.backend_version) {
    Fail(Status::kMismatch, "%s: engine built for %s %s, expected %s %s", opts.path.c_str(),
         file.Get("backend").c_str(), file.Get("backend_version").c_str(), opts.backend.c_str(),
         opts.backend_version.c_str());
  }
}

}  // namespace engine_detail

std::shared_ptr<Engine> LoadEngine(std::shared_ptr<Device> device, const EngineOptions& opts) {
  CheckOwner(opts.owner.c_str());
  // Before the fault point, whose name is built from the component: an unknown component
  // must read as one, not as "unknown fault point model.load.<name>".
  CheckComponent(opts.component);
  HitFault(device->faults(), ("model.load." + opts.component).c_str());
  engine_detail::CheckBackend(opts);
  std::vector<uint8_t> bytes = ReadWholeFile(opts.path);
  EngineFile file;
  try {
    file = ParseEngineFile(bytes.data(), bytes.size());
  } catch (const Error& e) {
    throw Error(e.status(), opts.path + ": " + e.what());
  }
  engine_detail::CheckIdentity(opts, file);
  return CreateCpuRefEngine(std::move(device), opts, file);
}

std::vector<TensorDesc> InspectEngine(const EngineOptions& opts) {
  CheckComponent(opts.component);
  engine_detail::CheckBackend(opts);
  EngineFile header = ReadEngineFileHeader(opts.path);
  engine_detail::CheckIdentity(opts, header);
  try {
    return CpuRefTensors(opts.component, header);
  } catch (const Error& e) {
    if (e.status() == Status::kCorrupt) throw Error(e.status(), opts.path + ": " + e.what());
    throw;
  }
}

}  // namespace dm

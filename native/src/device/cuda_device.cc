// The cuda device: an NVIDIA GPU through the CUDA driver API, loaded at run time.
//
// One device is one GPU ordinal and its primary context (retained at creation, released
// at destruction: the context the CUDA runtime and TensorRT share). The ledger's capacity
// is the GPU's total memory from cuMemGetInfo at creation; the ledger admits or refuses
// every allocation *before* the driver is asked, so "requested N bytes, M free" comes from
// the ledger, and a driver refusal (other processes, the context's own memory) surfaces as
// a CudaError CUDA_ERROR_OUT_OF_MEMORY with status DM_ERR_OUT_OF_MEMORY.
//
// One stream per device: every zero-fill, copy and stream-ordered allocation and free the
// device issues runs on its own (non-blocking) stream, so they are ordered among
// themselves. Nothing goes to the legacy default stream: a non-blocking stream is NOT
// ordered after legacy-stream work, so a cuMemsetD8/cuMemcpyHtoD still in flight there
// (both may return before the GPU has finished) could race a cuMemFreeAsync queued here
// and the memory be reused under it. The calls that promise completion (an allocation
// handed out zeroed, a synchronous copy) synchronise the stream before they return.
//
// Allocation: where the driver and the GPU support memory pools (CUDA 11.2+,
// CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED), buffers come from cuMemAllocAsync on that
// stream and go back with cuMemFreeAsync: an allocation is zero-filled and synchronised
// before it is handed out, so every other user sees finished memory; a free is queued
// without waiting, and the driver reuses or releases the memory once the stream reaches
// it. A caller must have finished its own GPU work on a buffer before freeing it (demon's
// copies are synchronous; an engine synchronises its stream before its buffers are
// released). Elsewhere plain cuMemAlloc / cuMemFree. Reading the driver's memory first
// synchronises the stream, so queued frees have landed and the pool has trimmed back to the
// OS (the default pool keeps nothing beyond its release threshold of 0 at a synchronisation).
//
// Thread rule: the driver binds a context to the calling OS thread, and the device is
// called from several threads (the session worker, Go's loaders). Every entry point here
// therefore makes the primary context current first (cuCtxSetCurrent is a cheap
// thread-local store); nothing relies on what another call left current.
#include <chrono>
#include <cstdio>
#include <cstring>

#include "device/cuda_driver.h"
#include "device/device.h"

namespace dm {
namespace cuda_detail {

// A retained primary context; released exactly once.
class PrimaryContext {
 public:
  PrimaryContext(std::shared_ptr<CudaDriver> drv, cu::DeviceId dev)
      : drv_(std::move(drv)), dev_(dev) {
    drv_->Check(drv_->cuDevicePrimaryCtxRetain(&ctx_, dev_), "cuDevicePrimaryCtxRetain");
  }
  ~PrimaryContext() {
    cu::Result r = drv_->cuDevicePrimaryCtxRelease(dev_);
    if (r != cu::kSuccess) {
      std::fprintf(stderr, "demon: cuDevicePrimaryCtxRelease: %s\n", drv_->Describe(r).c_str());
    }
  }
  PrimaryContext(const PrimaryContext&) = delete;
  PrimaryContext& operator=(const PrimaryContext&) = delete;

  // Makes the context current on the calling thread.
  void Bind() const { drv_->Check(drv_->cuCtxSetCurrent(ctx_), "cuCtxSetCurrent"); }

 private:
  std::shared_ptr<CudaDriver> drv_;
  cu::DeviceId dev_;
  cu::Ctx ctx_ = nullptr;
};

// A CUDA stream (non-blocking), destroyed with its owner.
class CudaStream {
 public:
  explicit CudaStream(const CudaDriver& drv) : drv_(drv) {
    drv_.Check(drv_.cuStreamCreate(&s_, cu::kStreamNonBlocking), "cuStreamCreate");
  }
  ~CudaStream() { drv_.cuStreamDestroy(s_); }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cu::StreamHandle get() const { return s_; }
  void Synchronize() const { drv_.Check(drv_.cuStreamSynchronize(s_), "cuStreamSynchronize"); }

 private:
  const CudaDriver& drv_;
  cu::StreamHandle s_ = nullptr;
};

// A CUDA event with timing, destroyed with its owner.
class CudaEvent {
 public:
  explicit CudaEvent(const CudaDriver& drv) : drv_(drv) {
    drv_.Check(drv_.cuEventCreate(&e_, cu::kEventDefault), "cuEventCreate");
  }
  ~CudaEvent() { drv_.cuEventDestroy(e_); }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  void Record(const CudaStream& s) { drv_.Check(drv_.cuEventRecord(e_, s.get()), "cuEventRecord"); }
  void Synchronize() { drv_.Check(drv_.cuEventSynchronize(e_), "cuEventSynchronize"); }
  // Milliseconds from `start` to this event (both recorded and complete).
  float Since(const CudaEvent& start) const {
    float ms = 0;
    drv_.Check(drv_.cuEventElapsedTime(&ms, start.e_, e_), "cuEventElapsedTime");
    return ms;
  }

 private:
  const CudaDriver& drv_;
  cu::EventHandle e_ = nullptr;
};

// Formats a CUuuid as NVML does: "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
std::string FormatUuid(const cu::Uuid& u) {
  std::string out = "GPU-";
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += Format("%02x", u.bytes[i]);
  }
  return out;
}

// Everything acquired before the Device base can be constructed (its capacity is the
// GPU's total memory), in acquisition order (so destroyed in reverse: the stream before
// the context).
struct CudaState {
  std::shared_ptr<CudaDriver> drv;
  int ordinal = 0;
  cu::DeviceId dev = 0;
  std::unique_ptr<PrimaryContext> ctx;
  std::string name;
  std::string uuid;  // "GPU-…" (NVML's form); "" when the driver cannot say
  int cc_major = 0, cc_minor = 0;
  int driver_version = 0;
  uint64_t total = 0;
  std::unique_ptr<CudaStream> stream;  // every memset, copy and stream-ordered alloc/free
  bool stream_ordered = false;         // false: plain cuMemAlloc / cuMemFree
};

class CudaDevice final : public Device {
 public:
  CudaDevice(std::unique_ptr<CudaState> st, std::shared_ptr<FaultRegistry> faults)
      : Device(st->total, std::move(faults)), st_(std::move(st)), drv_(*st_->drv) {}

  // Queued frees land before the stream and the context go.
  ~CudaDevice() override {
    try {
      st_->ctx->Bind();
    } catch (...) {
      // The synchronisation below reports the same failure.
    }
    cu::Result r = drv_.cuStreamSynchronize(Stream());
    if (r != cu::kSuccess) {
      std::fprintf(stderr, "demon: cuStreamSynchronize (device stream): %s\n",
                   drv_.Describe(r).c_str());
    }
  }

  // The UUID is part of the description (", uuid GPU-…") so that telemetry can match this
  // ordinal to its NVML device without another C API entry point.
  std::string Describe() const override {
    return Format("cuda:%d %s (compute %d.%d, driver %d.%d, %s, %s, uuid %s, %s)", st_->ordinal,
                  st_->name.c_str(), st_->cc_major, st_->cc_minor, st_->driver_version / 1000,
                  (st_->driver_version % 1000) / 10, FormatBytes(ledger().capacity()).c_str(),
                  StreamOrdered() ? "stream-ordered allocation" : "cuMemAlloc",
                  st_->uuid.empty() ? "unknown" : st_->uuid.c_str(), st_->drv->path.c_str());
  }
  bool HostAccessible() const override { return false; }

  void* RawAlloc(size_t bytes) override {
    st_->ctx->Bind();
    cu::DevPtr p = 0;
    const char* op = StreamOrdered() ? "cuMemAllocAsync" : "cuMemAlloc_v2";
    cu::Result r =
        StreamOrdered() ? drv_.cuMemAllocAsync(&p, bytes, Stream()) : drv_.cuMemAlloc(&p, bytes);
    if (r != cu::kSuccess) {
      size_t free = 0, total = 0;
      std::string why = drv_.Describe(r);
      if (drv_.cuMemGetInfo(&free, &total) == cu::kSuccess) {
        why += "; the driver reports " + FormatBytes(free) + " free";
      }
      throw CudaError(r, Format("%s of %s on cuda:%d: %s", op, FormatBytes(bytes).c_str(),
                                st_->ordinal, why.c_str()));
    }
    // Zero-fill on the device's stream, after the (stream-ordered) allocation and before any
    // later free; the synchronisation makes the buffer finished memory for every user.
    r = drv_.cuMemsetD8Async(p, 0, bytes, Stream());
    if (r != cu::kSuccess) {
      ReleaseDev(p);
      drv_.Check(r, "cuMemsetD8Async (zero-filling a new allocation)");
    }
    r = drv_.cuStreamSynchronize(Stream());
    if (r != cu::kSuccess) {
      ReleaseDev(p);
      drv_.Check(r, "cuStreamSynchronize (a new allocation)");
    }
    return reinterpret_cast<void*>(static_cast<uintptr_t>(p));
  }

  void RawFree(void* ptr, size_t /*bytes*/) noexcept override {
    if (ptr == nullptr) return;
    try {
      st_->ctx->Bind();
    } catch (...) {
      // Fall through: the free reports the same failure below.
    }
    ReleaseDev(Dev(ptr));
  }

  // Synchronous for the caller (src may be reused, dst read, as soon as it returns): queued
  // on the device's stream, then the stream is synchronised.
  void CopyToDevice(void* dst, const void* src, size_t n) override {
    st_->ctx->Bind();
    drv_.Check(drv_.cuMemcpyHtoDAsync(Dev(dst), src, n, Stream()), "cuMemcpyHtoDAsync_v2");
    drv_.Check(drv_.cuStreamSynchronize(Stream()), "cuStreamSynchronize (after a copy to device)");
  }

  void CopyToHost(void* dst, const void* src, size_t n) const override {
    st_->ctx->Bind();
    drv_.Check(drv_.cuMemcpyDtoHAsync(dst, Dev(src), n, Stream()), "cuMemcpyDtoHAsync_v2");
    drv_.Check(drv_.cuStreamSynchronize(Stream()), "cuStreamSynchronize (after a copy to host)");
  }

  DriverMemory QueryDriverMemory() const override {
    st_->ctx->Bind();
    drv_.Check(drv_.cuStreamSynchronize(Stream()),
               "cuStreamSynchronize (device stream, before cuMemGetInfo)");
    size_t free = 0, total = 0;
    drv_.Check(drv_.cuMemGetInfo(&free, &total), "cuMemGetInfo_v2");
    return DriverMemory{free, total};
  }

  // Pinned host memory: page-locked, so H2D/D2H copies run at full DMA speed.
  void* StagingAlloc(size_t bytes) override {
    st_->ctx->Bind();
    void* p = nullptr;
    cu::Result r = drv_.cuMemAllocHost(&p, bytes);
    if (r != cu::kSuccess) {
      throw CudaError(r, Format("cuMemAllocHost_v2 of %s (pinned staging): %s",
                                FormatBytes(bytes).c_str(), drv_.Describe(r).c_str()));
    }
    std::memset(p, 0, bytes);
    return p;
  }

  void StagingFree(void* ptr, size_t /*bytes*/) noexcept override {
    if (ptr == nullptr) return;
    try {
      st_->ctx->Bind();
    } catch (...) {
      // Fall through: cuMemFreeHost reports the same failure below.
    }
    cu::Result r = drv_.cuMemFreeHost(ptr);
    if (r != cu::kSuccess) {
      std::fprintf(stderr, "demon: cuMemFreeHost: %s\n", drv_.Describe(r).c_str());
    }
  }

  // Async copies on the device's stream (after the buffer's zero-fill, before its free),
  // timed with events on the GPU.
  CopyTiming TimeCopies(void* device_ptr, void* staging_ptr, size_t n, int iterations) override {
    st_->ctx->Bind();
    const CudaStream& s = *st_->stream;
    CudaEvent e0(drv_), e1(drv_), e2(drv_);
    e0.Record(s);
    for (int i = 0; i < iterations; ++i) {
      drv_.Check(drv_.cuMemcpyHtoDAsync(Dev(device_ptr), staging_ptr, n, s.get()),
                 "cuMemcpyHtoDAsync_v2");
    }
    e1.Record(s);
    for (int i = 0; i < iterations; ++i) {
      drv_.Check(drv_.cuMemcpyDtoHAsync(staging_ptr, Dev(device_ptr), n, s.get()),
                 "cuMemcpyDtoHAsync_v2");
    }
    e2.Record(s);
    e2.Synchronize();
    s.Synchronize();
    CopyTiming t;
    t.h2d_ms = e1.Since(e0);
    t.d2h_ms = e2.Since(e1);
    return t;
  }

 private:
  static cu::DevPtr Dev(const void* p) {
    return static_cast<cu::DevPtr>(reinterpret_cast<uintptr_t>(p));
  }
  bool StreamOrdered() const { return st_->stream_ordered; }
  cu::StreamHandle Stream() const { return st_->stream->get(); }

  // Gives p back to the driver (queued on the device's stream where stream-ordered; with
  // plain cuMemFree nothing of ours is in flight on p: every operation on the stream was
  // synchronised before it returned); failures are logged: a release never throws.
  void ReleaseDev(cu::DevPtr p) const noexcept {
    cu::Result r = StreamOrdered() ? drv_.cuMemFreeAsync(p, Stream()) : drv_.cuMemFree(p);
    if (r != cu::kSuccess) {
      std::fprintf(stderr, "demon: %s: %s\n", StreamOrdered() ? "cuMemFreeAsync" : "cuMemFree_v2",
                   drv_.Describe(r).c_str());
    }
  }

  std::unique_ptr<CudaState> st_;
  const CudaDriver& drv_;  // *st_->drv, alive as long as st_
};

}  // namespace cuda_detail

// Creates the cuda device for `ordinal`: loads the driver, initialises it, retains the
// primary context and reads the memory totals. Throws Error(kCuda) with the driver's
// message on any failure; everything acquired so far is released by the RAII members.
std::shared_ptr<Device> CreateCudaDevice(int ordinal, std::shared_ptr<FaultRegistry> faults) {
  using cuda_detail::CudaState;
  auto st = std::make_unique<CudaState>();
  st->drv = CudaDriver::Load();
  st->ordinal = ordinal;
  const CudaDriver& d = *st->drv;
  d.Check(d.cuInit(0), "cuInit");
  d.Check(d.cuDriverGetVersion(&st->driver_version), "cuDriverGetVersion");
  int count = 0;
  d.Check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (ordinal < 0 || ordinal >= count) {
    Fail(Status::kInvalidArgument, "cuda device %d does not exist: the driver sees %d device(s)",
         ordinal, count);
  }
  d.Check(d.cuDeviceGet(&st->dev, ordinal), "cuDeviceGet");
  char name[256] = {};
  d.Check(d.cuDeviceGetName(name, sizeof name - 1, st->dev), "cuDeviceGetName");
  st->name = name;
  d.Check(d.cuDeviceGetAttribute(&st->cc_major, cu::kAttrComputeCapabilityMajor, st->dev),
          "cuDeviceGetAttribute(compute capability major)");
  d.Check(d.cuDeviceGetAttribute(&st->cc_minor, cu::kAttrComputeCapabilityMinor, st->dev),
          "cuDeviceGetAttribute(compute capability minor)");
  cu::Uuid uuid{};
  if (d.cuDeviceGetUuid != nullptr && d.cuDeviceGetUuid(&uuid, st->dev) == cu::kSuccess) {
    st->uuid = cuda_detail::FormatUuid(uuid);
  }
  st->ctx = std::make_unique<cuda_detail::PrimaryContext>(st->drv, st->dev);
  st->ctx->Bind();
  size_t free = 0, total = 0;
  d.Check(d.cuMemGetInfo(&free, &total), "cuMemGetInfo_v2");
  if (total == 0) Fail(Status::kCuda, "cuda device %d reports 0 bytes of memory", ordinal);
  st->total = total;
  int pools = 0;
  st->stream_ordered =
      d.cuMemAllocAsync != nullptr && d.cuMemFreeAsync != nullptr &&
      d.cuDeviceGetAttribute(&pools, cu::kAttrMemoryPoolsSupported, st->dev) == cu::kSuccess &&
      pools != 0;
  st->stream = std::make_unique<cuda_detail::CudaStream>(d);
  return std::make_shared<cuda_detail::CudaDevice>(std::move(st), std::move(faults));
}

}  // namespace dm

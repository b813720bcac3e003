// Memory as the pipeline and engines see it: blocks handed out by an Allocator.
//
// In the shim the allocator is backed by device buffers on the ledger with the caller's
// owner tag, so every byte a stream or execution context uses is accounted. Components
// allocate everything they need when they are created and nothing on the steady-state path.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace dm {

class Block {
 public:
  virtual ~Block() = default;
  virtual void* data() = 0;
  virtual size_t size() const = 0;
  template <typename T>
  T* as() {
    return static_cast<T*>(data());
  }
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns a block of at least `bytes` bytes, 64-byte aligned, zero-filled.
  // Throws dm::Error(kOutOfMemory) when the memory is not there.
  virtual std::unique_ptr<Block> Allocate(size_t bytes, const char* what) = 0;
};

// Plain host memory, for tests and tools that need no accounting.
class HostAllocator final : public Allocator {
 public:
  std::unique_ptr<Block> Allocate(size_t bytes, const char* /*what*/) override {
    return std::make_unique<HostBlock>(bytes);
  }

 private:
  class HostBlock final : public Block {
   public:
    explicit HostBlock(size_t bytes) : size_(bytes) {
      size_t rounded = (bytes + 63) / 64 * 64;
      ptr_ = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
      if (ptr_ == nullptr) throw std::bad_alloc();
      __builtin_memset(ptr_, 0, rounded == 0 ? 64 : rounded);
    }
    ~HostBlock() override { std::free(ptr_); }
    HostBlock(const HostBlock&) = delete;
    HostBlock& operator=(const HostBlock&) = delete;
    void* data() override { return ptr_; }
    size_t size() const override { return size_; }

   private:
    void* ptr_ = nullptr;
    size_t size_ = 0;
  };
};

}  // namespace dm

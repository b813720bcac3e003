// A fixed pool of persistent worker threads implementing dm::Parallel.
//
// ThreadPool(n) gives a total parallelism of n: n-1 worker threads are started in the
// constructor and the thread calling For() takes part as the n-th. Indices are handed out
// dynamically (one atomic counter), so uneven tasks balance themselves. For() does not
// allocate: the callable is taken by reference and the hand-off is a generation counter
// under one mutex/condvar pair. An exception thrown by fn stops the hand-out of further
// indices and the first one is rethrown on the calling thread once every worker is idle.
//
// Calls from several threads are serialised; a nested For() from inside fn runs inline.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "ref/velocity_model.h"

namespace dm {
namespace ref {

class ThreadPool final : public Parallel {
 public:
  // threads = total parallelism including the caller (>= 1; 1 means run inline).
  explicit ThreadPool(int threads);
  ~ThreadPool() override;
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void For(int n, const std::function<void(int)>& fn) override;
  int Workers() const override { return static_cast<int>(threads_.size()) + 1; }

 private:
  void WorkerLoop();
  void RunIndices();  // pulls indices of the current job until none are left

  std::vector<std::thread> threads_;
  std::mutex call_mu_;  // serialises For() callers

  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  uint64_t generation_ = 0;  // bumped once per job (guarded by mu_)
  int busy_ = 0;             // workers still inside the current job (guarded by mu_)
  bool stop_ = false;

  // The current job; written by the caller before the generation bump.
  const std::function<void(int)>* fn_ = nullptr;
  int n_ = 0;
  std::atomic<int> next_{0};
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;  // first exception (guarded by mu_)
};

}  // namespace ref
}  // namespace dm

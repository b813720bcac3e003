#include "ref/thread_pool.h"

#include <utility>

#include "core/error.h"

namespace dm {
namespace ref {

namespace pool_detail {
// Set while a thread is executing a job of some pool: nested For() calls run inline.
inline thread_local bool tls_in_pool_job = false;
}  // namespace pool_detail

ThreadPool::ThreadPool(int threads) {
  if (threads < 1)
    Fail(Status::kInvalidArgument, "ThreadPool: threads must be >= 1 (got %d)", threads);
  threads_.reserve(static_cast<size_t>(threads - 1));
  try {
    for (int i = 1; i < threads; ++i) threads_.emplace_back([this] { WorkerLoop(); });
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    start_cv_.notify_all();
    for (auto& t : threads_) t.join();
    throw;
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::RunIndices() {
  const bool was = pool_detail::tls_in_pool_job;
  pool_detail::tls_in_pool_job = true;
  for (;;) {
    if (failed_.load(std::memory_order_relaxed)) break;
    const int i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= n_) break;
    try {
      (*fn_)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  pool_detail::tls_in_pool_job = was;
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    RunIndices();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--busy_ == 0) done_cv_.notify_one();
    }
  }
}

void ThreadPool::For(int n, const std::function<void(int)>& fn) {
  if (n <= 0) return;
  if (threads_.empty() || n == 1 || pool_detail::tls_in_pool_job) {
    for (int i = 0; i < n; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    failed_.store(false, std::memory_order_relaxed);
    error_ = nullptr;
    busy_ = static_cast<int>(threads_.size());
    ++generation_;
  }
  start_cv_.notify_all();
  RunIndices();
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return busy_ == 0; });
    fn_ = nullptr;
    err = std::move(error_);
    error_ = nullptr;
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace ref
}  // namespace dm

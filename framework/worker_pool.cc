#include "framework/worker_pool.h"

#include <utility>

namespace cqrs {

WorkerPool::WorkerPool(int threads, size_t max_queued)
    : max_queued_(max_queued) {
  threads_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] { WorkerLoop(); });
  }
}

WorkerPool::~WorkerPool() { Stop(); }

bool WorkerPool::TrySubmit(std::function<void()> task) {
  {
    absl::MutexLock lock(&mu_);
    // A task that an idle worker is about to take is not waiting: only
    // those beyond the idle workers count against max_queued (a burst
    // faster than idle workers wake up must not be refused).
    if (!stopping_ && queue_.size() < max_queued_ + idle_) {
      queue_.push_back(std::move(task));
      return true;
    }
  }
  // Destroyed outside the lock: a task's captures may run code (a Responder
  // answering 500) that must not run under mu_.
  return false;
}

size_t WorkerPool::idle_threads() {
  absl::MutexLock lock(&mu_);
  return idle_;
}

void WorkerPool::Stop() {
  std::deque<std::function<void()>> dropped;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    dropped.swap(queue_);
  }
  dropped.clear();
  absl::MutexLock lock(&join_mu_);
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

void WorkerPool::WorkerLoop() {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      ++idle_;
      mu_.Await(absl::Condition(&ready));
      --idle_;
      if (stopping_) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace cqrs

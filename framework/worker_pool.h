// A fixed set of threads running queued tasks, with a bounded queue: the
// HTTP server's handlers and the query side's reads run on these.
//
//   cqrs::WorkerPool pool(/*threads=*/16, /*max_queued=*/1024);
//   if (!pool.TrySubmit([] { BlockingWork(); })) Reject503();
//
// Thread-safety: all methods are thread-safe. Tasks must not call Stop().
#ifndef FRAMEWORK_WORKER_POOL_H_
#define FRAMEWORK_WORKER_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace cqrs {

class WorkerPool {
 public:
  WorkerPool(int threads, size_t max_queued);
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  // Stops the pool.
  ~WorkerPool();

  // Queues `task`. Returns false, and drops `task`, when `max_queued` tasks
  // are already waiting or the pool is stopped. A task that an idle thread
  // will take is not waiting, even before that thread has woken up.
  bool TrySubmit(std::function<void()> task);

  // Threads waiting for a task (tests, diagnostics).
  size_t idle_threads();

  // Refuses new tasks, destroys the queued ones without running them, and
  // waits for the running ones to return. Idempotent.
  void Stop();

 private:
  void WorkerLoop();

  // Constant after construction.
  const size_t max_queued_;

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;  // threads waiting for a task

  // Written by the constructor and Stop() only.
  std::vector<std::thread> threads_;
  absl::Mutex join_mu_;
};

}  // namespace cqrs

#endif  // FRAMEWORK_WORKER_POOL_H_

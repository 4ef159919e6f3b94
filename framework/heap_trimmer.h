// Hands the heap's free pages back to the operating system at a steady
// pace, so that a long-running process's resident memory follows its live
// heap instead of the peak of each of glibc's per-thread arenas.
//
//   HeapTrimmer trimmer;  // for the life of `serve` or `project`
//
// glibc keeps memory a thread freed in that thread's arena for reuse and
// gives back only the arena's top; with dozens of threads and a fault now
// and then (a burst of retries, reconnections), each arena grows to its
// own peak and stays there. malloc_trim(0) releases every whole free page
// of every arena (docs/app.md, "Memory"). Elsewhere than glibc this
// does nothing.
//
// Thread-safety: one thread of its own; construct and destroy on one
// thread.
#ifndef FRAMEWORK_HEAP_TRIMMER_H_
#define FRAMEWORK_HEAP_TRIMMER_H_

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace cqrs {

class HeapTrimmer {
 public:
  // Trims every `interval`, the first time one interval from now.
  explicit HeapTrimmer(absl::Duration interval = absl::Minutes(1));
  ~HeapTrimmer();  // stops the thread; a trim under way ends first

  HeapTrimmer(const HeapTrimmer&) = delete;
  HeapTrimmer& operator=(const HeapTrimmer&) = delete;

  // Releases the free pages now; true when any were released.
  static bool TrimNow();

 private:
  void Loop(absl::Duration interval);

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace cqrs

#endif  // FRAMEWORK_HEAP_TRIMMER_H_

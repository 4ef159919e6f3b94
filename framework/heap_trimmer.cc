#include "framework/heap_trimmer.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace cqrs {

HeapTrimmer::HeapTrimmer(absl::Duration interval)
    : thread_([this, interval] { Loop(interval); }) {}

HeapTrimmer::~HeapTrimmer() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

bool HeapTrimmer::TrimNow() {
#if defined(__GLIBC__)
  return malloc_trim(0) == 1;
#else
  return false;
#endif
}

void HeapTrimmer::Loop(absl::Duration interval) {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval)) return;
    }
    TrimNow();
  }
}

}  // namespace cqrs

// Counts failed authentication attempts per client address in fixed
// windows (AuthOptions::max_failures, failure_window).
//
//   if (absl::Duration wait = limiter.Blocked(address, now); wait > 0) 429;
//   ... limiter.RecordFailure(address, now);
//
// At most kMaxAddresses addresses are tracked; beyond that, windows that
// ended are dropped first, and if none has ended the oldest window goes.
//
// Thread-safety: thread-safe.
#ifndef FRAMEWORK_HTTP_INTERNAL_FAILURE_LIMITER_H_
#define FRAMEWORK_HTTP_INTERNAL_FAILURE_LIMITER_H_

#include <atomic>
#include <cstddef>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace cqrs {
namespace http_internal {

class FailureLimiter {
 public:
  static constexpr size_t kMaxAddresses = 100000;

  FailureLimiter(int max_failures, absl::Duration window)
      : max_failures_(max_failures), window_(window) {}

  // Zero when `address` may try; otherwise how long until its window ends.
  absl::Duration Blocked(absl::string_view address, absl::Time now);

  void RecordFailure(absl::string_view address, absl::Time now);

 private:
  struct Window {
    absl::Time start;
    int failures = 0;
  };
  void MakeRoom(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const int max_failures_;
  const absl::Duration window_;

  // Lets Blocked() skip the lock while no address failed.
  std::atomic<size_t> size_{0};
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Window> windows_ ABSL_GUARDED_BY(mu_);
};

}  // namespace http_internal
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_INTERNAL_FAILURE_LIMITER_H_

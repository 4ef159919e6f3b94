// Runs a step again while it fails with an error that a later attempt may
// get past, for up to a time limit: the loop around one-shot database work
// that must survive a restart of PostgreSQL (migrating at start, a rebuild
// step).
//
//   RetryOptions retry;  // up to a minute, 1 s apart, transient errors
//   absl::Status s = RetryTransient(retry, [&] { return Migrate(pool); });
//
// Thread-safety: RetryTransient blocks the calling thread between attempts;
// the callbacks run on that thread.
#ifndef FRAMEWORK_RETRY_H_
#define FRAMEWORK_RETRY_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace cqrs {

struct RetryOptions {
  // No attempt starts after this long from the first one, or from the time
  // `since` returns when it is set (the last progress of a long step, so
  // that a step that keeps getting further keeps being resumed).
  absl::Duration retry_for = absl::Minutes(1);
  std::function<absl::Time()> since;
  // Pause between attempts.
  absl::Duration pause = absl::Seconds(1);
  // Which failures are worth another attempt; IsTransientError when empty.
  std::function<bool(const absl::Status&)> retryable;
  // Called with the failure before each pause (to log it); may be empty.
  std::function<void(const absl::Status&)> before_retry;
  // Checked before each pause: true ends the retries (a shutdown signal);
  // may be empty.
  std::function<bool()> stop;
};

// Returns the first OK status of `step`, or its last failure when that
// failure is not retryable, when `stop` says so, or when `retry_for` has
// passed. The caller decides what a final failure means.
absl::Status RetryTransient(const RetryOptions& options,
                            const std::function<absl::Status()>& step);

}  // namespace cqrs

#endif  // FRAMEWORK_RETRY_H_

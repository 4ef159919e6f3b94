#include "framework/retry.h"

#include "absl/time/clock.h"
#include "framework/error_classes.h"

namespace cqrs {

absl::Status RetryTransient(const RetryOptions& options,
                            const std::function<absl::Status()>& step) {
  const absl::Time first = absl::Now();
  while (true) {
    absl::Status s = step();
    if (s.ok()) return s;
    const bool retryable =
        options.retryable ? options.retryable(s) : IsTransientError(s);
    const absl::Time from = options.since ? options.since() : first;
    if (!retryable || absl::Now() - from >= options.retry_for) return s;
    if (options.stop && options.stop()) return s;
    if (options.before_retry) options.before_retry(s);
    // Retry pacing: the database may take seconds to accept sessions again.
    absl::SleepFor(options.pause);
  }
}

}  // namespace cqrs

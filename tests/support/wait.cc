#include "tests/support/wait.h"

#include "absl/time/clock.h"

namespace cqrs::testing {

bool Eventually(const std::function<bool()>& done, absl::Duration timeout,
                absl::Duration poll) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(poll);  // the poll interval, not a wait for time itself
  }
  return true;
}

}  // namespace cqrs::testing

#include "framework/http/internal/failure_limiter.h"

namespace cqrs {
namespace http_internal {

absl::Duration FailureLimiter::Blocked(absl::string_view address,
                                       absl::Time now) {
  if (size_.load(std::memory_order_relaxed) == 0) return absl::ZeroDuration();
  absl::MutexLock lock(&mu_);
  auto it = windows_.find(address);
  if (it == windows_.end()) return absl::ZeroDuration();
  const absl::Time end = it->second.start + window_;
  if (end <= now) {
    windows_.erase(it);
    size_.store(windows_.size(), std::memory_order_relaxed);
    return absl::ZeroDuration();
  }
  return it->second.failures >= max_failures_ ? end - now
                                              : absl::ZeroDuration();
}

void FailureLimiter::RecordFailure(absl::string_view address, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = windows_.find(address);
  if (it == windows_.end()) {
    if (windows_.size() >= kMaxAddresses) MakeRoom(now);
    it = windows_.emplace(std::string(address), Window{now, 0}).first;
  } else if (it->second.start + window_ <= now) {
    it->second = Window{now, 0};
  }
  ++it->second.failures;
  size_.store(windows_.size(), std::memory_order_relaxed);
}

void FailureLimiter::MakeRoom(absl::Time now) {
  auto oldest = windows_.end();
  for (auto it = windows_.begin(); it != windows_.end();) {
    if (it->second.start + window_ <= now) {
      windows_.erase(it++);
      continue;
    }
    if (oldest == windows_.end() || it->second.start < oldest->second.start) {
      oldest = it;
    }
    ++it;
  }
  if (windows_.size() >= kMaxAddresses && oldest != windows_.end()) {
    windows_.erase(oldest);
  }
}

}  // namespace http_internal
}  // namespace cqrs

#include "queries/progress_tracker.h"

#include <algorithm>
#include <utility>

#include "framework/log.h"
#include "framework/status_macros.h"
#include "projections/progress.h"

namespace cqrs::queries {

using eventstore::Position;

namespace {

void CallAll(std::vector<std::function<void(WaitOutcome)>>& callbacks,
             WaitOutcome outcome) {
  for (auto& done : callbacks) done(outcome);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ProgressTracker>> ProgressTracker::Create(
    PgPool* pool, ProgressTrackerOptions options) {
  std::unique_ptr<ProgressTracker> tracker(
      new ProgressTracker(pool, std::move(options)));
  RETURN_IF_ERROR(tracker->Refresh());
  return tracker;
}

ProgressTracker::ProgressTracker(PgPool* pool, ProgressTrackerOptions options)
    : pool_(pool), options_(std::move(options)) {}

ProgressTracker::~ProgressTracker() { Stop(); }

void ProgressTracker::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (listener_.joinable() || stopping_) return;
  }
  listener_ = std::thread([this] { Listen(); });
  timer_ = std::thread([this] { TimeOut(); });
}

void ProgressTracker::StopWaiting() {
  std::vector<Waiter> pending;
  {
    absl::MutexLock lock(&mu_);
    refusing_waits_ = true;
    pending.swap(waiters_);
  }
  for (Waiter& w : pending) w.done(WaitOutcome::kShutdown);
}

void ProgressTracker::Stop() {
  StopWaiting();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    timer_cv_.SignalAll();
  }
  if (listener_.joinable()) listener_.join();
  if (timer_.joinable()) timer_.join();
}

absl::Status ProgressTracker::Refresh() {
  ASSIGN_OR_RETURN(std::vector<projections::Progress> all,
                   projections::ReadCheckpoints(*pool_, options_.schema));
  for (const projections::Progress& p : all) Record(p.name, p.position);
  return absl::OkStatus();
}

void ProgressTracker::Record(absl::string_view name, const Position& position) {
  std::vector<std::function<void(WaitOutcome)>> reached;
  std::vector<std::function<void(WaitOutcome)>> expired;
  {
    absl::MutexLock lock(&mu_);
    auto it = positions_.find(name);
    if (it == positions_.end()) {
      positions_.emplace(std::string(name), position);
    } else if (it->second < position) {
      it->second = position;
    } else {
      return;
    }
    if (waiters_.empty()) return;
    TakeDone(absl::Now(), &reached, &expired);
  }
  CallAll(reached, WaitOutcome::kReached);
  CallAll(expired, WaitOutcome::kDeadline);
}

Position ProgressTracker::Current(const std::vector<std::string>& names) const {
  absl::MutexLock lock(&mu_);
  return CurrentLocked(names);
}

Position ProgressTracker::CurrentLocked(
    const std::vector<std::string>& names) const {
  Position least;
  bool first = true;
  for (const std::string& name : names) {
    auto it = positions_.find(name);
    const Position p = it == positions_.end() ? Position::Start() : it->second;
    if (first || p < least) least = p;
    first = false;
  }
  return least;
}

void ProgressTracker::WhenReached(std::vector<std::string> names,
                                  Position target, absl::Time deadline,
                                  std::function<void(WaitOutcome)> done) {
  WaitOutcome outcome = WaitOutcome::kReached;
  {
    absl::MutexLock lock(&mu_);
    if (target <= CurrentLocked(names)) {
      outcome = WaitOutcome::kReached;
    } else if (refusing_waits_) {
      outcome = WaitOutcome::kShutdown;
    } else if (deadline <= absl::Now()) {
      outcome = WaitOutcome::kDeadline;
    } else {
      waiters_.push_back(
          Waiter{std::move(names), target, deadline, std::move(done)});
      timer_cv_.Signal();
      return;
    }
  }
  // Reached already, shutting down, or past the deadline: answer now.
  done(outcome);
}

size_t ProgressTracker::waiting() const {
  absl::MutexLock lock(&mu_);
  return waiters_.size();
}

void ProgressTracker::TakeDone(
    absl::Time now, std::vector<std::function<void(WaitOutcome)>>* reached,
    std::vector<std::function<void(WaitOutcome)>>* expired) {
  auto keep = waiters_.begin();
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    if (it->target <= CurrentLocked(it->names)) {
      reached->push_back(std::move(it->done));
    } else if (it->deadline <= now) {
      expired->push_back(std::move(it->done));
    } else {
      if (keep != it) *keep = std::move(*it);
      ++keep;
    }
  }
  waiters_.erase(keep, waiters_.end());
}

void ProgressTracker::TimeOut() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    absl::Time earliest = absl::InfiniteFuture();
    for (const Waiter& w : waiters_) earliest = std::min(earliest, w.deadline);
    timer_cv_.WaitWithDeadline(&mu_, earliest);
    if (stopping_) return;
    std::vector<std::function<void(WaitOutcome)>> reached;
    std::vector<std::function<void(WaitOutcome)>> expired;
    TakeDone(absl::Now(), &reached, &expired);
    if (reached.empty() && expired.empty()) continue;
    mu_.Unlock();
    CallAll(reached, WaitOutcome::kReached);
    CallAll(expired, WaitOutcome::kDeadline);
    mu_.Lock();
  }
}

void ProgressTracker::Listen() {
  // Short waits, so that Stop() is noticed promptly.
  const absl::Duration wait =
      std::min(options_.refresh_interval, absl::Milliseconds(200));
  absl::Duration backoff = absl::Milliseconds(100);
  absl::Time next_refresh = absl::Now() + options_.refresh_interval;
  std::unique_ptr<projections::ProgressListener> listener;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    if (listener == nullptr) {
      absl::StatusOr<std::unique_ptr<projections::ProgressListener>> l =
          projections::ProgressListener::Create(pool_->conninfo(),
                                                options_.schema);
      if (!l.ok()) {
        absl::SleepFor(backoff);
        backoff = std::min(backoff * 2, absl::Seconds(5));
        continue;
      }
      listener = *std::move(l);
      backoff = absl::Milliseconds(100);
      // Whatever committed while nobody listened was announced to nobody.
      next_refresh = absl::Now();
    }
    if (absl::Now() >= next_refresh) {
      absl::Status s = Refresh();
      if (!s.ok()) {
        Log(LogLevel::kWarn, "could not read projection checkpoints",
            {{"error", s.ToString()}});
      }
      next_refresh = absl::Now() + options_.refresh_interval;
    }
    absl::StatusOr<std::vector<projections::Progress>> seen =
        listener->Wait(wait);
    if (!seen.ok()) {
      Log(LogLevel::kWarn, "progress listener lost its connection",
          {{"error", seen.status().ToString()}});
      listener.reset();
      continue;
    }
    for (const projections::Progress& p : *seen) Record(p.name, p.position);
  }
}

}  // namespace cqrs::queries

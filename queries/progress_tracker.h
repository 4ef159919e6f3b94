// Knows how far each projection has got, and tells read-your-writes queries
// when the projections behind them have reached a position.
//
//   ASSIGN_OR_RETURN(auto tracker, ProgressTracker::Create(pool.get(), {}));
//   runner_options.on_progress = [&](absl::string_view name, Position p) {
//     tracker->Record(name, p);           // projections in this process
//   };
//   tracker->Start();                     // projections anywhere (LISTEN)
//   tracker->WhenReached({"account_balances"}, target,
//                        absl::Now() + absl::Seconds(5),
//                        [](WaitOutcome outcome) { ... });
//   server_options.on_shutdown = [&] { tracker->StopWaiting(); };
//
// Positions come from three sources, all of them committed checkpoints: the
// in-process runner (Record), the NOTIFYs every runner and rebuild sends
// with its commits (projections/progress.h), and a re-read of the
// checkpoint table every `refresh_interval` (for notifications lost while
// the listening session was down). Waiting is driven by those updates, with
// one timer thread for the deadlines; nothing polls. On shutdown,
// StopWaiting() answers every waiter at once, so that the server can drain
// without waiting out their deadlines.
//
// Every position the tracker reports is a lower bound: a read that starts
// after Current() returned P sees every event up to P applied.
//
// Thread-safety: thread-safe. `pool` must outlive the tracker.
#ifndef QUERIES_PROGRESS_TRACKER_H_
#define QUERIES_PROGRESS_TRACKER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "eventstore/position.h"
#include "framework/pg_pool.h"

namespace cqrs::queries {

// How a WhenReached() wait ended.
enum class WaitOutcome {
  kReached,   // every projection has processed the target
  kDeadline,  // the deadline passed first
  kShutdown,  // StopWaiting() or Stop(): the process is shutting down
};

struct ProgressTrackerOptions {
  // Schema of the projections' bookkeeping tables.
  std::string schema = "cqrs";
  // How often the checkpoints are re-read from the database, whatever the
  // notifications say.
  absl::Duration refresh_interval = absl::Seconds(1);
};

class ProgressTracker {
 public:
  // Reads the current checkpoints. kFailedPrecondition when the projection
  // tables are not migrated, kUnavailable when the database is unreachable.
  static absl::StatusOr<std::unique_ptr<ProgressTracker>> Create(
      PgPool* pool, ProgressTrackerOptions options);
  ~ProgressTracker();  // stops

  // Starts following other processes' progress (LISTEN and refresh) and
  // the timer for deadlines. Without Start(), only Record() moves positions
  // and waiters time out only when a later Record() looks.
  void Start();
  // Shutdown begins: every pending waiter is called with kShutdown now, and
  // every later WhenReached() whose target is not reached yet at once.
  // Positions keep moving. Idempotent.
  void StopWaiting();
  // StopWaiting(), then stops the threads.
  void Stop();

  // `name` has committed its checkpoint at `position`. Positions only move
  // forward: an older one is ignored.
  void Record(absl::string_view name, const eventstore::Position& position);

  // The least position among `names`: every one of them has processed
  // every event up to it. A name never seen counts as Position::Start().
  eventstore::Position Current(const std::vector<std::string>& names) const;

  // Calls `done(kReached)` once every projection in `names` has processed
  // `target`, `done(kDeadline)` at `deadline`, or `done(kShutdown)` when
  // StopWaiting() comes first; exactly once. It may run inline (already
  // reached, deadline passed, shutting down), later on a tracker thread, or
  // on the thread that calls StopWaiting(): keep it short and non-blocking.
  void WhenReached(std::vector<std::string> names, eventstore::Position target,
                   absl::Time deadline, std::function<void(WaitOutcome)> done);

  // Waiters not yet answered (for tests and metrics).
  size_t waiting() const;

 private:
  struct Waiter {
    std::vector<std::string> names;
    eventstore::Position target;
    absl::Time deadline;
    std::function<void(WaitOutcome)> done;
  };

  ProgressTracker(PgPool* pool, ProgressTrackerOptions options);
  absl::Status Refresh();
  void Listen();
  void TimeOut();
  eventstore::Position CurrentLocked(const std::vector<std::string>& names)
      const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the callbacks of the waiters whose targets are reached into
  // `*reached`, and of those past their deadline at `now` into `*expired`.
  void TakeDone(absl::Time now,
                std::vector<std::function<void(WaitOutcome)>>* reached,
                std::vector<std::function<void(WaitOutcome)>>* expired)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  PgPool* const pool_;
  const ProgressTrackerOptions options_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, eventstore::Position> positions_
      ABSL_GUARDED_BY(mu_);
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  // StopWaiting() ran: no new waiter is parked.
  bool refusing_waits_ ABSL_GUARDED_BY(mu_) = false;
  // Stop() ran: the threads end.
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Wakes the timer thread: a new waiter, or stopping.
  absl::CondVar timer_cv_;

  // Touched by Start() and Stop() only.
  std::thread listener_;
  std::thread timer_;
};

}  // namespace cqrs::queries

#endif  // QUERIES_PROGRESS_TRACKER_H_

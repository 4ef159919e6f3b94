// Runs projections (projections/projection.h): each follows the global event
// order from its checkpoint, in batches, and commits every batch's read-model
// writes together with its new checkpoint, so each event takes effect
// exactly once across crashes. After catching up it waits for the event
// store's NOTIFY, polling as a fallback.
//
//   RETURN_IF_ERROR(ProjectionRunner::Migrate(*pool, "bank"));
//   ASSIGN_OR_RETURN(auto runner, ProjectionRunner::Create(
//       pool.get(), store.get(), {AccountBalances()}, options));
//   runner->Start();  ...  runner->Stop();
//
// Ownership: each projection is run by one process at a time. A runner holds
// a PostgreSQL advisory lock per projection on a dedicated session; a
// second process running the same projections is a hot standby that takes
// over within `takeover_interval` after the owner's session ends. (Even two
// runners working at once could not apply an event twice: every batch
// re-checks the checkpoint under a row lock before it commits.)
//
// Bookkeeping tables (docs/projections.md): `<schema>.projections` (one row
// per projection: version, live generation, checkpoint, state, last error)
// and `<schema>.projection_parked` (the dead letters).
//
// Thread-safety: Start/Stop from one thread; Statuses() from any thread.
#ifndef PROJECTIONS_RUNNER_H_
#define PROJECTIONS_RUNNER_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "eventstore/postgres_event_store.h"
#include "framework/pg_pool.h"
#include "projections/projection.h"

namespace cqrs::projections {

struct ProjectionRunnerOptions {
  // Schema of the read-model tables and the bookkeeping tables. The event
  // store's schema is the store's own.
  std::string schema = "cqrs";
  // Events per batch (and per read-model transaction).
  int batch_size = 1000;
  // Live mode: how often to look for new events without a notification.
  absl::Duration poll_interval = absl::Seconds(1);
  // Live mode: a projection starts a batch at most this often (a full batch
  // goes on at once). Events that commit meanwhile join the next batch:
  // under load, fewer and larger transactions for at most this much more
  // lag. 0: a batch as soon as events are there. (10 ms rather than 5:
  // fewer read-model commits under load, the lag's p99 unchanged; see
  // docs/projections.md.)
  absl::Duration live_batch_interval = absl::Milliseconds(10);
  // Progress over events a projection does not handle is stored once this
  // long has passed (checked at each read, so within a poll_interval more
  // when idle) or batch_size such events; it is reported at once either
  // way.
  absl::Duration checkpoint_interval = absl::Seconds(1);
  // A standby tries to take ownership this often.
  absl::Duration takeover_interval = absl::Seconds(1);
  // Backoff after a failed batch: base * 2^attempt, at most 5 s.
  //
  // How a failed batch is handled (docs/projections.md, "Errors"):
  // - a transient error (cqrs::IsTransientError), or an error outside the
  //   handler, is retried with this backoff without end and shown as
  //   ProjectionStatus::transient_error; it never counts toward the
  //   projection's max_attempts;
  // - eventstore::MustRetryTransaction() from a batch of several events
  //   (its transaction was too old for an append it made) makes the worker
  //   apply that batch's events one per transaction, then go back to full
  //   batches; not an attempt either;
  // - any other handler error counts: after max_attempts the worker applies
  //   the batch one event at a time, and an event that fails max_attempts
  //   times on its own gets the projection's ErrorPolicy (kStop: state
  //   "failed" until ResumeProjection() or a rebuild; kPark: dead letters).
  absl::Duration retry_backoff = absl::Milliseconds(50);
  // Called on the projection's worker thread whenever the projection has
  // processed more events: after each committed checkpoint (the same
  // progress is NOTIFYed to other processes, see projections/progress.h),
  // and after pages without events of its types, whose progress is stored
  // later. Keep it cheap; it must not call the runner.
  std::function<void(absl::string_view projection, eventstore::Position)>
      on_progress;
  // Fault injection for tests: runs after the handler, before the commit;
  // an error rolls the batch back as a handler error would.
  std::function<absl::Status(absl::string_view projection,
                             eventstore::Position last)>
      before_commit_for_testing;
};

// What one projection is doing, as seen by this process.
struct ProjectionStatus {
  std::string name;
  int version = 0;
  // "running" (caught up), "catching_up", "standby" (another process owns
  // it), "failed" (stopped by an error; see last_error), "outdated" (the
  // stored read model is of another version: this process neither applies
  // nor holds it, so that a process of that version can, until a rebuild
  // with this version swaps one in), "stopped" (not started).
  std::string state;
  // How far it has got: the committed checkpoint, or beyond it by events
  // it does not handle (see checkpoint_interval).
  eventstore::Position position;
  // The error that stopped it (state "failed"), or the last one that made
  // it park an event; empty when none.
  std::string last_error;
  std::optional<eventstore::Position> failed_position;
  int64_t parked = 0;  // events in the dead-letter table
  // While the worker retries a failed batch without end, the error of the
  // last attempt; empty once a batch succeeds. Retried without end (never
  // counted toward max_attempts, never the error policy) are transient
  // errors (cqrs::IsTransientError: a lost session, a lock or statement
  // timeout, a deadlock or serialization failure, a full disk...) and errors
  // outside the handler. The state stays what it was ("running",
  // "catching_up"). Also stored in the projection's row (see
  // projections/status.h).
  std::string transient_error;
};

class ProjectionRunner {
 public:
  // Creates or upgrades the bookkeeping tables in `schema` (idempotent).
  static absl::Status Migrate(PgPool& pool, absl::string_view schema);

  // Validates the projections and creates the read-model tables of those
  // seen for the first time. `pool` and `store` must outlive the runner; the
  // pool needs a connection per projection that runs a batch at once.
  // Errors: kInvalidArgument for a bad projection or duplicate names,
  // kFailedPrecondition when Migrate() has not run, kUnavailable when the
  // database is unreachable.
  static absl::StatusOr<std::unique_ptr<ProjectionRunner>> Create(
      PgPool* pool, eventstore::PostgresEventStore* store,
      std::vector<Projection> projections, ProjectionRunnerOptions options);
  ~ProjectionRunner();  // stops

  // Starts one worker thread per projection and a listener thread.
  void Start();
  // Stops every thread; a batch in flight commits or rolls back first.
  void Stop();

  std::vector<ProjectionStatus> Statuses() const;

 private:
  class Impl;
  explicit ProjectionRunner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cqrs::projections

#endif  // PROJECTIONS_RUNNER_H_

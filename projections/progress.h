// How a projection's progress is announced to other processes: every
// checkpoint a runner or a rebuild commits is NOTIFYed on the channel
// "<schema>_projections" with the payload "<name> <position token>", only
// once the checkpoint has committed (a runner's from a session of its own
// right after the commit, ProgressNotifier; a rebuild's swap with its
// commit). ProgressListener
// follows that channel; the query side uses it to answer read-your-writes
// requests when the projections run in another process.
//
//   ASSIGN_OR_RETURN(auto listener, ProgressListener::Create(url, "bank"));
//   ASSIGN_OR_RETURN(std::vector<Progress> seen,
//                    listener->Wait(absl::Seconds(1)));
//
// Thread-safety: ProgressListener is for one thread at a time.
#ifndef PROJECTIONS_PROGRESS_H_
#define PROJECTIONS_PROGRESS_H_

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

namespace pqxx {
class transaction_base;
}  // namespace pqxx

namespace cqrs::projections {

// A checkpoint that committed: `name` has processed every event up to and
// including `position`.
struct Progress {
  std::string name;
  eventstore::Position position;
};

// The channel of the projections in `schema`.
std::string ProgressChannel(absl::string_view schema);

// Queues the notification of `name` reaching `position` in `tx`; it is sent
// when `tx` commits. Throws what libpqxx throws.
void NotifyProgress(pqxx::transaction_base& tx, absl::string_view schema,
                    absl::string_view name,
                    const eventstore::Position& position);

// Sends the progress of a runner's projections after their checkpoints
// commit, from a session of its own, rather than inside each batch's
// transaction: PostgreSQL serializes the commits of all transactions that
// NOTIFY (each holds a database-wide lock through its WAL flush), so every
// projection's batch would wait for the others'. Progress that comes in
// while a notification is being sent is coalesced (the newest position of
// each projection). A notification lost with the session, or with a
// process killed between a commit and its notification, only delays
// readers in other processes until they re-read the checkpoints
// (queries::ProgressTracker does every refresh_interval).
//
// Thread-safety: Notify() from any thread.
class ProgressNotifier {
 public:
  ProgressNotifier(std::string conninfo, absl::string_view schema);
  // Sends what is pending, then stops.
  ~ProgressNotifier();
  ProgressNotifier(const ProgressNotifier&) = delete;
  ProgressNotifier& operator=(const ProgressNotifier&) = delete;

  // `name` committed its checkpoint at `position`.
  void Notify(absl::string_view name, const eventstore::Position& position);

 private:
  void Loop();

  const std::string conninfo_;
  const std::string channel_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, eventstore::Position> pending_
      ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Every projection's committed checkpoint in `schema`. kFailedPrecondition
// when the projection tables are not migrated, kUnavailable when the
// database is unreachable.
absl::StatusOr<std::vector<Progress>> ReadCheckpoints(PgPool& pool,
                                                      absl::string_view schema);

class ProgressListener {
 public:
  // Connects and LISTENs on a session named "cqrs progress <schema>".
  // kUnavailable when the database is unreachable.
  static absl::StatusOr<std::unique_ptr<ProgressListener>> Create(
      const std::string& conninfo, absl::string_view schema);
  ~ProgressListener();

  // Waits up to `timeout` for notifications; returns those that arrived
  // (empty on timeout), oldest first. kUnavailable when the connection is
  // lost: create a new listener and re-read the checkpoints with
  // ReadCheckpoints(), since notifications sent meanwhile are lost.
  absl::StatusOr<std::vector<Progress>> Wait(absl::Duration timeout);

  // The server process id of the listening session (for tests).
  int BackendPid() const;

 private:
  struct State;
  explicit ProgressListener(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace cqrs::projections

#endif  // PROJECTIONS_PROGRESS_H_

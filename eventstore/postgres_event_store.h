// The PostgreSQL implementation of EventStore, its schema migrations and its
// change notifications.
//
//   ASSIGN_OR_RETURN(auto pool, cqrs::PgPool::Create(pool_options));
//   RETURN_IF_ERROR(PostgresEventStore::Migrate(*pool, "cqrs"));
//   ASSIGN_OR_RETURN(auto store, PostgresEventStore::Create(pool.get(), {}));
//
// Tables, indexes, the ordering technique and the notification channel are
// described in docs/event-store.md.
//
// Thread-safety: PostgresEventStore and its methods are thread-safe.
// ChangeListener is for one thread at a time.
#ifndef EVENTSTORE_POSTGRES_EVENT_STORE_H_
#define EVENTSTORE_POSTGRES_EVENT_STORE_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "eventstore/event_store.h"
#include "framework/metrics.h"
#include "framework/pg_pool.h"

namespace pqxx {
class transaction_base;
}  // namespace pqxx

namespace cqrs::eventstore {

struct PostgresEventStoreOptions {
  // PostgreSQL schema that holds the store's tables: a lower-case identifier
  // ([a-z_][a-z0-9_]*, at most 63 characters).
  std::string schema = "cqrs";

  enum class Notify {
    // A dedicated connection sends one NOTIFY after each commit, coalescing
    // appends that commit while the previous NOTIFY is in flight. Appends do
    // not wait for it. PostgreSQL serializes the commits of all transactions
    // that NOTIFY (a global lock held through the WAL flush), so this is the
    // default: it keeps concurrent appends as fast as plain inserts.
    kAfterCommit,
    // Each append's transaction NOTIFYs itself: the notification is atomic
    // with the commit, at the price of serialized commits.
    kInTransaction,
    kNone,
  };
  Notify notify = Notify::kAfterCommit;
  // With kAfterCommit: at most one NOTIFY per interval; appends in between
  // are covered by the next one. Bounds the cost under load at the price of
  // up to this much extra wake-up latency.
  absl::Duration notify_min_interval = absl::Milliseconds(5);

  // Group commit: single-event appends at an exact expected version (what
  // commands do) that arrive while earlier ones are being written are
  // written together, as one autocommitted statement, so that they share
  // a round trip and a WAL flush. Each keeps its own outcome: a conflict or
  // error of one never fails another. At most `group_commit_in_flight`
  // such statements run at once (commit included); the appends that arrive
  // meanwhile form the next group. 0 turns grouping off (each append is its
  // own statement).
  int group_commit_in_flight = 2;
  int group_commit_max_events = 64;  // appends per statement

  // When set, counts every event this store commits (not retries that found
  // their events stored already). Not owned; must outlive the store.
  Counter* events_appended = nullptr;
};

class PostgresEventStore : public EventStore {
 public:
  // Creates or upgrades the store's tables in `schema` (idempotent; safe to
  // run from several processes at once). Returns kInvalidArgument for a bad
  // schema name, kUnavailable when the database is unreachable.
  static absl::Status Migrate(PgPool& pool, absl::string_view schema);

  // The schema version Migrate() brings a database to.
  static int LatestSchemaVersion();

  // Returns the migrated version of `schema` (0 when it is not migrated).
  static absl::StatusOr<int> SchemaVersion(PgPool& pool,
                                           absl::string_view schema);

  // The channel appends NOTIFY on: "<schema>_events". The payload is the
  // position token (Position::ToToken) of the newest appended event.
  static std::string NotificationChannel(absl::string_view schema);

  // `pool` must outlive the store. The schema must be migrated (kFailed-
  // Precondition otherwise); kInvalidArgument for a bad schema name.
  static absl::StatusOr<std::unique_ptr<PostgresEventStore>> Create(
      PgPool* pool, PostgresEventStoreOptions options);
  ~PostgresEventStore() override;

  absl::StatusOr<AppendResult> Append(absl::string_view stream_id,
                                      ExpectedVersion expected,
                                      std::vector<NewEvent> events) override;
  absl::StatusOr<std::vector<RecordedEvent>> ReadStream(
      absl::string_view stream_id, Direction direction, int64_t from_version,
      int limit) override;
  absl::StatusOr<ReadAllResult> ReadAll(Position after, int limit) override;
  absl::StatusOr<ReadAllResult> ReadCategory(absl::string_view category,
                                             Position after,
                                             int limit) override;
  absl::StatusOr<StreamInfo> GetStreamInfo(
      absl::string_view stream_id) override;
  absl::Status DeleteStream(absl::string_view stream_id,
                            ExpectedVersion expected) override;
  absl::Status SaveSnapshot(const Snapshot& snapshot) override;
  absl::StatusOr<Snapshot> LoadSnapshot(absl::string_view stream_id) override;
  absl::StatusOr<Position> HeadPosition() override;

  // The position just before the first event (in commit order) recorded at
  // or after `time`: reading after it starts with that event. HeadPosition()
  // when no event was recorded since `time`. Scans the log (recorded_at has
  // no index): for administration, not for a hot path. kUnavailable as the
  // reads.
  absl::StatusOr<Position> PositionBefore(absl::Time time);

  // An EventStore whose every operation runs inside `tx`, a transaction the
  // caller owns and commits or aborts: appends become atomic with whatever
  // else `tx` writes (the command side stores idempotency records this way).
  // Errors are those of the EventStore methods, plus:
  //   MustRetryTransaction(status): the append would put the stream's
  //     versions out of order in the global order (`tx` got its transaction
  //     id before another writer committed to the stream), or a writer of
  //     an older build took the version. Nothing was written; roll `tx`
  //     back and run the whole transaction again.
  // Use READ COMMITTED (pqxx::work): every append locks its stream until
  // `tx` ends and then reads the stream's latest commit. Once failure() is
  // set, `tx` must be rolled back. SaveSnapshot() runs in a savepoint, so
  // its failure never aborts `tx`. `tx` and this store must outlive the
  // result. After committing, pass last_appended() to NotifyCommitted() so
  // that subscribers wake up.
  class TransactionEventStore : public EventStore {
   public:
    // The position of the newest event appended through this store.
    virtual std::optional<Position> last_appended() const = 0;
    // The first error after which `tx` cannot commit: a database error
    // (PostgreSQL aborted `tx`) or a MustRetryTransaction() refusal. OK
    // while `tx` can still commit.
    virtual absl::Status failure() const = 0;
    bool failed() const { return !failure().ok(); }
    // Events newly appended through this object (for NotifyCommitted).
    virtual int64_t appended_events() const = 0;
  };
  std::unique_ptr<TransactionEventStore> InTransaction(
      pqxx::transaction_base& tx) const;

  // Announces `events` events committed through InTransaction() up to
  // `position`: counts them (events_appended) and, with Notify::kAfterCommit,
  // notifies the channel.
  void NotifyCommitted(Position position, int64_t events);

  // Calls `observer` with the position of every commit that this object
  // makes or is told of (NotifyCommitted), on the committing thread, right
  // after the commit, in no particular order across threads. In-process
  // readers (the projection runner) learn of new events this way without
  // waiting for the rate-limited NOTIFY, which still reaches every other
  // process. `observer` must return quickly and must not call back into
  // this store. Returns an id for RemoveCommitObserver(), which returns
  // once no call of the observer is running.
  int AddCommitObserver(std::function<void(Position)> observer);
  void RemoveCommitObserver(int id);

  // The PostgreSQL schema of the store's tables.
  const std::string& schema() const { return options_.schema; }

  // Grouped appends waiting for a statement to carry them (tests,
  // diagnostics).
  int grouped_appends_waiting() const;

  class Statements;  // the store's SQL; public for the .cc's helpers only

 private:
  class TransactionStore;
  PostgresEventStore(PgPool* pool, PostgresEventStoreOptions options);
  std::string InTransactionChannel() const;
  void SignalNotifier(Position position);
  void NotifierLoop();
  struct GroupedAppend;
  // Appends `g` (one event, exact version) together with whatever other
  // grouped appends are waiting; sets g->outcome.
  void AppendGrouped(GroupedAppend* g);
  // Writes `group` in one autocommitted statement; sets (*inserted)[i]
  // for each append it stored.
  void WriteGroup(const std::vector<GroupedAppend*>& group,
                  std::vector<bool>* inserted);

  PgPool* const pool_;
  const PostgresEventStoreOptions options_;
  const std::unique_ptr<Statements> sql_;  // SQL text for the schema

  mutable absl::Mutex group_mu_;
  std::vector<GroupedAppend*> group_queue_ ABSL_GUARDED_BY(group_mu_);
  int groups_in_flight_ ABSL_GUARDED_BY(group_mu_) = 0;

  // Readers held while observers run; the writer, to change the list.
  absl::Mutex observers_mu_;
  std::vector<std::pair<int, std::function<void(Position)>>> observers_
      ABSL_GUARDED_BY(observers_mu_);
  int next_observer_id_ ABSL_GUARDED_BY(observers_mu_) = 0;

  absl::Mutex notify_mu_;
  std::optional<Position> pending_notify_ ABSL_GUARDED_BY(notify_mu_);
  bool stopping_ ABSL_GUARDED_BY(notify_mu_) = false;
  std::thread notifier_;
};

// Waits for the store's change notifications on a dedicated connection.
//
//   ASSIGN_OR_RETURN(auto listener, ChangeListener::Create(url, "cqrs"));
//   ASSIGN_OR_RETURN(std::optional<Position> p,
//                    listener->Wait(absl::Seconds(1)));
class ChangeListener {
 public:
  // Connects and LISTENs, on a session named (application_name)
  // "cqrs listener <schema>". kUnavailable when the database is unreachable.
  static absl::StatusOr<std::unique_ptr<ChangeListener>> Create(
      std::string conninfo, absl::string_view schema);
  ~ChangeListener();

  // Waits up to `timeout` for notifications. Returns the newest position
  // notified since the last call, or nullopt on timeout. Returns kUnavailable
  // when the connection is lost: reconnect with Create() and read from the
  // last position you processed, since notifications sent meanwhile are lost.
  absl::StatusOr<std::optional<Position>> Wait(absl::Duration timeout);

  // The server process id of the listening connection (for tests and
  // diagnostics).
  int BackendPid() const;

 private:
  struct State;
  explicit ChangeListener(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace cqrs::eventstore

#endif  // EVENTSTORE_POSTGRES_EVENT_STORE_H_

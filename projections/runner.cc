#include "projections/runner.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <set>
#include <thread>
#include <utility>

#include <pqxx/pqxx>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "eventstore/event_store.h"
#include "framework/log.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "projections/internal/common.h"
#include "projections/internal/shared_tail.h"
#include "projections/progress.h"

namespace cqrs::projections {
namespace {

using eventstore::Position;
using eventstore::RecordedEvent;
using projections_internal::kOwnershipLockClass;
using projections_internal::ParseXid;

constexpr char kComponent[] = "projections";

constexpr Migration kMigrations[] = {
    {1, "projection checkpoints and dead letters", R"sql(
CREATE TABLE {s}.projections (
  name            text        PRIMARY KEY,
  version         integer     NOT NULL,
  generation      integer     NOT NULL,
  position_xid    xid8        NOT NULL DEFAULT '0',
  position_gp     bigint      NOT NULL DEFAULT 0,
  state           text        NOT NULL DEFAULT 'running',
  last_error      text,
  failed_position text,
  -- Bumped by a replay of parked events, so that runners reload the set of
  -- streams that wait behind a parked event.
  parked_epoch    integer     NOT NULL DEFAULT 0,
  updated_at      timestamptz NOT NULL DEFAULT now()
);
-- Dead letters: the whole event, so that a replay needs nothing else.
CREATE TABLE {s}.projection_parked (
  name            text        NOT NULL,
  generation      integer     NOT NULL,
  transaction_id  xid8        NOT NULL,
  global_position bigint      NOT NULL,
  stream_id       text        NOT NULL,
  stream_version  bigint      NOT NULL,
  event_id        uuid        NOT NULL,
  event_type      text        NOT NULL,
  schema_version  integer     NOT NULL,
  data            json        NOT NULL,
  metadata        json        NOT NULL,
  recorded_at     timestamptz NOT NULL,
  error           text        NOT NULL,
  parked_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, generation, transaction_id, global_position)
);
)sql"},
    {2, "rebuild checkpoints", R"sql(
-- A rebuild in progress (or interrupted): the generation it fills and how
-- far it got. Deleted by the swap.
CREATE TABLE {s}.projection_rebuilds (
  name         text        PRIMARY KEY,
  version      integer     NOT NULL,
  generation   integer     NOT NULL,
  position_xid xid8        NOT NULL DEFAULT '0',
  position_gp  bigint      NOT NULL DEFAULT 0,
  -- The tables are logged and indexed: only the swap is left.
  finished     boolean     NOT NULL DEFAULT false,
  started_at   timestamptz NOT NULL DEFAULT now()
);
)sql"},
    {3, "transient errors and the time of the last error in the status",
     R"sql(
-- The error of the last failed attempt while the owner retries without end
-- (a transient error); NULL once a batch succeeds.
ALTER TABLE {s}.projections ADD COLUMN transient_error text;
-- When last_error happened.
ALTER TABLE {s}.projections ADD COLUMN last_error_at timestamptz;
)sql"},
};
static_assert(std::size(kMigrations) ==
                  projections_internal::kBookkeepingSchemaVersion,
              "status readers check the bookkeeping schema version");

}  // namespace

// ---------------------------------------------------------------------------

// One projection's worker: ownership, batches, error policy, live waiting.
class Worker {
 public:
  Worker(PgPool* pool, projections_internal::SharedTail* tail,
         const ProjectionRunnerOptions* options, ProgressNotifier* notifier,
         Projection projection)
      : pool_(pool),
        tail_(tail),
        options_(options),
        notifier_(notifier),
        p_(std::move(projection)),
        types_(p_.event_types.begin(), p_.event_types.end()) {
    status_.name = p_.name;
    status_.version = p_.version;
    status_.state = "stopped";
  }

  void Start() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = false;
    }
    thread_ = std::thread([this] { Loop(); });
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
    ownership_.reset();
    SetState("stopped");
  }

  // A notification: events up to `position` are committed.
  void Notify(Position position) {
    absl::MutexLock lock(&mu_);
    if (notified_ < position) notified_ = position;
  }
  // The listener reconnected: notifications may have been lost.
  void Poke() {
    absl::MutexLock lock(&mu_);
    poked_ = true;
  }

  ProjectionStatus Status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  enum class BatchResult { kFull, kPartial, kEmpty, kRaced };

  struct Failure {
    absl::Status status;
    std::optional<RecordedEvent> event;  // the failing event, when known
  };

  void SetState(absl::string_view state) {
    absl::MutexLock lock(&mu_);
    status_.state = std::string(state);
  }

  bool stopping() const {
    absl::MutexLock lock(&mu_);
    return stopping_;
  }

  // Sleeps up to `d`, returning early when stopping.
  void SleepFor(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
  }

  void Loop() {
    // Failures of the current batch that count toward max_attempts: errors
    // a handler gave for its events that are not transient.
    int attempts = 0;
    // Failures in a row that are retried without end: transient errors,
    // and errors outside the handler (which no event causes).
    int setbacks = 0;
    // After a failed batch: one event at a time up to here, to find the
    // failing event. (Not std::optional: GCC 12 warns falsely on it.)
    bool isolating = false;
    Position isolate_until;
    // Reads in a row that did not reach a notified position.
    int hidden_polls = 0;
    while (!stopping()) {
      if (outdated_) {
        // The stored read model is another version's: not ours to apply,
        // and not ours to hold (a process of that version must be able to
        // take it). Compete again once a rebuild made it this version.
        absl::StatusOr<int> stored = StoredVersion();
        if (!stored.ok() || *stored != p_.version) {
          SleepFor(options_->takeover_interval);
          continue;
        }
        outdated_ = false;
        Log(LogLevel::kInfo, "projection version matches again",
            {{"projection", p_.name}, {"version", p_.version}});
      }
      if (!Owned()) {
        // A standby of another version than the stored one could never
        // apply it: say so.
        absl::StatusOr<int> stored = StoredVersion();
        if (stored.ok() && *stored != p_.version) {
          outdated_ = true;
          absl::MutexLock lock(&mu_);
          status_.state = "outdated";
          status_.last_error = OutdatedMessage(*stored);
        } else {
          SetState("standby");
        }
        SleepFor(options_->takeover_interval);
        continue;
      }
      if (!prepared_) {
        absl::Status s = Prepare();
        if (!s.ok()) {
          Log(LogLevel::kWarn, "projection not ready",
              {{"projection", p_.name}, {"error", s.ToString()}});
          SleepFor(Backoff(++setbacks));
          continue;
        }
        if (version_mismatch_) {
          // Another version's read model: leave it alone and let go of it,
          // so that a process of that version applies it until a rebuild
          // with this version swaps one in.
          Log(LogLevel::kWarn, "projection outdated: ownership released",
              {{"projection", p_.name}, {"error", Status().last_error}});
          prepared_ = false;
          outdated_ = true;
          ownership_.reset();
          continue;
        }
      }
      if (failed_) {
        // Stopped by a failing event until a rebuild replaces the read
        // model or an operator resumes it (ResumeProjection), both of which
        // clear the state: look again now and then.
        prepared_ = false;
        SleepFor(options_->poll_interval);
        continue;
      }
      const int limit = isolating           ? 1
                        : p_.batch_size > 0 ? p_.batch_size
                                            : options_->batch_size;
      Failure failure;
      batch_started_ = absl::Now();
      absl::StatusOr<BatchResult> r = RunBatch(limit, &failure);
      if (!r.ok()) {
        const absl::Status& error = r.status();
        if (eventstore::MustRetryTransaction(error) && limit > 1) {
          // The batch's transaction was too old for one of its appends (it
          // took its transaction id before another writer committed to the
          // stream). The same batch would likely meet that again: one event
          // per transaction up to the end of this batch, not an attempt.
          Log(LogLevel::kInfo, "projection batch goes on one event at a time",
              {{"projection", p_.name}, {"error", error.ToString()}});
          attempts = 0;
          isolating = true;
          isolate_until = last_read_;
          continue;
        }
        if (IsTransientError(error) || !failure.event.has_value()) {
          // Goes away by itself (a lock or statement timeout, a lost
          // session, a deadlock...), or no event caused it: never the
          // error policy; retried until it works.
          ++setbacks;
          Log(LogLevel::kWarn, "projection batch failed, retrying",
              {{"projection", p_.name},
               {"retry", absl::StrCat(setbacks)},
               {"error", error.ToString()}});
          ReportTransient(error);
          // A single event whose transaction was too old lost a race with
          // another writer, not a fight with a busy database: a new
          // transaction most likely wins, so it goes again almost at once.
          SleepFor(eventstore::MustRetryTransaction(error)
                       ? absl::Milliseconds(1 << std::min(setbacks, 6))
                       : Backoff(setbacks));
          continue;
        }
        ClearTransient();  // this failure is not transient
        ++attempts;
        Log(LogLevel::kWarn, "projection batch failed",
            {{"projection", p_.name},
             {"attempt", absl::StrCat(attempts)},
             {"error", error.ToString()}});
        if (attempts >= p_.max_attempts) {
          attempts = 0;
          if (limit > 1) {
            // Find the failing event: one event at a time up to the end of
            // this batch, each with max_attempts attempts of its own.
            isolating = true;
            isolate_until = last_read_;
            continue;
          }
          HandlePoison(*failure.event, error);
          continue;
        }
        SleepFor(Backoff(attempts));
        continue;
      }
      attempts = 0;
      setbacks = 0;
      ClearTransient();
      if (isolating && !(checkpoint() < isolate_until)) isolating = false;
      switch (*r) {
        case BatchResult::kFull:
        case BatchResult::kRaced:
          SetState("catching_up");
          hidden_polls = 0;
          continue;
        case BatchResult::kPartial:
          hidden_polls = 0;
          SetState("running");
          break;
        case BatchResult::kEmpty:
          SetState("running");
          break;
      }
      WaitForEvents(&hidden_polls);
    }
  }

  Position checkpoint() const {
    absl::MutexLock lock(&mu_);
    return status_.position;
  }

  absl::Duration Backoff(int attempt) const {
    return std::min(absl::Seconds(5),
                    options_->retry_backoff *
                        (int64_t{1} << std::min(std::max(attempt - 1, 0), 7)));
  }

  // Live mode: returns when a notification says there is more, when the
  // poll interval passed, or when stopping. A notified position that the
  // last read did not reach yet (its transaction was not yet visible to
  // readers: an older transaction was still running) is read again after a
  // pause: 1 ms for the first 20 times, since what hides it is most often
  // an append or a rebuild's write batch that ends within milliseconds (a
  // pause that doubled from the start overslept those by up to as long
  // again, read-your-writes included), then doubling up to 50 ms, so that
  // a long transaction is not polled every millisecond for its whole life.
  void WaitForEvents(int* hidden_polls) {
    absl::MutexLock lock(&mu_);
    // The next batch starts no sooner than live_batch_interval after the
    // last one started (see ProjectionRunnerOptions).
    const absl::Time earliest = batch_started_ + options_->live_batch_interval;
    if (status_.position < notified_) {
      constexpr int kQuickPolls = 20;
      const int slow = std::max(0, *hidden_polls - kQuickPolls);
      ++*hidden_polls;
      mu_.AwaitWithTimeout(
          absl::Condition(&stopping_),
          std::max(std::min(absl::Milliseconds(int64_t{1} << std::min(slow, 6)),
                            absl::Milliseconds(50)),
                   earliest - absl::Now()));
      return;
    }
    *hidden_polls = 0;
    auto more = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || poked_ || status_.position < notified_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&more), options_->poll_interval);
    poked_ = false;
    const absl::Duration early = earliest - absl::Now();
    if (early > absl::ZeroDuration()) {
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), early);
    }
  }

  std::string OutdatedMessage(int stored) const {
    return absl::StrCat("stored version ", stored, ", this build has ",
                        p_.version, ": run `projections rebuild ", p_.name,
                        "` with this build");
  }

  // The projection's stored version (which version's read model it is).
  absl::StatusOr<int> StoredVersion() {
    int version = 0;
    RETURN_IF_ERROR(pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::nontransaction tx(conn);
          version = tx.exec_params1(
                          absl::StrCat("SELECT version FROM ", options_->schema,
                                       ".projections WHERE name = $1"),
                          p_.name)[0]
                        .as<int>();
          return absl::OkStatus();
        }));
    return version;
  }

  // Takes or confirms ownership on the dedicated session.
  bool Owned() {
    const absl::Time now = absl::Now();
    if (ownership_ != nullptr && now < next_ownership_check_) return true;
    next_ownership_check_ = now + options_->poll_interval;
    try {
      if (ownership_ != nullptr && ownership_->is_open()) {
        // Also notices, while this runner has nothing to do, a rebuild that
        // swapped in another version and a replay of parked events (whose
        // outcome changes the parked streams and the last error).
        pqxx::nontransaction tx(*ownership_);
        const pqxx::row row = tx.exec_params1(
            absl::StrCat("SELECT version, parked_epoch FROM ", options_->schema,
                         ".projections WHERE name = $1"),
            p_.name);
        if (row[0].as<int>() != p_.version ||
            row[1].as<int>() != parked_epoch_) {
          prepared_ = false;
        }
        return true;
      }
      ownership_.reset();
      prepared_ = false;
      auto conn = std::make_unique<pqxx::connection>(pool_->conninfo());
      pqxx::nontransaction tx(*conn);
      tx.exec_params(
          "SELECT set_config('application_name', $1, false)",
          absl::StrCat("cqrs projection ", options_->schema, ".", p_.name));
      const bool got =
          tx.exec_params1("SELECT pg_try_advisory_lock($1, hashtext($2))",
                          kOwnershipLockClass,
                          absl::StrCat(options_->schema, ".", p_.name))[0]
              .as<bool>();
      if (!got) return false;
      ownership_ = std::move(conn);
      Log(LogLevel::kInfo, "projection owned",
          {{"projection", p_.name}, {"schema", options_->schema}});
      return true;
    } catch (const std::exception& e) {
      Log(LogLevel::kWarn, "projection ownership session failed",
          {{"projection", p_.name}, {"error", e.what()}});
      ownership_.reset();
      prepared_ = false;
      return false;
    }
  }

  // Loads the projection's row: generation, checkpoint, state, parked
  // streams. The row and tables exist (Create made them).
  absl::Status Prepare() {
    return pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::work tx(conn);
          pqxx::row row = tx.exec_params1(
              absl::StrCat("SELECT version, generation, position_xid::text, "
                           "position_gp, state, coalesce(last_error, ''), "
                           "coalesce(failed_position, ''), parked_epoch, "
                           "coalesce(transient_error, '') FROM ",
                           options_->schema, ".projections WHERE name = $1"),
              p_.name);
          const int version = row[0].as<int>();
          generation_ = row[1].as<int>();
          parked_epoch_ = row[7].as<int>();
          tables_ =
              projections_internal::TableMap(options_->schema, p_, generation_);
          parked_streams_.clear();
          int64_t parked = 0;
          for (const pqxx::row& r : tx.exec_params(
                   absl::StrCat("SELECT stream_id, count(*) FROM ",
                                options_->schema,
                                ".projection_parked WHERE name = $1 AND "
                                "generation = $2 GROUP BY stream_id"),
                   p_.name, generation_)) {
            parked_streams_.insert(r[0].as<std::string>());
            parked += r[1].as<int64_t>();
          }
          tx.commit();
          stored_transient_ = row[8].as<std::string>();
          absl::MutexLock lock(&mu_);
          status_.position = Position{ParseXid(row[2]), row[3].as<int64_t>()};
          MarkStored(status_.position);
          status_.parked = parked;
          failed_ = row[4].as<std::string>() == "failed";
          status_.last_error = row[5].as<std::string>();
          status_.failed_position.reset();
          if (failed_) {
            absl::StatusOr<Position> fp =
                Position::FromToken(row[6].as<std::string>());
            if (fp.ok()) status_.failed_position = *fp;
            status_.state = "failed";
          } else if (status_.state != "running") {
            // Owned and about to work (also after a resume): "running"
            // once a batch finds it caught up.
            status_.state = "catching_up";
          }
          version_mismatch_ = version != p_.version;
          if (version_mismatch_) {
            status_.state = "outdated";
            status_.last_error = OutdatedMessage(version);
          }
          prepared_ = true;
          return absl::OkStatus();
        });
  }

  // One batch: read after the checkpoint, lock and re-check the checkpoint,
  // apply, move the checkpoint, commit.
  //
  // A page without a single event of the projection's types changes
  // nothing: its progress is reported (on_progress) but stored only once
  // batch_size such events or checkpoint_interval have gone by (checked on
  // every read, so an idle projection's polls store it too), so that
  // projections an event does not concern do not commit (a WAL flush) for
  // it. Restarting from the older stored checkpoint only skips those events
  // again.
  absl::StatusOr<BatchResult> RunBatch(int limit, Failure* failure) {
    BatchResult result = BatchResult::kEmpty;
    Position next;
    int64_t newly_parked = 0;
    int64_t skipped = 0;
    const Position from = checkpoint();
    // Read before the transaction (which so takes no transaction id, which
    // would hold back every reader of the event store, until the lock
    // below, just before the writes), through the runner's shared tail:
    // the other workers are after the same new events.
    // Only the events of the projection's types are copied.
    ASSIGN_OR_RETURN(projections_internal::TailPage page,
                     tail_->Read(from, limit, keep_));
    // Progress over events of other types is due to be stored.
    const bool due = unstored_events_ + page.read >= options_->batch_size ||
                     absl::Now() - stored_at_ >= options_->checkpoint_interval;
    // Nothing new to read (idle, or not yet visible): store what is due,
    // else nothing to do.
    const bool flush = page.read == 0 && stored_ != from && due;
    if (page.read == 0 && !flush) return result;
    if (page.read > 0) last_read_ = page.next;
    const bool concerned = flush || due || !page.events.empty();
    if (!concerned) {
      // No transaction at all.
      skipped = page.read;
      next = page.next;
      result = page.read >= limit ? BatchResult::kFull : BatchResult::kPartial;
    } else {
      absl::Status status = pool_->Run(
          PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
            pqxx::work tx(conn);
            std::vector<std::function<void()>> after_commit;
            // The checkpoint row must still say what this worker read
            // from it; otherwise another process or a rebuild moved it,
            // and the batch starts over from there (rolled back).
            auto moved = [&](absl::string_view lock) {
              pqxx::row row = tx.exec_params1(
                  absl::StrCat("SELECT generation, position_xid::text, "
                               "position_gp, version, parked_epoch FROM ",
                               options_->schema, ".projections WHERE name = $1",
                               lock),
                  p_.name);
              const Position stored{ParseXid(row[1]), row[2].as<int64_t>()};
              return row[0].as<int>() != generation_ || stored != stored_ ||
                     row[3].as<int>() != p_.version ||
                     row[4].as<int>() != parked_epoch_;
            };
            // A row lock gives the transaction its id. A process
            // manager's commands append to streams they read first, and
            // an append refuses when the stream got a commit after the
            // transaction got its id (MustRetryTransaction). So a
            // process manager's batch takes an advisory lock (no id)
            // and checks the row without locking it, so that no two
            // runners handle its events at once, and locks the row only
            // after its handler (it has no tables a rebuild could lock
            // first).
            const bool lock_first = p_.kind != ProjectionKind::kProcessManager;
            if (!lock_first) {
              tx.exec_params("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                             projections_internal::kBatchLockClass,
                             absl::StrCat(options_->schema, ".", p_.name));
            }
            if (moved(lock_first ? " FOR UPDATE" : "")) {
              prepared_ = false;
              result = BatchResult::kRaced;
              return absl::OkStatus();
            }
            std::vector<RecordedEvent> relevant;
            relevant.reserve(page.events.size());
            for (RecordedEvent& e : page.events) {
              if (parked_streams_.contains(e.stream_id)) {
                Park(tx, e, "parked behind an earlier event of its stream");
                ++newly_parked;
                continue;
              }
              relevant.push_back(std::move(e));
            }
            if (!relevant.empty()) {
              absl::Status applied = projections_internal::ApplyHandler(
                  p_, tx, tables_, relevant, &after_commit);
              if (applied.ok() && options_->before_commit_for_testing) {
                applied =
                    options_->before_commit_for_testing(p_.name, page.next);
              }
              if (!applied.ok()) {
                failure->event = relevant.front();
                return applied;
              }
            }
            if (!lock_first && moved(" FOR UPDATE")) {
              prepared_ = false;
              result = BatchResult::kRaced;
              // Rolls back what the handler did.
              return absl::OkStatus();
            }
            tx.exec_params(
                absl::StrCat("UPDATE ", options_->schema,
                             ".projections SET position_xid = $2::text::xid8, "
                             "position_gp = $3, updated_at = now() "
                             "WHERE name = $1"),
                p_.name, absl::StrCat(page.next.transaction_id),
                page.next.global_position);
            tx.commit();
            notifier_->Notify(p_.name, page.next);
            MarkStored(page.next);
            for (const auto& fn : after_commit) fn();
            if (flush) return absl::OkStatus();  // kEmpty: nothing new read
            next = page.next;
            result =
                page.read >= limit ? BatchResult::kFull : BatchResult::kPartial;
            return absl::OkStatus();
          });
      if (!status.ok()) return status;
    }
    unstored_events_ += skipped;
    if (result == BatchResult::kFull || result == BatchResult::kPartial) {
      {
        absl::MutexLock lock(&mu_);
        status_.position = next;
        status_.parked += newly_parked;
      }
      if (options_->on_progress) options_->on_progress(p_.name, next);
    }
    return result;
  }

  // `position` is now the committed checkpoint.
  void MarkStored(const Position& position) {
    stored_ = position;
    unstored_events_ = 0;
    stored_at_ = absl::Now();
  }

  void Park(pqxx::transaction_base& tx, const RecordedEvent& e,
            absl::string_view error) {
    tx.exec_params(
        absl::StrCat("INSERT INTO ", options_->schema,
                     ".projection_parked (name, generation, transaction_id, "
                     "global_position, stream_id, stream_version, event_id, "
                     "event_type, schema_version, data, metadata, "
                     "recorded_at, error) VALUES ($1, $2, $3::text::xid8, "
                     "$4, $5, $6, $7, $8, $9, $10, $11, "
                     "to_timestamp($12::float8 / 1000000), $13) "
                     "ON CONFLICT DO NOTHING"),
        p_.name, generation_, absl::StrCat(e.position.transaction_id),
        e.position.global_position, e.stream_id, e.stream_version, e.event_id,
        e.event_type, e.schema_version, e.data, e.metadata,
        absl::ToUnixMicros(e.recorded_at), std::string(error));
  }

  // Shows `error` as the projection's transient error, here and (best
  // effort: the database may be what fails) in its row for every process.
  void ReportTransient(const absl::Status& error) {
    const std::string message(error.message());
    {
      absl::MutexLock lock(&mu_);
      status_.transient_error = message;
    }
    if (message == stored_transient_) return;
    if (StoreTransient(message).ok()) stored_transient_ = message;
  }

  // A batch worked, or failed for another reason: no transient error now.
  void ClearTransient() {
    {
      absl::MutexLock lock(&mu_);
      status_.transient_error.clear();
    }
    if (stored_transient_.empty()) return;
    if (StoreTransient("").ok()) stored_transient_.clear();
  }

  // Sets the row's transient_error (NULL for ""), not waiting long for the
  // row: a report must not hold the worker up behind a swap or a replay.
  absl::Status StoreTransient(const std::string& message) {
    absl::Status s = pool_->Run(
        PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
          pqxx::work tx(conn);
          tx.exec("SET LOCAL lock_timeout = '1s'");
          tx.exec_params(absl::StrCat("UPDATE ", options_->schema,
                                      ".projections SET transient_error = "
                                      "nullif($2, '') WHERE name = $1"),
                         p_.name, message);
          tx.commit();
          return absl::OkStatus();
        });
    if (!s.ok()) {
      Log(LogLevel::kDebug, "projection could not store its transient error",
          {{"projection", p_.name}, {"error", s.ToString()}});
    }
    return s;
  }

  // `event` failed max_attempts times on its own: stop or park.
  void HandlePoison(const RecordedEvent& event, const absl::Status& error) {
    const std::string message(error.message());
    Log(LogLevel::kError, "projection event failed",
        {{"projection", p_.name},
         {"position", event.position.ToToken()},
         {"stream", event.stream_id},
         {"policy", p_.on_error == ErrorPolicy::kPark ? "park" : "stop"},
         {"error", message}});
    absl::Status s = pool_->Run(
        PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
          pqxx::work tx(conn);
          pqxx::row row = tx.exec_params1(
              absl::StrCat("SELECT generation, position_xid::text, "
                           "position_gp FROM ",
                           options_->schema,
                           ".projections WHERE name = $1 FOR UPDATE"),
              p_.name);
          const Position stored{ParseXid(row[1]), row[2].as<int64_t>()};
          if (row[0].as<int>() != generation_ || stored != stored_) {
            prepared_ = false;
            return absl::OkStatus();
          }
          if (p_.on_error == ErrorPolicy::kStop) {
            tx.exec_params(
                absl::StrCat("UPDATE ", options_->schema,
                             ".projections SET state = 'failed', "
                             "last_error = $2, failed_position = $3, "
                             "last_error_at = now(), "
                             "transient_error = NULL, updated_at = now() "
                             "WHERE name = $1"),
                p_.name, message, event.position.ToToken());
            tx.commit();
            stored_transient_.clear();
            absl::MutexLock lock(&mu_);
            failed_ = true;
            status_.transient_error.clear();
            status_.state = "failed";
            status_.last_error = message;
            status_.failed_position = event.position;
            return absl::OkStatus();
          }
          Park(tx, event, message);
          tx.exec_params(
              absl::StrCat("UPDATE ", options_->schema,
                           ".projections SET position_xid = $2::text::xid8, "
                           "position_gp = $3, last_error = $4, "
                           "last_error_at = now(), "
                           "updated_at = now() WHERE name = $1"),
              p_.name, absl::StrCat(event.position.transaction_id),
              event.position.global_position, message);
          tx.commit();
          notifier_->Notify(p_.name, event.position);
          MarkStored(event.position);
          parked_streams_.insert(event.stream_id);
          {
            absl::MutexLock lock(&mu_);
            status_.position = event.position;
            status_.parked += 1;
            status_.last_error = message;
          }
          if (options_->on_progress) {
            options_->on_progress(p_.name, event.position);
          }
          return absl::OkStatus();
        });
    if (!s.ok()) {
      Log(LogLevel::kWarn, "projection could not record a failed event",
          {{"projection", p_.name}, {"error", s.ToString()}});
    }
  }

  PgPool* const pool_;
  projections_internal::SharedTail* const tail_;  // the runner's
  const ProjectionRunnerOptions* const options_;
  ProgressNotifier* const notifier_;  // the runner's; outlives the worker
  const Projection p_;
  const absl::flat_hash_set<std::string> types_;
  // What this worker takes of the shared tail: its types.
  const projections_internal::SharedTail::Keep keep_ =
      [this](const RecordedEvent& e) { return types_.contains(e.event_type); };

  // Worker thread only.
  std::unique_ptr<pqxx::connection> ownership_;
  absl::Time next_ownership_check_ = absl::InfinitePast();
  absl::Time batch_started_ = absl::InfinitePast();
  bool prepared_ = false;
  bool failed_ = false;
  bool version_mismatch_ = false;  // the stored version is not ours
  // Found so: ownership released until the stored version is ours.
  bool outdated_ = false;
  int generation_ = 0;
  int parked_epoch_ = 0;
  absl::flat_hash_map<std::string, std::string> tables_;
  absl::flat_hash_set<std::string> parked_streams_;
  Position last_read_;
  // The row's transient_error as last written or read ("" for NULL).
  std::string stored_transient_;
  // The checkpoint as committed; checkpoint() may be ahead of it by events
  // the projection does not handle (see RunBatch).
  Position stored_;
  int64_t unstored_events_ = 0;
  absl::Time stored_at_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool poked_ ABSL_GUARDED_BY(mu_) = false;
  Position notified_ ABSL_GUARDED_BY(mu_);
  ProjectionStatus status_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------

class ProjectionRunner::Impl {
 public:
  Impl(PgPool* pool, eventstore::PostgresEventStore* store,
       ProjectionRunnerOptions options)
      : pool_(pool),
        store_(store),
        options_(std::move(options)),
        tail_(store_, TailOptions(options_)),
        notifier_(pool_->conninfo(), options_.schema) {}

  absl::Status Init(std::vector<Projection> projections) {
    std::set<std::string> names;
    for (const Projection& p : projections) {
      RETURN_IF_ERROR(ValidateProjection(p));
      if (!names.insert(p.name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("projection '", p.name, "' given twice"));
      }
    }
    ASSIGN_OR_RETURN(int version,
                     MigratedVersion(*pool_, options_.schema, kComponent));
    if (version < static_cast<int>(std::size(kMigrations))) {
      return absl::FailedPreconditionError(
          absl::StrCat("projection tables in schema '", options_.schema,
                       "' are not migrated: run the migration"));
    }
    for (Projection& p : projections) {
      RETURN_IF_ERROR(
          projections_internal::EnsureRegistered(*pool_, options_.schema, p));
      workers_.push_back(std::make_unique<Worker>(pool_, &tail_, &options_,
                                                  &notifier_, std::move(p)));
    }
    return absl::OkStatus();
  }

  void Start() {
    if (started_) return;
    started_ = true;
    listening_ = true;
    listener_ = std::thread([this] { Listen(); });
    // Appends of this process reach the workers at once; the listener
    // brings those of other processes (rate-limited NOTIFY).
    observer_ = store_->AddCommitObserver([this](Position p) {
      tail_.Notify(p);
      for (auto& w : workers_) w->Notify(p);
    });
    for (auto& w : workers_) w->Start();
  }

  void Stop() {
    if (!started_) return;
    store_->RemoveCommitObserver(observer_);
    listening_ = false;
    if (listener_.joinable()) listener_.join();
    for (auto& w : workers_) w->Stop();
    started_ = false;
  }

  std::vector<ProjectionStatus> Statuses() const {
    std::vector<ProjectionStatus> out;
    for (const auto& w : workers_) out.push_back(w->Status());
    return out;
  }

 private:
  // Forwards notifications to the workers; reconnects with backoff.
  void Listen() {
    absl::Duration backoff = absl::Milliseconds(100);
    std::unique_ptr<eventstore::ChangeListener> listener;
    while (listening_) {
      if (listener == nullptr) {
        absl::StatusOr<std::unique_ptr<eventstore::ChangeListener>> l =
            eventstore::ChangeListener::Create(pool_->conninfo(),
                                               store_->schema());
        if (!l.ok()) {
          absl::SleepFor(backoff);
          backoff = std::min(backoff * 2, absl::Seconds(5));
          continue;
        }
        listener = *std::move(l);
        backoff = absl::Milliseconds(100);
        // Anything committed while not listening was not announced.
        tail_.Poke();
        for (auto& w : workers_) w->Poke();
      }
      absl::StatusOr<std::optional<Position>> p =
          listener->Wait(absl::Milliseconds(200));
      if (!p.ok()) {
        Log(LogLevel::kWarn, "projection listener lost its connection",
            {{"error", p.status().ToString()}});
        listener.reset();
        continue;
      }
      if (p->has_value()) {
        tail_.Notify(**p);  // first: a worker it wakes reads through it
        for (auto& w : workers_) w->Notify(**p);
      }
    }
  }

  static projections_internal::SharedTailOptions TailOptions(
      const ProjectionRunnerOptions& options) {
    projections_internal::SharedTailOptions tail;
    tail.min_read = options.batch_size;
    tail.max_events =
        static_cast<size_t>(std::max(4 * options.batch_size, 4096));
    // A worker without news polls every poll_interval; one with news reads
    // it through a notification. In between, the last read of a moment ago
    // serves every worker.
    tail.fresh_for =
        std::max(options.live_batch_interval, absl::Milliseconds(1));
    return tail;
  }

  PgPool* const pool_;
  eventstore::PostgresEventStore* const store_;
  const ProjectionRunnerOptions options_;
  // Declared before the workers, so that they outlive them.
  projections_internal::SharedTail tail_;
  ProgressNotifier notifier_;
  std::vector<std::unique_ptr<Worker>> workers_;
  bool started_ = false;
  int observer_ = -1;  // the store's commit observer, while started
  std::atomic<bool> listening_{false};
  std::thread listener_;
};

absl::Status ProjectionRunner::Migrate(PgPool& pool, absl::string_view schema) {
  return ApplyMigrations(pool, schema, kComponent, kMigrations);
}

absl::StatusOr<std::unique_ptr<ProjectionRunner>> ProjectionRunner::Create(
    PgPool* pool, eventstore::PostgresEventStore* store,
    std::vector<Projection> projections, ProjectionRunnerOptions options) {
  RETURN_IF_ERROR(ValidateSchemaName(options.schema));
  if (options.batch_size < 1 || options.batch_size > 100000) {
    return absl::InvalidArgumentError("batch_size must be 1 to 100000");
  }
  auto impl = std::make_unique<Impl>(pool, store, std::move(options));
  RETURN_IF_ERROR(impl->Init(std::move(projections)));
  return std::unique_ptr<ProjectionRunner>(
      new ProjectionRunner(std::move(impl)));
}

ProjectionRunner::ProjectionRunner(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

ProjectionRunner::~ProjectionRunner() { impl_->Stop(); }

void ProjectionRunner::Start() { impl_->Start(); }
void ProjectionRunner::Stop() { impl_->Stop(); }

std::vector<ProjectionStatus> ProjectionRunner::Statuses() const {
  return impl_->Statuses();
}

}  // namespace cqrs::projections

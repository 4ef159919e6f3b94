#include "projections/rebuild.h"

#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "projections/internal/common.h"
#include "projections/progress.h"

namespace cqrs::projections {
namespace {

using eventstore::Position;
using eventstore::RecordedEvent;
using projections_internal::ParseXid;

// Reads the next pages of the global order on its own connection while the
// current one is being applied: on two cores this overlaps reading with
// applying. Keeps at most two pages ahead; stops after a short page.
class Prefetcher {
 public:
  Prefetcher(eventstore::EventStore* store, Position from, int batch)
      : store_(store), thread_([this, from, batch] { Loop(from, batch); }) {}
  ~Prefetcher() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

  absl::StatusOr<eventstore::ReadAllResult> Next() {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !pages_.empty();
    };
    mu_.Await(absl::Condition(&ready));
    absl::StatusOr<eventstore::ReadAllResult> page = std::move(pages_.front());
    pages_.pop_front();
    return page;
  }

 private:
  void Loop(Position at, int batch) {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || pages_.size() < 2;
        };
        mu_.Await(absl::Condition(&room));
        if (stop_) return;
      }
      absl::StatusOr<eventstore::ReadAllResult> page =
          store_->ReadAll(at, batch);
      const bool last =
          !page.ok() || static_cast<int>(page->events.size()) < batch;
      if (page.ok()) at = page->next;
      absl::MutexLock lock(&mu_);
      pages_.push_back(std::move(page));
      if (last) return;
    }
  }

  eventstore::EventStore* const store_;
  absl::Mutex mu_;
  std::deque<absl::StatusOr<eventstore::ReadAllResult>> pages_
      ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts after the members above exist
};

class Rebuild {
 public:
  Rebuild(PgPool* pool, eventstore::PostgresEventStore* store,
          const Projection& p, absl::string_view schema,
          const RebuildOptions& options)
      : pool_(pool),
        store_(store),
        p_(p),
        schema_(schema),
        options_(options),
        types_(p.event_types.begin(), p.event_types.end()) {}

  absl::Status Run() {
    RETURN_IF_ERROR(ValidateSchemaName(schema_));
    RETURN_IF_ERROR(ValidateProjection(p_));
    if (options_.batch_size < 1 || options_.batch_size > 100000) {
      return absl::InvalidArgumentError("batch_size must be 1 to 100000");
    }
    RETURN_IF_ERROR(
        projections_internal::EnsureRegistered(*pool_, schema_, p_));
    RETURN_IF_ERROR(Lock());
    RETURN_IF_ERROR(PrepareTarget());
    ASSIGN_OR_RETURN(Position head, store_->HeadPosition());
    progress_.total = head.global_position;
    started_ = absl::Now();
    done_at_start_ = position_.global_position;
    Prefetcher prefetcher(store_, position_, options_.batch_size);
    while (true) {
      if (options_.cancelled && options_.cancelled()) {
        return absl::CancelledError(absl::StrCat(
            "rebuild of '", p_.name,
            "' interrupted; the live read model is untouched; run it again "
            "to resume"));
      }
      ASSIGN_OR_RETURN(eventstore::ReadAllResult page, prefetcher.Next());
      ASSIGN_OR_RETURN(int read, Batch(std::move(page)));
      Report(false);
      if (read < options_.batch_size) break;
    }
    RETURN_IF_ERROR(SetLogged());
    RETURN_IF_ERROR(Swap());
    Report(true);
    return absl::OkStatus();
  }

 private:
  // One rebuild of this projection at a time, across processes: a session
  // lock held for the whole call.
  absl::Status Lock() {
    try {
      lock_conn_ = std::make_unique<pqxx::connection>(pool_->conninfo());
      pqxx::nontransaction tx(*lock_conn_);
      tx.exec_params("SELECT set_config('application_name', $1, false)",
                     absl::StrCat("cqrs rebuild ", schema_, ".", p_.name));
      const bool got =
          tx.exec_params1("SELECT pg_try_advisory_lock($1, hashtext($2))",
                          projections_internal::kRebuildLockClass,
                          absl::StrCat(schema_, ".", p_.name))[0]
              .as<bool>();
      if (!got) {
        return absl::AbortedError(
            absl::StrCat("a rebuild of '", p_.name, "' is already running"));
      }
      return absl::OkStatus();
    } catch (...) {
      return StatusFromCurrentPgException();
    }
  }

  // Finds or creates the generation to fill, and where to resume.
  absl::Status PrepareTarget() {
    return pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::work tx(conn);
          live_generation_ =
              tx.exec_params1(absl::StrCat("SELECT generation FROM ", schema_,
                                           ".projections WHERE name = $1"),
                              p_.name)[0]
                  .as<int>();
          target_ = live_generation_ + 1;
          tables_ = projections_internal::TableMap(schema_, p_, target_);
          pqxx::result r = tx.exec_params(
              absl::StrCat("SELECT version, generation, position_xid::text, "
                           "position_gp FROM ",
                           schema_, ".projection_rebuilds WHERE name = $1"),
              p_.name);
          // Unlogged tables are emptied by a server crash: resume only when
          // the server has not restarted since the rebuild began.
          if (!r.empty() && r[0][0].as<int>() == p_.version &&
              r[0][1].as<int>() == target_ &&
              tx.exec_params1(
                    absl::StrCat(
                        "SELECT started_at > pg_postmaster_start_time()"
                        " FROM ",
                        schema_, ".projection_rebuilds WHERE name = $1"),
                    p_.name)[0]
                  .as<bool>()) {
            position_ = Position{ParseXid(r[0][2]), r[0][3].as<int64_t>()};
            tx.commit();
            return absl::OkStatus();
          }
          for (const auto& [name, physical] : tables_) {
            tx.exec(absl::StrCat("DROP TABLE IF EXISTS ", physical));
          }
          projections_internal::CreateTables(
              tx, schema_, p_, target_,
              projections_internal::DeferredIndexes::kLater);
          // Filled unlogged (no WAL per row: several times faster), made
          // logged before the swap (SetLogged).
          for (const auto& [name, physical] : tables_) {
            tx.exec(absl::StrCat("ALTER TABLE ", physical, " SET UNLOGGED"));
          }
          tx.exec_params(
              absl::StrCat("INSERT INTO ", schema_,
                           ".projection_rebuilds (name, version, generation) "
                           "VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE "
                           "SET version = EXCLUDED.version, generation = "
                           "EXCLUDED.generation, position_xid = '0', "
                           "position_gp = 0, finished = false, "
                           "started_at = now()"),
              p_.name, p_.version, target_);
          tx.commit();
          position_ = Position::Start();
          return absl::OkStatus();
        });
  }

  // Reads up to a batch after position_ in `tx` and applies it to the
  // target tables. Returns how many events were read (of any type).
  absl::StatusOr<int> ApplyNext(pqxx::transaction_base& tx) {
    auto events_tx = store_->InTransaction(tx);
    ASSIGN_OR_RETURN(eventstore::ReadAllResult page,
                     events_tx->ReadAll(position_, options_.batch_size));
    return ApplyPage(tx, std::move(page));
  }

  // Applies `page` (read after position_) to the target tables. Returns how
  // many events it had (of any type).
  absl::StatusOr<int> ApplyPage(pqxx::transaction_base& tx,
                                eventstore::ReadAllResult page) {
    if (page.events.empty()) return 0;
    std::vector<RecordedEvent> relevant;
    relevant.reserve(page.events.size());
    for (RecordedEvent& e : page.events) {
      if (types_.contains(e.event_type)) relevant.push_back(std::move(e));
    }
    if (!relevant.empty()) {
      absl::Status applied =
          projections_internal::ApplyHandler(p_, tx, tables_, relevant);
      if (!applied.ok()) {
        return absl::Status(
            applied.code(),
            absl::StrCat("rebuild of '", p_.name, "' failed at or after ",
                         relevant.front().position.ToToken(), ": ",
                         applied.message(),
                         " (the live read model is untouched)"));
      }
    }
    const int read = static_cast<int>(page.events.size());
    pending_ = page.next;
    return read;
  }

  absl::StatusOr<int> Batch(eventstore::ReadAllResult page) {
    int read = 0;
    RETURN_IF_ERROR(pool_->Run(
        PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
          pqxx::work tx(conn);
          ASSIGN_OR_RETURN(read, ApplyPage(tx, std::move(page)));
          if (read == 0) return absl::OkStatus();
          tx.exec_params(
              absl::StrCat("UPDATE ", schema_,
                           ".projection_rebuilds SET position_xid = "
                           "$2::text::xid8, position_gp = $3 WHERE name = $1"),
              p_.name, absl::StrCat(pending_.transaction_id),
              pending_.global_position);
          tx.commit();
          position_ = pending_;
          return absl::OkStatus();
        }));
    return read;
  }

  // Writes the new tables to the WAL (a bulk copy), so that they survive a
  // crash from the swap on, and builds their deferred indexes. Outside the
  // swap's transaction, which stays short.
  absl::Status SetLogged() {
    return pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::work tx(conn);
          const bool finished =
              tx.exec_params1(absl::StrCat("SELECT finished FROM ", schema_,
                                           ".projection_rebuilds WHERE name "
                                           "= $1 FOR UPDATE"),
                              p_.name)[0]
                  .as<bool>();
          if (finished) return absl::OkStatus();  // a resumed rebuild
          for (const auto& [name, physical] : tables_) {
            tx.exec(absl::StrCat("ALTER TABLE ", physical, " SET LOGGED"));
          }
          projections_internal::CreateDeferredIndexes(tx, schema_, p_, target_);
          tx.exec_params(absl::StrCat("UPDATE ", schema_,
                                      ".projection_rebuilds SET finished = "
                                      "true WHERE name = $1"),
                         p_.name);
          tx.commit();
          return absl::OkStatus();
        });
  }

  // The short transaction that makes the new generation live.
  absl::Status Swap() {
    return pool_->Run(
        PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
          pqxx::work tx(conn);
          // Waits for the live runner's batch in flight, and holds the next
          // one back until the swap commits.
          const int live =
              tx.exec_params1(absl::StrCat("SELECT generation FROM ", schema_,
                                           ".projections WHERE name = $1 "
                                           "FOR UPDATE"),
                              p_.name)[0]
                  .as<int>();
          if (live != live_generation_) {
            return absl::AbortedError(absl::StrCat(
                "projection '", p_.name,
                "' was swapped by another rebuild meanwhile; run again"));
          }
          while (true) {
            ASSIGN_OR_RETURN(int read, ApplyNext(tx));
            if (read == 0) break;
            position_ = pending_;
          }
          tx.exec_params(
              absl::StrCat(
                  "UPDATE ", schema_,
                  ".projections SET generation = $2, version = $3, "
                  "position_xid = $4::text::xid8, position_gp = $5, "
                  "state = 'running', last_error = NULL, failed_position = "
                  "NULL, updated_at = now() WHERE name = $1"),
              p_.name, target_, p_.version,
              absl::StrCat(position_.transaction_id),
              position_.global_position);
          projections_internal::PointViews(tx, schema_, p_, target_);
          NotifyProgress(tx, schema_, p_.name, position_);
          tx.exec_params(absl::StrCat("DELETE FROM ", schema_,
                                      ".projection_rebuilds WHERE name = $1"),
                         p_.name);
          tx.exec_params(absl::StrCat("DELETE FROM ", schema_,
                                      ".projection_parked WHERE name = $1 AND "
                                      "generation = $2"),
                         p_.name, live_generation_);
          for (const auto& t : p_.tables) {
            tx.exec(absl::StrCat("DROP TABLE IF EXISTS ",
                                 projections_internal::PhysicalTable(
                                     schema_, t.name, live_generation_)));
          }
          tx.commit();
          return absl::OkStatus();
        });
  }

  void Report(bool swapped) {
    if (!options_.progress) return;
    progress_.done = position_.global_position;
    if (progress_.done > progress_.total) progress_.total = progress_.done;
    const double seconds = absl::ToDoubleSeconds(absl::Now() - started_);
    const int64_t this_run = progress_.done - done_at_start_;
    progress_.events_per_second = seconds > 0 ? this_run / seconds : 0;
    progress_.eta = progress_.events_per_second > 0
                        ? absl::Seconds((progress_.total - progress_.done) /
                                        progress_.events_per_second)
                        : absl::ZeroDuration();
    progress_.swapped = swapped;
    options_.progress(progress_);
  }

  PgPool* const pool_;
  eventstore::PostgresEventStore* const store_;
  const Projection& p_;
  const std::string schema_;
  const RebuildOptions& options_;
  const absl::flat_hash_set<std::string> types_;

  std::unique_ptr<pqxx::connection> lock_conn_;
  int live_generation_ = 0;
  int target_ = 0;
  absl::flat_hash_map<std::string, std::string> tables_;
  Position position_;  // committed to projection_rebuilds
  Position pending_;   // read, not yet committed
  RebuildProgress progress_;
  absl::Time started_;
  int64_t done_at_start_ = 0;
};

}  // namespace

absl::Status RebuildProjection(PgPool* pool,
                               eventstore::PostgresEventStore* store,
                               const Projection& projection,
                               absl::string_view schema,
                               const RebuildOptions& options) {
  if (projection.kind == ProjectionKind::kProcessManager) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", projection.name,
        "' is a process manager: it has no read model to rebuild"));
  }
  Rebuild rebuild(pool, store, projection, schema, options);
  return rebuild.Run();
}

}  // namespace cqrs::projections

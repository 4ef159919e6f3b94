#include "projections/rebuild.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "framework/error_classes.h"
#include "framework/log.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "projections/internal/common.h"
#include "projections/progress.h"

namespace cqrs::projections {
namespace {

using eventstore::Position;
using eventstore::RecordedEvent;
using projections_internal::ParseXid;

// The first write transaction's size, before there is a duration to adapt
// to.
constexpr int kFirstChunk = 200;
// Pause between attempts to swap, doubling.
constexpr absl::Duration kFirstSwapBackoff = absl::Milliseconds(20);
constexpr absl::Duration kMaxSwapBackoff = absl::Seconds(1);
constexpr absl::Duration kSwapLogInterval = absl::Seconds(10);

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

// A deferred index statement, rewritten so that reading the table holds no
// transaction id: CREATE INDEX runs CONCURRENTLY (outside a transaction
// block; only its short catalog updates take one), and ADD PRIMARY KEY
// becomes such an index plus ADD CONSTRAINT ... USING INDEX, which only
// checks the index (and scans the table when a key column is nullable).
// Anything else runs as given in a transaction of its own.
struct IndexPlan {
  enum class Kind { kConcurrently, kPrimaryKey, kAsGiven };
  Kind kind = Kind::kAsGiven;
  std::string sql;      // kConcurrently, kAsGiven: the statement to run
  std::string table;    // kPrimaryKey: the table, as written
  std::string name;     // kPrimaryKey: the index's and constraint's name
  std::string columns;  // kPrimaryKey: "(a, b)"
};

IndexPlan PlanIndex(absl::string_view statement) {
  std::string sql(absl::StripAsciiWhitespace(statement));
  while (!sql.empty() &&
         (sql.back() == ';' ||
          absl::ascii_isspace(static_cast<unsigned char>(sql.back())))) {
    sql.pop_back();
  }
  IndexPlan plan;
  plan.sql = sql;
  if (absl::StrContains(sql, ";")) return plan;  // several statements
  static const std::regex kCreateIndex(
      R"(CREATE\s+(UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?)"
      R"((IF\s+NOT\s+EXISTS\s+)?([\s\S]*))",
      std::regex::icase);
  static const std::regex kNamed(R"(([A-Za-z_][A-Za-z0-9_$]*)\s+ON\s[\s\S]*)",
                                 std::regex::icase);
  static const std::regex kPrimaryKey(
      R"(ALTER\s+TABLE\s+([A-Za-z0-9_$.]+)\s+ADD\s+)"
      R"((CONSTRAINT\s+([A-Za-z_][A-Za-z0-9_$]*)\s+)?)"
      R"(PRIMARY\s+KEY\s*(\([^()]*\)))",
      std::regex::icase);
  std::smatch m;
  if (std::regex_match(sql, m, kCreateIndex)) {
    const std::string rest = m[4].str();
    std::smatch named;
    const bool has_name = std::regex_match(rest, named, kNamed) &&
                          !absl::EqualsIgnoreCase(named[1].str(), "on");
    plan.kind = IndexPlan::Kind::kConcurrently;
    // IF NOT EXISTS makes a rerun after an interruption skip what is built
    // (invalid leftovers are dropped first); an unnamed index would be built
    // twice then.
    plan.sql = absl::StrCat("CREATE ", m[1].matched ? "UNIQUE " : "",
                            "INDEX CONCURRENTLY ",
                            has_name ? "IF NOT EXISTS " : "", rest);
    return plan;
  }
  if (std::regex_match(sql, m, kPrimaryKey)) {
    plan.kind = IndexPlan::Kind::kPrimaryKey;
    plan.table = m[1].str();
    const size_t dot = plan.table.rfind('.');
    plan.name = m[3].matched ? m[3].str()
                             : absl::StrCat(dot == std::string::npos
                                                ? plan.table
                                                : plan.table.substr(dot + 1),
                                            "_pkey");
    plan.columns = m[4].str();
    return plan;
  }
  return plan;
}

std::string Expand(absl::string_view sql, absl::string_view schema,
                   absl::string_view table, int generation) {
  return absl::StrReplaceAll(
      sql, {{"{table}",
             projections_internal::PhysicalTable(schema, table, generation)},
            {"{table_name}", absl::StrCat(table, "_g", generation)}});
}

// "{a,b}": a text[] literal of names made of [a-z0-9_.] (no quoting needed).
std::string NameArray(const std::vector<std::string>& names) {
  return absl::StrCat("{", absl::StrJoin(names, ","), "}");
}

// A session that has held a lock on one of the swap's relations for longer
// than the swap waits.
struct LongReader {
  int pid = 0;
  double seconds = 0;  // since its transaction began
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
    if (options_.max_batch_duration < absl::ZeroDuration()) {
      return absl::InvalidArgumentError("max_batch_duration must not be < 0");
    }
    if (!(options_.pause_share >= 0 && options_.pause_share <= 0.9)) {
      return absl::InvalidArgumentError("pause_share must be 0 to 0.9");
    }
    if (options_.swap_lock_timeout < absl::Milliseconds(1)) {
      return absl::InvalidArgumentError(
          "swap_lock_timeout must be at least 1 ms");
    }
    chunk_ = options_.max_batch_duration > absl::ZeroDuration()
                 ? std::min(options_.batch_size, kFirstChunk)
                 : options_.batch_size;
    RETURN_IF_ERROR(
        projections_internal::EnsureRegistered(*pool_, schema_, p_));
    RETURN_IF_ERROR(Lock());
    RETURN_IF_ERROR(PrepareTarget());
    ASSIGN_OR_RETURN(Position head, store_->HeadPosition());
    progress_.total = head.global_position;
    started_ = absl::Now();
    done_at_start_ = position_.global_position;
    {
      Prefetcher prefetcher(store_, position_, options_.batch_size);
      while (true) {
        if (Cancelled()) return Interrupted();
        ASSIGN_OR_RETURN(eventstore::ReadAllResult page, prefetcher.Next());
        const int read = static_cast<int>(page.events.size());
        RETURN_IF_ERROR(ApplyPage(std::move(page)));
        Report(false);
        if (read < options_.batch_size) break;
      }
    }
    RETURN_IF_ERROR(BuildIndexes());
    RETURN_IF_ERROR(SwapWhenReadersAllow());
    Report(true);
    return absl::OkStatus();
  }

 private:
  bool Cancelled() const { return options_.cancelled && options_.cancelled(); }

  absl::Status Interrupted() const {
    return absl::CancelledError(
        absl::StrCat("rebuild of '", p_.name,
                     "' interrupted; the live read model is untouched; run it "
                     "again to resume"));
  }

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

  std::vector<std::string> TargetTables() const {
    std::vector<std::string> out;
    for (const auto& [name, physical] : tables_) out.push_back(physical);
    return out;
  }

  // Finds or creates the generation to fill, and where to resume.
  //
  // The target tables are logged and every batch commits its rows with its
  // checkpoint, so after a crash (or on a promoted standby) the tables hold
  // exactly what the surviving checkpoint says: resuming is safe. Older
  // builds filled them UNLOGGED, which a crash empties while the checkpoint
  // stays: such a target, or a missing table, starts over.
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
          const int64_t logged =
              tx.exec_params1(
                    "SELECT count(*) FROM unnest($1::text[]) AS t(name) "
                    "JOIN pg_class c ON c.oid = to_regclass(t.name) "
                    "WHERE c.relpersistence = 'p'",
                    NameArray(TargetTables()))[0]
                  .as<int64_t>();
          if (!r.empty() && r[0][0].as<int>() == p_.version &&
              r[0][1].as<int>() == target_ &&
              logged == static_cast<int64_t>(tables_.size())) {
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

  // Runs the handler on `relevant` (events of its types) in `tx`.
  absl::Status ApplyRelevant(pqxx::transaction_base& tx,
                             const std::vector<RecordedEvent>& relevant) {
    if (relevant.empty()) return absl::OkStatus();
    absl::Status applied =
        projections_internal::ApplyHandler(p_, tx, tables_, relevant);
    if (applied.ok()) return applied;
    return absl::Status(
        applied.code(),
        absl::StrCat("rebuild of '", p_.name, "' failed at or after ",
                     relevant.front().position.ToToken(), ": ",
                     applied.message(), " (the live read model is untouched)"));
  }

  std::vector<RecordedEvent> Relevant(absl::Span<RecordedEvent> events) {
    std::vector<RecordedEvent> relevant;
    relevant.reserve(events.size());
    for (RecordedEvent& e : events) {
      if (types_.contains(e.event_type)) relevant.push_back(std::move(e));
    }
    return relevant;
  }

  // Applies `page` (read after position_) in as many transactions as
  // max_batch_duration asks for, each committing the checkpoint of its last
  // event with its writes.
  absl::Status ApplyPage(eventstore::ReadAllResult page) {
    absl::Span<RecordedEvent> events = absl::MakeSpan(page.events);
    while (!events.empty()) {
      const size_t n = std::min(events.size(), static_cast<size_t>(chunk_));
      const absl::Time start = absl::Now();
      RETURN_IF_ERROR(ApplyChunk(events.subspan(0, n)));
      const absl::Duration took = absl::Now() - start;
      Adapt(took);
      events.remove_prefix(n);
      if (options_.pause_share > 0) {
        if (Cancelled()) return Interrupted();
        absl::SleepFor(took *
                       (options_.pause_share / (1 - options_.pause_share)));
      }
    }
    return absl::OkStatus();
  }

  absl::Status ApplyChunk(absl::Span<RecordedEvent> events) {
    const Position end = events.back().position;
    const std::vector<RecordedEvent> relevant = Relevant(events);
    RETURN_IF_ERROR(pool_->Run(
        PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
          pqxx::work tx(conn);
          // Not waiting for the WAL flush lets the commit release the
          // transaction id (which holds every reader of the event store
          // back) at once. A crash may lose the last batches, rows and
          // checkpoint together: the rerun resumes a little earlier.
          tx.exec("SET LOCAL synchronous_commit = off");
          RETURN_IF_ERROR(ApplyRelevant(tx, relevant));
          tx.exec_params(
              absl::StrCat("UPDATE ", schema_,
                           ".projection_rebuilds SET position_xid = "
                           "$2::text::xid8, position_gp = $3 WHERE name = $1"),
              p_.name, absl::StrCat(end.transaction_id), end.global_position);
          tx.commit();
          return absl::OkStatus();
        }));
    position_ = end;
    if (options_.batch_committed) options_.batch_committed();
    return absl::OkStatus();
  }

  // Sizes the next write transaction after the last one took `took`.
  void Adapt(absl::Duration took) {
    if (options_.max_batch_duration <= absl::ZeroDuration()) return;
    double ratio = absl::FDivDuration(options_.max_batch_duration,
                                      std::max(took, absl::Milliseconds(1)));
    ratio = std::clamp(ratio, 0.5, 2.0);
    chunk_ =
        std::clamp(static_cast<int>(chunk_ * ratio), 1, options_.batch_size);
  }

  // Applies what was appended since the last page, until a short page.
  absl::Status CatchUp() {
    while (true) {
      if (Cancelled()) return Interrupted();
      ASSIGN_OR_RETURN(eventstore::ReadAllResult page,
                       store_->ReadAll(position_, options_.batch_size));
      const int read = static_cast<int>(page.events.size());
      if (read == 0) return absl::OkStatus();
      RETURN_IF_ERROR(ApplyPage(std::move(page)));
      Report(false);
      if (read < options_.batch_size) return absl::OkStatus();
    }
  }

  // Builds the deferred indexes of the filled tables (IndexPlan: without a
  // transaction id while they read the tables), once: a resumed rebuild
  // whose indexes are built goes straight on. An earlier, interrupted
  // attempt may have left invalid indexes behind: they are dropped and
  // built again.
  absl::Status BuildIndexes() {
    bool finished = false;
    RETURN_IF_ERROR(pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::work tx(conn);
          finished =
              tx.exec_params1(absl::StrCat("SELECT finished FROM ", schema_,
                                           ".projection_rebuilds WHERE name "
                                           "= $1"),
                              p_.name)[0]
                  .as<bool>();
          if (finished) return absl::OkStatus();
          for (const pqxx::row& r : tx.exec_params(
                   "SELECT i.indexrelid::regclass::text FROM pg_index i "
                   "WHERE NOT i.indisvalid AND i.indrelid IN "
                   "(SELECT to_regclass(t) FROM unnest($1::text[]) AS t)",
                   NameArray(TargetTables()))) {
            tx.exec(absl::StrCat("DROP INDEX ", r[0].c_str()));
          }
          tx.commit();
          return absl::OkStatus();
        }));
    if (finished) return absl::OkStatus();
    for (const ProjectionTable& t : p_.tables) {
      for (const std::string& index : t.deferred_indexes) {
        RETURN_IF_ERROR(
            BuildIndex(PlanIndex(Expand(index, schema_, t.name, target_))));
      }
    }
    return pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::work tx(conn);
          tx.exec_params(absl::StrCat("UPDATE ", schema_,
                                      ".projection_rebuilds SET finished = "
                                      "true WHERE name = $1"),
                         p_.name);
          tx.commit();
          return absl::OkStatus();
        });
  }

  absl::Status BuildIndex(const IndexPlan& plan) {
    return pool_->Run(
        PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
          if (plan.kind == IndexPlan::Kind::kAsGiven) {
            pqxx::work tx(conn);
            try {
              tx.exec(plan.sql);
            } catch (const pqxx::sql_error& e) {
              // Built by an earlier, interrupted attempt: the same
              // statements ran without conflict for the live generation,
              // so on a fresh target nothing else creates that name.
              if (e.sqlstate() == "42P07" || e.sqlstate() == "42710") {
                return absl::OkStatus();
              }
              throw;
            }
            tx.commit();
            return absl::OkStatus();
          }
          pqxx::nontransaction outside(conn);
          if (plan.kind == IndexPlan::Kind::kConcurrently) {
            outside.exec(plan.sql);
            return absl::OkStatus();
          }
          outside.exec(
              absl::StrCat("CREATE UNIQUE INDEX CONCURRENTLY IF NOT "
                           "EXISTS ",
                           plan.name, " ON ", plan.table, " ", plan.columns));
          const bool has_key =
              outside
                  .exec_params1(
                      "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE "
                      "conrelid = to_regclass($1) AND contype = 'p')",
                      plan.table)[0]
                  .as<bool>();
          if (!has_key) {
            outside.exec(absl::StrCat("ALTER TABLE ", plan.table,
                                      " ADD CONSTRAINT ", plan.name,
                                      " PRIMARY KEY USING INDEX ", plan.name));
          }
          return absl::OkStatus();
        });
  }

  // The views readers query and the live tables the swap drops.
  std::vector<std::string> SwapRelations() const {
    std::vector<std::string> out;
    for (const ProjectionTable& t : p_.tables) {
      out.push_back(absl::StrCat(schema_, ".", t.name));
      out.push_back(projections_internal::PhysicalTable(schema_, t.name,
                                                        live_generation_));
    }
    return out;
  }

  // A session that has held a lock on the views or the live tables for
  // longer than the swap would wait for it: attempting the swap now would
  // only make new readers queue behind it.
  absl::StatusOr<std::optional<LongReader>> FindLongReader() {
    std::optional<LongReader> found;
    RETURN_IF_ERROR(pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::nontransaction tx(conn);
          pqxx::result r = tx.exec_params(
              "SELECT a.pid, extract(epoch FROM clock_timestamp() - "
              "a.xact_start)::float8 FROM pg_locks l JOIN pg_stat_activity a "
              "ON a.pid = l.pid WHERE l.locktype = 'relation' AND l.granted "
              "AND l.database = (SELECT oid FROM pg_database WHERE datname = "
              "current_database()) AND l.pid <> pg_backend_pid() AND "
              "l.relation IN (SELECT to_regclass(t) FROM unnest($1::text[]) "
              "AS t) AND a.xact_start < clock_timestamp() - make_interval(secs "
              "=> $2) ORDER BY a.xact_start LIMIT 1",
              NameArray(SwapRelations()),
              absl::ToDoubleSeconds(options_.swap_lock_timeout));
          if (!r.empty()) {
            found = LongReader{r[0][0].as<int>(), r[0][1].as<double>()};
          }
          return absl::OkStatus();
        }));
    return found;
  }

  // Swaps once the views are free: catches up in short transactions first,
  // so that the swap itself applies only the last few events; gives up on a
  // lock that does not come within swap_lock_timeout (or while a long
  // reader holds the views) and tries again after a pause, so that new
  // readers never wait long behind it.
  absl::Status SwapWhenReadersAllow() {
    absl::Duration backoff = kFirstSwapBackoff;
    absl::Time next_log = absl::InfinitePast();
    std::minstd_rand jitter(std::random_device{}());
    while (true) {
      RETURN_IF_ERROR(CatchUp());
      ASSIGN_OR_RETURN(std::optional<LongReader> reader, FindLongReader());
      absl::Status swapped =
          reader.has_value()
              ? absl::DeadlineExceededError(absl::StrCat(
                    "session ", reader->pid, " has read the views for ",
                    static_cast<int64_t>(reader->seconds), " s"))
              : TrySwap();
      if (swapped.ok()) return swapped;
      // A lock timeout, or a deadlock with a session that took the same
      // locks in another order: the same swap works later.
      const bool retry = absl::IsDeadlineExceeded(swapped) ||
                         (absl::IsAborted(swapped) && IsDatabaseError(swapped));
      if (!retry) return swapped;
      if (absl::Now() >= next_log) {
        Log(LogLevel::kWarn, "rebuild waits for readers of the views to swap",
            {{"projection", p_.name}, {"reason", swapped.message()}});
        next_log = absl::Now() + kSwapLogInterval;
      }
      const absl::Time until =
          absl::Now() +
          backoff * std::uniform_real_distribution<double>(0.5, 1.0)(jitter);
      while (absl::Now() < until) {
        if (Cancelled()) return Interrupted();
        absl::SleepFor(std::min(until - absl::Now(), absl::Milliseconds(20)));
      }
      backoff = std::min(backoff * 2, kMaxSwapBackoff);
    }
  }

  // The short transaction that makes the new generation live. It takes the
  // projection's row first (waiting for the live runner's batch in flight
  // and holding the next one back), then the views: in that order the live
  // runner, which locks the row before it writes the live tables, never
  // waits for the swap while holding what the swap needs. Every lock wait
  // ends after swap_lock_timeout.
  absl::Status TrySwap() {
    return pool_->Run(
        PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
          pqxx::work tx(conn);
          tx.exec(absl::StrCat(
              "SET LOCAL lock_timeout = ",
              std::max<int64_t>(
                  1, absl::ToInt64Milliseconds(options_.swap_lock_timeout))));
          // The views there are (a table this version adds has none yet:
          // PointViews creates it); read before the row lock, which takes
          // the transaction's id.
          std::vector<std::string> names;
          for (const ProjectionTable& t : p_.tables) {
            names.push_back(absl::StrCat(schema_, ".", t.name));
          }
          std::vector<std::string> views;
          for (const pqxx::row& r :
               tx.exec_params("SELECT v FROM unnest($1::text[]) AS v WHERE "
                              "to_regclass(v) IS NOT NULL",
                              NameArray(names))) {
            views.push_back(r[0].as<std::string>());
          }
          const int live =
              tx.exec_params1(absl::StrCat("SELECT generation FROM ", schema_,
                                           ".projections WHERE name = $1 "
                                           "FOR UPDATE"),
                              p_.name)[0]
                  .as<int>();
          if (live != live_generation_) {
            return absl::FailedPreconditionError(absl::StrCat(
                "projection '", p_.name,
                "' was swapped by another rebuild meanwhile; run again"));
          }
          if (!views.empty()) {
            tx.exec(absl::StrCat("LOCK TABLE ", absl::StrJoin(views, ", "),
                                 " IN ACCESS EXCLUSIVE MODE"));
          }
          // Where the swap's own catch-up got to: committed only with it.
          Position at = position_;
          while (true) {
            auto events_tx = store_->InTransaction(tx);
            ASSIGN_OR_RETURN(eventstore::ReadAllResult page,
                             events_tx->ReadAll(at, options_.batch_size));
            if (page.events.empty()) break;
            RETURN_IF_ERROR(
                ApplyRelevant(tx, Relevant(absl::MakeSpan(page.events))));
            at = page.next;
          }
          tx.exec_params(
              absl::StrCat(
                  "UPDATE ", schema_,
                  ".projections SET generation = $2, version = $3, "
                  "position_xid = $4::text::xid8, position_gp = $5, "
                  "state = 'running', last_error = NULL, failed_position = "
                  "NULL, updated_at = now() WHERE name = $1"),
              p_.name, target_, p_.version, absl::StrCat(at.transaction_id),
              at.global_position);
          projections_internal::PointViews(tx, schema_, p_, target_);
          NotifyProgress(tx, schema_, p_.name, at);
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
          position_ = at;
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
  int chunk_ = 0;      // events in the next write transaction
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

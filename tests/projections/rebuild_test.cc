// Rebuilds under PostgreSQL faults and long readers (issue 12, items 1 and
// 4): a backend killed with SIGKILL (a crash restart) between an interrupted
// rebuild and its rerun, a clean server restart, deferred indexes built
// while the rest of the cluster keeps reading events, and a swap that meets
// a long reader of the view.
//
// The restart and the SIGKILL run on a private cluster of their own
// (EmbeddedPostgres in a temporary directory, stopped and removed at the
// end): a SIGKILLed backend makes the postmaster reset every session of
// its cluster, which would break the tests running in parallel on the
// shared one (scripts/test runs ctest -j2).
#include "projections/rebuild.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "framework/embedded_postgres.h"
#include "framework/log.h"
#include "projections/runner.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace cqrs::projections {
namespace {

namespace fs = std::filesystem;

using eventstore::ExpectedVersion;
using eventstore::NewEvent;
using eventstore::Position;
using eventstore::RecordedEvent;
using testing::TestSchema;

using ::cqrs::testing::Eventually;

std::string Array(const std::vector<std::string>& items) {
  return absl::StrCat("{", absl::StrJoin(items, ","), "}");
}

// One row per "Added" event, so that a complete read model has exactly as
// many rows as there are such events. Its primary key is a deferred index,
// as in the bank's account_transactions; `more_indexes` are added to it.
Projection Ledger(const std::string& name,
                  std::vector<std::string> more_indexes = {}) {
  Projection p;
  p.name = name;
  p.event_types = {"Added"};
  std::vector<std::string> indexes = {
      "ALTER TABLE {table} ADD PRIMARY KEY (stream, version)"};
  indexes.insert(indexes.end(), more_indexes.begin(), more_indexes.end());
  p.tables = {{name,
               "CREATE TABLE {table} (stream text NOT NULL, version bigint "
               "NOT NULL, amount bigint NOT NULL)",
               indexes}};
  p.apply = [name](ProjectionContext& ctx, EventBatch events) -> absl::Status {
    std::vector<std::string> streams, versions, amounts;
    for (const RecordedEvent& e : events) {
      streams.push_back(e.stream_id);
      versions.push_back(absl::StrCat(e.stream_version));
      const size_t colon = e.data.find(':');
      amounts.push_back(e.data.substr(colon + 1, e.data.size() - colon - 2));
    }
    ctx.tx().exec_params(
        absl::StrCat("INSERT INTO ", ctx.Table(name),
                     " SELECT * FROM unnest($1::text[], $2::bigint[], "
                     "$3::bigint[])"),
        Array(streams), Array(versions), Array(amounts));
    return absl::OkStatus();
  };
  return p;
}

// Another read model: events per type. "Ping" concerns only this one.
Projection Tally() {
  Projection p;
  p.name = "tally";
  p.event_types = {"Added", "Ping"};
  p.tables = {{"tally",
               "CREATE TABLE {table} (type text PRIMARY KEY, n bigint NOT "
               "NULL)"}};
  p.apply = [](ProjectionContext& ctx, EventBatch events) -> absl::Status {
    std::vector<std::string> types;
    for (const RecordedEvent& e : events) types.push_back(e.event_type);
    ctx.tx().exec_params(
        absl::StrCat("INSERT INTO ", ctx.Table("tally"),
                     " AS t SELECT type, count(*) FROM unnest($1::text[]) AS "
                     "type GROUP BY type ON CONFLICT (type) DO UPDATE SET n = "
                     "t.n + EXCLUDED.n"),
        Array(types));
    return absl::OkStatus();
  };
  return p;
}

NewEvent Added(int64_t amount) {
  NewEvent e;
  e.event_type = "Added";
  e.data = absl::StrCat("{\"amount\":", amount, "}");
  return e;
}

NewEvent Ping() {
  NewEvent e;
  e.event_type = "Ping";
  e.data = "{}";
  return e;
}

// Appends `n` "Added" events over `streams` streams, 20 per append.
void AppendAdded(eventstore::EventStore& store, int n, int streams) {
  for (int i = 0; i < n; i += 20) {
    std::vector<NewEvent> events;
    for (int j = i; j < std::min(n, i + 20); ++j) events.push_back(Added(j));
    REQUIRE(store
                .Append(absl::StrCat("s-", (i / 20) % streams),
                        ExpectedVersion::Any(), std::move(events))
                .ok());
  }
}

long long QueryInt(const std::string& url, const std::string& sql) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  return tx.exec1(sql)[0].as<long long>();
}

void Exec(const std::string& url, const std::string& sql) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  tx.exec(sql);
}

Position StoredCheckpoint(const std::string& url, const std::string& schema,
                          const std::string& name) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  pqxx::row r = tx.exec1(
      absl::StrCat("SELECT position_xid::text, position_gp FROM ", schema,
                   ".projections WHERE name = ", tx.quote(name)));
  uint64_t xid = 0;
  REQUIRE(absl::SimpleAtoi(r[0].c_str(), &xid));
  return Position{xid, r[1].as<int64_t>()};
}

// Interrupts a rebuild of `p` after `pages` pages of `batch` events; returns
// its committed checkpoint (global position).
int64_t Interrupt(PgPool& pool, eventstore::PostgresEventStore& store,
                  const Projection& p, const std::string& schema, int pages,
                  int batch) {
  RebuildOptions options;
  options.batch_size = batch;
  int seen = 0;
  options.progress = [&](const RebuildProgress&) { ++seen; };
  options.cancelled = [&] { return seen >= pages; };
  absl::Status s = RebuildProjection(&pool, &store, p, schema, options);
  INFO(s.ToString());
  REQUIRE(absl::IsCancelled(s));
  return QueryInt(
      pool.conninfo(),
      absl::StrCat("SELECT position_gp FROM ", schema,
                   ".projection_rebuilds WHERE name = '", p.name, "'"));
}

// Runs a rebuild of `p` to the end; returns the `done` of its first report
// (where it resumed, plus one page).
int64_t Complete(PgPool& pool, eventstore::PostgresEventStore& store,
                 const Projection& p, const std::string& schema, int batch) {
  RebuildOptions options;
  options.batch_size = batch;
  int64_t first_done = -1;
  options.progress = [&](const RebuildProgress& r) {
    if (first_done < 0) first_done = r.done;
  };
  absl::Status s = RebuildProjection(&pool, &store, p, schema, options);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return first_done;
}

// --- A private cluster ------------------------------------------------------

// A PostgreSQL cluster of this test alone in a directory under /tmp; the
// server is stopped and the directory removed on destruction.
class PrivateCluster {
 public:
  PrivateCluster() {
    char name[] = "/tmp/cqrs-rebuild-test.XXXXXX";
    REQUIRE(mkdtemp(name) != nullptr);
    dir_ = name;
    // Run as root, the server runs as an unprivileged user that must reach
    // the cluster inside.
    REQUIRE(chmod(name, 0755) == 0);
    Start();
    // Durability is not what these tests are about; speed is welcome.
    Exec(url(), "ALTER SYSTEM SET fsync = off");
    Exec(url(), "SELECT pg_reload_conf()");
  }
  ~PrivateCluster() {
    pg_.reset();  // stops the server
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  PrivateCluster(const PrivateCluster&) = delete;
  PrivateCluster& operator=(const PrivateCluster&) = delete;

  const std::string& url() const { return pg_->conninfo(); }

  // A clean restart: a fast shutdown (every session ends, the data is
  // checkpointed), then a start.
  void Restart() {
    REQUIRE(pg_->Stop().ok());
    pg_.reset();
    Start();
  }

  // Kills one backend with SIGKILL, as the OOM killer does: the postmaster
  // ends every other session, runs crash recovery (which empties UNLOGGED
  // tables) and accepts connections again. Returns once it does.
  void CrashBackend() {
    pqxx::connection victim(url());
    pqxx::connection witness(url());
    const int pid = pqxx::nontransaction(victim)
                        .exec1("SELECT pg_backend_pid()")[0]
                        .as<int>();
    REQUIRE(kill(pid, SIGKILL) == 0);
    // The crash ends every other session too, once the postmaster has
    // noticed; until then the witness still answers.
    REQUIRE(Eventually([&] {
      try {
        pqxx::nontransaction(witness).exec("SELECT 1");
        return false;
      } catch (const std::exception&) {
        return true;
      }
    }));
    REQUIRE(Eventually(
        [&] {
          try {
            pqxx::connection conn(url());
            pqxx::nontransaction(conn).exec("SELECT 1");
            return true;
          } catch (const std::exception&) {
            return false;  // still recovering
          }
        },
        absl::Seconds(60)));
  }

 private:
  void Start() {
    EmbeddedPostgresOptions options;
    options.data_dir = (dir_ / "pg").string();
    options.database = "rebuild";
    absl::StatusOr<std::unique_ptr<EmbeddedPostgres>> pg =
        EmbeddedPostgres::Start(std::move(options));
    INFO(pg.status().ToString());
    REQUIRE(pg.ok());
    pg_ = *std::move(pg);
  }

  fs::path dir_;
  std::unique_ptr<EmbeddedPostgres> pg_;
};

// A pool and a migrated event store on schema "rb" of `url`. Made anew
// after a restart: the old pool's sessions are gone.
struct Client {
  explicit Client(const std::string& url) {
    PgPoolOptions options;
    options.conninfo = url;
    options.max_connections = 8;
    auto p = PgPool::Create(std::move(options));
    REQUIRE(p.ok());
    pool = *std::move(p);
    Exec(url, "CREATE SCHEMA IF NOT EXISTS rb");
    REQUIRE(eventstore::PostgresEventStore::Migrate(*pool, "rb").ok());
    REQUIRE(ProjectionRunner::Migrate(*pool, "rb").ok());
    eventstore::PostgresEventStoreOptions store_options;
    store_options.schema = "rb";
    auto s = eventstore::PostgresEventStore::Create(pool.get(), store_options);
    REQUIRE(s.ok());
    store = *std::move(s);
  }
  std::unique_ptr<PgPool> pool;
  std::unique_ptr<eventstore::PostgresEventStore> store;
};

constexpr int kEvents = 3000;

TEST_CASE(
    "a backend SIGKILLed after an interrupted rebuild: the rerun swaps in "
    "every row",
    "[projections][pg]") {
  PrivateCluster cluster;
  const std::string& url = cluster.url();
  const Projection ledger = Ledger("ledger");
  // The state an older build leaves: its target tables filled UNLOGGED.
  const Projection legacy = Ledger("legacy");
  int64_t ledger_at = 0;
  int64_t legacy_at = 0;
  {
    Client client(url);
    AppendAdded(*client.store, kEvents, 30);
    ledger_at = Interrupt(*client.pool, *client.store, ledger, "rb", 5, 100);
    legacy_at = Interrupt(*client.pool, *client.store, legacy, "rb", 5, 100);
    REQUIRE(ledger_at >= 500);
    REQUIRE(legacy_at >= 500);
    Exec(url, "ALTER TABLE rb.legacy_g2 SET UNLOGGED");
    REQUIRE(QueryInt(url, "SELECT count(*) FROM rb.ledger_g2") >= 500);
    // What a crash does to unlogged tables, to see that it happened.
    Exec(url, "CREATE UNLOGGED TABLE rb.canary AS SELECT 1 AS x");
    // The rebuild's last commits need not be flushed yet (a crash would
    // then only move the resume point back); make them durable so that the
    // resume point is known.
    Exec(url, "CHECKPOINT");
  }
  cluster.CrashBackend();
  REQUIRE(QueryInt(url, "SELECT count(*) FROM rb.canary") == 0);
  CHECK(QueryInt(url, "SELECT count(*) FROM rb.legacy_g2") == 0);

  Client client(url);
  // Logged target tables survive with their checkpoint: the rerun resumes.
  const int64_t ledger_first =
      Complete(*client.pool, *client.store, ledger, "rb", 100);
  CHECK(ledger_first > ledger_at);
  // An emptied (unlogged) target starts over.
  const int64_t legacy_first =
      Complete(*client.pool, *client.store, legacy, "rb", 100);
  CHECK(legacy_first < legacy_at);
  for (const char* name : {"ledger", "legacy"}) {
    INFO(name);
    CHECK(QueryInt(url, absl::StrCat("SELECT count(*) FROM rb.", name)) ==
          kEvents);
    CHECK(QueryInt(url, absl::StrCat("SELECT count(DISTINCT (stream, "
                                     "version)) FROM rb.",
                                     name)) == kEvents);
    CHECK(QueryInt(url, absl::StrCat("SELECT sum(amount) FROM rb.", name)) ==
          static_cast<long long>(kEvents) * (kEvents - 1) / 2);
    CHECK(QueryInt(url, absl::StrCat("SELECT generation FROM rb.projections "
                                     "WHERE name = '",
                                     name, "'")) == 2);
    // The deferred primary key was built.
    CHECK(QueryInt(url, absl::StrCat("SELECT count(*) FROM pg_constraint "
                                     "WHERE conrelid = 'rb.",
                                     name,
                                     "_g2'::regclass AND contype = "
                                     "'p'")) == 1);
  }
}

TEST_CASE("an interrupted rebuild resumes after a clean server restart",
          "[projections][pg]") {
  PrivateCluster cluster;
  const Projection ledger = Ledger("ledger");
  int64_t at = 0;
  {
    Client client(cluster.url());
    AppendAdded(*client.store, kEvents, 30);
    at = Interrupt(*client.pool, *client.store, ledger, "rb", 5, 100);
    REQUIRE(at >= 500);
  }
  cluster.Restart();
  Client client(cluster.url());
  // Resumed from its checkpoint, not from the start.
  CHECK(Complete(*client.pool, *client.store, ledger, "rb", 100) > at);
  CHECK(QueryInt(cluster.url(), "SELECT count(*) FROM rb.ledger") == kEvents);
  CHECK(QueryInt(cluster.url(),
                 "SELECT count(DISTINCT (stream, version)) FROM rb.ledger") ==
        kEvents);
}

// --- Steps that must not hold readers of events back ------------------------

// A live runner of `projections` on `schema`.
std::unique_ptr<ProjectionRunner> StartRunner(
    TestSchema& schema, eventstore::PostgresEventStore* store,
    std::vector<Projection> projections) {
  ProjectionRunnerOptions o;
  o.schema = schema.name();
  o.batch_size = 100;
  o.poll_interval = absl::Milliseconds(200);
  o.takeover_interval = absl::Milliseconds(100);
  auto runner = ProjectionRunner::Create(&schema.pool(), store,
                                         std::move(projections), o);
  REQUIRE(runner.ok());
  (*runner)->Start();
  return *std::move(runner);
}

// Appends a Ping (which only "tally" handles) and waits, at most `timeout`,
// until a reader of events sees it (HeadPosition) and "tally" has stored a
// checkpoint past it. Readers only see events of transactions older than
// every running one: a rebuild step holding a transaction id holds this
// back until it ends.
bool PingSeen(TestSchema& schema, eventstore::PostgresEventStore& store,
              absl::Duration timeout) {
  absl::StatusOr<eventstore::AppendResult> ping =
      store.Append("ping", ExpectedVersion::Any(), {Ping()});
  REQUIRE(ping.ok());
  const Position at = ping->position;
  return Eventually(
      [&] {
        absl::StatusOr<Position> head = store.HeadPosition();
        REQUIRE(head.ok());
        return !(*head < at) &&
               !(StoredCheckpoint(schema.url(), schema.name(), "tally") < at);
      },
      timeout);
}

// An index expression that takes 20 ms per row, so that the deferred index
// build lasts long enough to look at.
void CreateSlowFunction(TestSchema& schema) {
  schema.Exec(absl::StrCat(
      "CREATE FUNCTION ", schema.name(),
      ".slow(t text) RETURNS text IMMUTABLE LANGUAGE plpgsql AS $$ BEGIN "
      "PERFORM pg_sleep(0.02); RETURN t; END $$"));
}

TEST_CASE(
    "building deferred indexes does not hold back readers of events or "
    "other projections",
    "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  CreateSlowFunction(schema);
  // 500 rows: the slow index takes 10 s to build.
  AppendAdded(*store, 500, 10);
  auto runner = StartRunner(schema, store.get(), {Tally()});
  REQUIRE(PingSeen(schema, *store, absl::Seconds(30)));

  const Projection ledger =
      Ledger("ledger", {absl::StrCat("CREATE INDEX {table_name}_slow ON "
                                     "{table} (",
                                     schema.name(), ".slow(stream))")});
  std::atomic<bool> done{false};
  absl::Status rebuilt;
  std::thread rebuild([&] {
    RebuildOptions options;
    options.batch_size = 100;
    rebuilt = RebuildProjection(&schema.pool(), store.get(), ledger,
                                schema.name(), options);
    done = true;
  });
  auto building = [&] {
    return QueryInt(schema.url(),
                    absl::StrCat("SELECT count(*) FROM "
                                 "pg_stat_progress_create_index WHERE relid "
                                 "= to_regclass('",
                                 schema.name(), ".ledger_g2')")) > 0;
  };
  REQUIRE(Eventually(building));
  // Seen well before the 10 s build ends, and while it still runs.
  CHECK(PingSeen(schema, *store, absl::Seconds(4)));
  CHECK(building());
  CHECK_FALSE(done);
  rebuild.join();
  INFO(rebuilt.ToString());
  CHECK(rebuilt.ok());
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                     ".ledger")) == 500);
  CHECK(schema.QueryInt(absl::StrCat(
            "SELECT count(*) FROM pg_index WHERE indisvalid AND indrelid = "
            "to_regclass('",
            schema.name(), ".ledger_g2')")) == 2);
  runner->Stop();
}

TEST_CASE(
    "a swap behind a long reader of the view retries without holding back "
    "readers of events or new readers of the view",
    "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  AppendAdded(*store, 500, 10);
  const Projection ledger = Ledger("ledger");
  auto runner = StartRunner(schema, store.get(), {Tally(), ledger});
  REQUIRE(PingSeen(schema, *store, absl::Seconds(30)));
  const std::string view = absl::StrCat(schema.name(), ".ledger");
  REQUIRE(Eventually(
      [&] { return schema.QueryInt("SELECT count(*) FROM " + view) == 500; }));

  // The swap announces that it waits: older code by a lock request on the
  // view that is not granted, this code by a log line each time it backs
  // off.
  absl::Mutex mu;
  bool logged_wait = false;
  SetLogSinkForTesting([&](absl::string_view line) {
    if (absl::StrContains(line, "rebuild waits")) {
      absl::MutexLock lock(&mu);
      logged_wait = true;
    }
  });
  auto swap_waits = [&] {
    {
      absl::MutexLock lock(&mu);
      if (logged_wait) return true;
    }
    return schema.QueryInt(absl::StrCat(
               "SELECT count(*) FROM pg_locks WHERE NOT granted AND "
               "relation = to_regclass('",
               view, "')")) > 0;
  };

  // A long reader of the view: a report that runs for a while.
  pqxx::connection long_conn(schema.url());
  auto long_reader = std::make_unique<pqxx::work>(long_conn);
  long_reader->exec("SELECT count(*) FROM " + view);

  std::atomic<bool> done{false};
  absl::Status rebuilt;
  std::thread rebuild([&] {
    RebuildOptions options;
    options.batch_size = 100;
    rebuilt = RebuildProjection(&schema.pool(), store.get(), ledger,
                                schema.name(), options);
    done = true;
  });
  REQUIRE(Eventually(swap_waits));

  // Readers of events and other projections go on.
  CHECK(PingSeen(schema, *store, absl::Seconds(3)));
  // A new reader of the view is not queued behind the swap.
  {
    pqxx::connection conn(schema.url());
    pqxx::nontransaction tx(conn);
    tx.exec("SET statement_timeout = '3s'");
    long long rows = -1;
    try {
      rows = tx.exec1("SELECT count(*) FROM " + view)[0].as<long long>();
    } catch (const std::exception& e) {
      UNSCOPED_INFO("new reader of the view: " << e.what());
    }
    CHECK(rows == 500);
  }
  CHECK_FALSE(done);  // still waiting for the long reader

  long_reader->commit();
  long_reader.reset();
  rebuild.join();
  SetLogSinkForTesting(nullptr);
  INFO(rebuilt.ToString());
  CHECK(rebuilt.ok());
  CHECK(schema.QueryInt(absl::StrCat("SELECT generation FROM ", schema.name(),
                                     ".projections WHERE name = 'ledger'")) ==
        2);
  CHECK(schema.QueryInt("SELECT count(*) FROM " + view) == 500);
  runner->Stop();
}

TEST_CASE("rebuild options out of range are refused and change nothing",
          "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  AppendAdded(*store, 10, 5);
  const Projection ledger = Ledger("ledger");
  for (double share : {-0.1, 0.95}) {
    INFO(share);
    RebuildOptions options;
    options.pause_share = share;
    absl::Status s = RebuildProjection(&schema.pool(), store.get(), ledger,
                                       schema.name(), options);
    CHECK(absl::IsInvalidArgument(s));
    CHECK(absl::StrContains(s.message(), "pause_share"));
  }
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                     ".projection_rebuilds")) == 0);
  // In range: pauses between writes, same result.
  RebuildOptions options;
  options.batch_size = 3;
  options.pause_share = 0.9;
  REQUIRE(RebuildProjection(&schema.pool(), store.get(), ledger, schema.name(),
                            options)
              .ok());
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                     ".ledger")) == 10);
}

}  // namespace
}  // namespace cqrs::projections

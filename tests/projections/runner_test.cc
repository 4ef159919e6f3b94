// The projection runner against a real PostgreSQL: checkpoints committed
// with the read model (exactly once, also when commits fail), live
// notifications surviving a killed listener, ownership with a standby, and
// the stop and park error policies.
#include "projections/runner.h"

#include <thread>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "eventstore/internal/validation.h"
#include "projections/internal/common.h"
#include "projections/parked.h"
#include "projections/rebuild.h"
#include "projections/status.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace cqrs::projections {
namespace {

using eventstore::ExpectedVersion;
using eventstore::NewEvent;
using eventstore::Position;
using eventstore::RecordedEvent;
using testing::TestSchema;

// Sums {"amount": N} of "Added" events per stream, in one statement per
// batch. An amount of 666 is poison (fails the handler) while `poison` is
// set.
Projection Totals(std::atomic<bool>* poison = nullptr,
                  std::atomic<int64_t>* applied = nullptr) {
  Projection p;
  p.name = "totals";
  p.event_types = {"Added"};
  p.tables = {{"totals",
               "CREATE TABLE {table} (stream text PRIMARY KEY, "
               "total bigint NOT NULL, events bigint NOT NULL)"}};
  p.apply = [poison, applied](ProjectionContext& ctx,
                              EventBatch events) -> absl::Status {
    std::map<std::string, std::pair<int64_t, int64_t>> delta;
    for (const RecordedEvent& e : events) {
      const size_t colon = e.data.find(':');
      int64_t amount = 0;
      if (!absl::SimpleAtoi(absl::string_view(e.data).substr(
                                colon + 1, e.data.size() - colon - 2),
                            &amount)) {
        return absl::InvalidArgumentError("bad event data " + e.data);
      }
      if (amount == 666 && poison != nullptr && poison->load()) {
        return absl::InternalError("poison amount 666");
      }
      delta[e.stream_id].first += amount;
      delta[e.stream_id].second += 1;
    }
    std::vector<std::string> streams, totals, counts;
    for (const auto& [stream, d] : delta) {
      streams.push_back(stream);
      totals.push_back(absl::StrCat(d.first));
      counts.push_back(absl::StrCat(d.second));
    }
    ctx.tx().exec_params(
        absl::StrCat("INSERT INTO ", ctx.Table("totals"),
                     " AS t SELECT * FROM unnest($1::text[], $2::bigint[], "
                     "$3::bigint[]) ON CONFLICT (stream) DO UPDATE SET "
                     "total = t.total + EXCLUDED.total, "
                     "events = t.events + EXCLUDED.events"),
        absl::StrCat("{", absl::StrJoin(streams, ","), "}"),
        absl::StrCat("{", absl::StrJoin(totals, ","), "}"),
        absl::StrCat("{", absl::StrJoin(counts, ","), "}"));
    if (applied != nullptr) *applied += static_cast<int64_t>(events.size());
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

NewEvent Other() {
  NewEvent e;
  e.event_type = "SomethingElse";
  e.data = "{}";
  return e;
}

// Appends `n` events round robin over `streams` streams ("s-<i>"), amounts
// 1, 2, 3, ...; returns the expected fold.
// Appends n events over `streams` streams; returns what they add up to.
// A failed append fails the test, or, from a thread other than the test's
// (Catch2's assertions are for that one only), counts in `*failures`.
std::map<std::string, std::pair<int64_t, int64_t>> AppendMany(
    eventstore::EventStore& store, int n, int streams, int first_amount = 1,
    std::atomic<int>* failures = nullptr) {
  std::map<std::string, std::pair<int64_t, int64_t>> fold;
  for (int i = 0; i < n; ++i) {
    const std::string stream = absl::StrCat("s-", i % streams);
    const int64_t amount = first_amount + i;
    const bool ok =
        store.Append(stream, ExpectedVersion::Any(), {Added(amount)}).ok();
    if (failures != nullptr) {
      if (!ok) ++*failures;
      if (!ok) continue;
    } else {
      REQUIRE(ok);
    }
    fold[stream].first += amount;
    fold[stream].second += 1;
  }
  return fold;
}

std::map<std::string, std::pair<int64_t, int64_t>> ReadTotals(
    TestSchema& schema) {
  std::map<std::string, std::pair<int64_t, int64_t>> out;
  pqxx::connection conn(schema.url());
  pqxx::nontransaction tx(conn);
  for (const pqxx::row& r : tx.exec(absl::StrCat(
           "SELECT stream, total, events FROM ", schema.name(), ".totals"))) {
    out[r[0].as<std::string>()] = {r[1].as<int64_t>(), r[2].as<int64_t>()};
  }
  return out;
}

// Other tests share the cluster, and their open transactions hold back
// what readers (projections too) may see of committed events, so a
// read model is compared by waiting (bounded) for it to equal `want`.
bool Converges(TestSchema& schema,
               const std::map<std::string, std::pair<int64_t, int64_t>>& want) {
  return testing::Eventually([&] { return ReadTotals(schema) == want; },
                             absl::Seconds(20), absl::Milliseconds(10));
}

ProjectionStatus StatusOf(const ProjectionRunner& runner) {
  std::vector<ProjectionStatus> s = runner.Statuses();
  REQUIRE(s.size() == 1);
  return s[0];
}

using ::cqrs::testing::Eventually;

bool ReachedHead(const ProjectionRunner& runner,
                 eventstore::EventStore& store) {
  absl::StatusOr<Position> head = store.HeadPosition();
  REQUIRE(head.ok());
  return !(StatusOf(runner).position < *head);
}

ProjectionRunnerOptions Options(TestSchema& schema) {
  ProjectionRunnerOptions o;
  o.schema = schema.name();
  o.batch_size = 50;
  o.poll_interval = absl::Milliseconds(200);
  o.takeover_interval = absl::Milliseconds(100);
  return o;
}

TEST_CASE("a projection catches up and follows live appends exactly",
          "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto fold = AppendMany(*store, 500, 17);
  REQUIRE(store->Append("x-1", ExpectedVersion::Any(), {Other()}).ok());
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {Totals()}, Options(schema));
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); }));
  CHECK(Converges(schema, fold));

  // Live: appended after catching up.
  auto more = AppendMany(*store, 100, 23, 1000);
  for (const auto& [stream, d] : more) {
    fold[stream].first += d.first;
    fold[stream].second += d.second;
  }
  REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); }));
  CHECK(Converges(schema, fold));
  CHECK(StatusOf(**runner).state == "running");

  // A restart resumes from the checkpoint: nothing is applied twice.
  (*runner)->Stop();
  auto again = ProjectionRunner::Create(&schema.pool(), store.get(), {Totals()},
                                        Options(schema));
  REQUIRE(again.ok());
  (*again)->Start();
  REQUIRE(Eventually([&] { return ReachedHead(**again, *store); }));
  CHECK(Converges(schema, fold));
}

TEST_CASE(
    "live events that commit within live_batch_interval of the last batch's "
    "start join one batch",
    "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto fold = AppendMany(*store, 5, 1);
  ProjectionRunnerOptions options = Options(schema);
  options.live_batch_interval = absl::Seconds(1);
  std::atomic<int> batches{0};
  options.on_progress = [&](absl::string_view, Position) { ++batches; };
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {Totals()}, options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); }));
  REQUIRE(Converges(schema, fold));

  const int before = batches;
  const absl::Time start = absl::Now();
  // 20 appends 10 ms apart: each its own commit and notification, which a
  // projection without the interval applies as a batch of its own.
  for (int i = 0; i < 20; ++i) {
    for (const auto& [stream, d] : AppendMany(*store, 1, 1, 100 + i)) {
      fold[stream].first += d.first;
      fold[stream].second += d.second;
    }
    // A sleep is right here: the test is about events spread over time
    // (each notified apart), not a wait for a condition.
    absl::SleepFor(absl::Milliseconds(10));
  }
  const absl::Duration appending = absl::Now() - start;
  REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); }));
  CHECK(Converges(schema, fold));
  // One batch for all of them, or two when the first came a second after
  // the last batch (a slow machine gets one more per second of appending).
  INFO("appending took " << appending);
  CHECK(batches - before <=
        2 + static_cast<int>(absl::ToInt64Seconds(appending)));
  CHECK(batches - before >= 1);
}

TEST_CASE(
    "events a projection does not handle move it on without a commit "
    "each; a restart skips them again and stores the progress when due",
    "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto fold = AppendMany(*store, 20, 3);
  ProjectionRunnerOptions options = Options(schema);
  // Only the count of skipped events (batch_size 50) may store progress in
  // the loop below, however slow the machine.
  options.checkpoint_interval = absl::Hours(1);
  std::atomic<int> reported{0};
  options.on_progress = [&](absl::string_view, Position) { ++reported; };
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {Totals()}, options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); }));
  // Events of another type, appended one at a time: the projection reports
  // each step (read-your-writes needs it) but does not write its checkpoint
  // for each; the stored one trails.
  const int reported_before = reported;
  int trailing = 0;
  for (int i = 0; i < 60; ++i) {
    REQUIRE(store->Append("x-1", ExpectedVersion::Any(), {Other()}).ok());
    REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); }));
    const Position at = StatusOf(**runner).position;
    trailing +=
        schema.QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", schema.name(),
            ".projections WHERE (position_xid, position_gp) < ('",
            at.transaction_id, "'::xid8, ", at.global_position, ")")) == 1;
  }
  // Each append is reported (two may share a batch).
  CHECK(reported - reported_before >= 30);
  CHECK(trailing >= 30);
  // A restart goes on from the older stored checkpoint, skips those events
  // again, and (with the interval passed) stores the progress while idle;
  // nothing is applied twice.
  (*runner)->Stop();
  auto more = AppendMany(*store, 10, 3, 500);
  for (const auto& [stream, d] : more) {
    fold[stream].first += d.first;
    fold[stream].second += d.second;
  }
  REQUIRE(store->Append("x-1", ExpectedVersion::Any(), {Other()}).ok());
  ProjectionRunnerOptions quick = Options(schema);
  quick.checkpoint_interval = absl::Milliseconds(100);
  auto again =
      ProjectionRunner::Create(&schema.pool(), store.get(), {Totals()}, quick);
  REQUIRE(again.ok());
  (*again)->Start();
  REQUIRE(Eventually([&] { return ReachedHead(**again, *store); }));
  CHECK(Converges(schema, fold));
  absl::StatusOr<Position> head = store->HeadPosition();
  REQUIRE(head.ok());
  CHECK(Eventually([&] {
    return schema.QueryInt(absl::StrCat(
               "SELECT count(*) FROM ", schema.name(),
               ".projections WHERE position_xid = '", head->transaction_id,
               "'::xid8 AND position_gp = ", head->global_position)) == 1;
  }));
}

TEST_CASE("failed commits after the handler ran apply nothing twice",
          "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto fold = AppendMany(*store, 400, 7);
  std::atomic<int> commits{0};
  std::atomic<int> injected{0};
  ProjectionRunnerOptions options = Options(schema);
  options.retry_backoff = absl::Milliseconds(1);
  // Every other commit fails after the handler wrote its rows.
  options.before_commit_for_testing = [&](absl::string_view, Position) {
    if (commits++ % 2 == 0) {
      ++injected;
      return absl::UnavailableError("injected failure before commit");
    }
    return absl::OkStatus();
  };
  std::atomic<int64_t> applied{0};
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {Totals(nullptr, &applied)}, options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  CHECK(Converges(schema, fold));
  (*runner)->Stop();
  CHECK(injected >= 8);
  CHECK(applied > 400);  // handlers ran for batches that rolled back
  CHECK(ReadTotals(schema) == fold);
}

TEST_CASE("live events still arrive after the listening session is killed",
          "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  ProjectionRunnerOptions options = Options(schema);
  // Polling alone would take a minute: only notifications can pass this.
  options.poll_interval = absl::Seconds(60);
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {Totals()}, options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  // Appends through another store object, as another process makes them:
  // those of the runner's own store reach it without a notification.
  auto other = schema.NewEventStore();
  auto fold = AppendMany(*other, 10, 3);
  REQUIRE(Converges(schema, fold));

  const std::string listener = absl::StrCat(
      "FROM pg_stat_activity WHERE application_name = 'cqrs listener ",
      schema.name(), "'");
  const std::string listening = "SELECT count(*) " + listener;
  REQUIRE(schema.QueryInt(listening) == 1);
  CHECK(schema.QueryInt("SELECT count(pg_terminate_backend(pid)) " +
                        listener) == 1);
  // Wait for the new LISTEN session, then append.
  REQUIRE(Eventually([&] { return schema.QueryInt(listening) >= 1; }));
  auto more = AppendMany(*other, 10, 3, 100);
  for (const auto& [stream, d] : more) {
    fold[stream].first += d.first;
    fold[stream].second += d.second;
  }
  REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); },
                     absl::Seconds(30)));
  CHECK(Converges(schema, fold));
}

TEST_CASE(
    "appends through the runner's own store reach it without a notification",
    "[projections][pg]") {
  TestSchema schema;
  eventstore::PostgresEventStoreOptions quiet;
  quiet.notify = eventstore::PostgresEventStoreOptions::Notify::kNone;
  auto store = schema.NewEventStore(quiet);
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  ProjectionRunnerOptions options = Options(schema);
  // No NOTIFY is sent, and polling would take a minute.
  options.poll_interval = absl::Seconds(60);
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {Totals()}, options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(Eventually([&] { return StatusOf(**runner).state == "running"; }));
  auto fold = AppendMany(*store, 20, 3);
  REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); },
                     absl::Seconds(30)));
  CHECK(Converges(schema, fold));
  // After Stop() the store no longer calls into the stopped runner.
  (*runner)->Stop();
  runner->reset();
  CHECK(store->Append("x-1", ExpectedVersion::Any(), {Other()}).ok());
}

TEST_CASE("a standby takes over when the owner stops", "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto fold = AppendMany(*store, 200, 5);
  auto first = ProjectionRunner::Create(&schema.pool(), store.get(), {Totals()},
                                        Options(schema));
  auto second = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {Totals()}, Options(schema));
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  (*first)->Start();
  REQUIRE(Eventually([&] { return ReachedHead(**first, *store); }));
  (*second)->Start();
  REQUIRE(Eventually([&] { return StatusOf(**second).state == "standby"; }));
  CHECK(StatusOf(**first).state == "running");

  (*first)->Stop();  // closes its ownership session
  auto more = AppendMany(*store, 50, 5, 500);
  for (const auto& [stream, d] : more) {
    fold[stream].first += d.first;
    fold[stream].second += d.second;
  }
  REQUIRE(Eventually([&] { return StatusOf(**second).state != "standby"; }));
  CHECK(Converges(schema, fold));
}

TEST_CASE("a poison event stops a projection with kStop", "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  std::atomic<bool> poison{true};
  AppendMany(*store, 30, 3);
  auto bad = store->Append("s-1", ExpectedVersion::Any(), {Added(666)});
  REQUIRE(bad.ok());
  AppendMany(*store, 30, 3, 1000);
  ProjectionRunnerOptions options = Options(schema);
  Projection p = Totals(&poison);
  p.max_attempts = 2;
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {std::move(p)}, options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(Eventually([&] { return StatusOf(**runner).state == "failed"; }));
  ProjectionStatus s = StatusOf(**runner);
  CHECK(absl::StrContains(s.last_error, "poison amount 666"));
  REQUIRE(s.failed_position.has_value());
  CHECK(*s.failed_position == bad->position);
  // Everything before the poison event is applied, nothing after it.
  auto totals = ReadTotals(schema);
  int64_t events = 0;
  for (const auto& [stream, d] : totals) events += d.second;
  CHECK(events == 30);
  (*runner)->Stop();
  // The state is stored: a new runner reports it without retrying.
  auto again = ProjectionRunner::Create(&schema.pool(), store.get(),
                                        {Totals(&poison)}, options);
  REQUIRE(again.ok());
  (*again)->Start();
  REQUIRE(Eventually([&] { return StatusOf(**again).state == "failed"; }));
  CHECK(StatusOf(**again).failed_position == bad->position);

  // Fixed and rebuilt: the running worker picks the projection up again.
  poison = false;
  REQUIRE(RebuildProjection(&schema.pool(), store.get(), Totals(&poison),
                            schema.name(), {})
              .ok());
  CHECK(Eventually([&] { return StatusOf(**again).state == "running"; }));
  totals = ReadTotals(schema);
  events = 0;
  for (const auto& [stream, d] : totals) events += d.second;
  CHECK(events == 61);
}

TEST_CASE("a poison event is parked with kPark and its stream waits",
          "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  std::atomic<bool> poison{true};
  auto before = AppendMany(*store, 30, 3);
  REQUIRE(store->Append("s-1", ExpectedVersion::Any(), {Added(666)}).ok());
  // Later events: s-1's are parked behind the poison, others applied.
  auto after = AppendMany(*store, 30, 3, 1000);
  Projection p = Totals(&poison);
  p.max_attempts = 2;
  p.on_error = ErrorPolicy::kPark;
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {std::move(p)}, Options(schema));
  REQUIRE(runner.ok());
  (*runner)->Start();
  // The poison and the 10 later events of s-1.
  CHECK(Eventually([&] { return StatusOf(**runner).parked == 11; }));
  ProjectionStatus s = StatusOf(**runner);
  CHECK(s.state == "running");
  CHECK(s.parked == 11);
  auto expected = before;
  for (const auto& [stream, d] : after) {
    if (stream == "s-1") continue;
    expected[stream].first += d.first;
    expected[stream].second += d.second;
  }
  CHECK(Converges(schema, expected));
  CHECK(schema.QueryInt(
            absl::StrCat("SELECT count(*) FROM ", schema.name(),
                         ".projection_parked WHERE stream_id = 's-1'")) == 11);
  auto listed = ListParked(schema.pool(), schema.name(), "totals", 100);
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 11);
  CHECK(absl::StrContains((*listed)[0].error, "poison amount 666"));
  CHECK(absl::StrContains((*listed)[1].error, "parked behind"));

  // Still broken: a replay changes nothing.
  auto replay = ReplayParked(schema.pool(), Totals(&poison), schema.name());
  REQUIRE(replay.ok());
  CHECK(replay->replayed == 0);
  CHECK(replay->still_parked == 11);
  CHECK(ReadTotals(schema) == expected);

  // Fixed: the replay applies them in order, and s-1 is live again.
  poison = false;
  replay = ReplayParked(schema.pool(), Totals(&poison), schema.name());
  REQUIRE(replay.ok());
  CHECK(replay->replayed == 11);
  CHECK(replay->still_parked == 0);
  auto full = before;
  full["s-1"].first += 666;
  full["s-1"].second += 1;
  for (const auto& [stream, d] : after) {
    full[stream].first += d.first;
    full[stream].second += d.second;
  }
  CHECK(Converges(schema, full));
  REQUIRE(store->Append("s-1", ExpectedVersion::Any(), {Added(5)}).ok());
  full["s-1"].first += 5;
  full["s-1"].second += 1;
  CHECK(Converges(schema, full));
  CHECK(Eventually([&] { return StatusOf(**runner).parked == 0; }));
}

// Totals(), where an amount of 777 also fails, in SQL, while `sql_poison`
// is set: the failure aborts what the handler's statement did.
Projection TotalsFailingInSql(std::atomic<bool>* poison,
                              std::atomic<bool>* sql_poison) {
  Projection p = Totals(poison);
  auto totals = p.apply;
  p.apply = [totals, sql_poison](ProjectionContext& ctx,
                                 EventBatch events) -> absl::Status {
    for (const RecordedEvent& e : events) {
      if (*sql_poison && absl::StrContains(e.data, "777")) {
        ctx.tx().exec_params("SELECT 1 / $1::int", 0);  // throws
      }
    }
    return totals(ctx, events);
  };
  return p;
}

TEST_CASE(
    "a replay keeps an event that fails again in SQL parked, applies the "
    "rest, and then clears the last error",
    "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  std::atomic<bool> poison{true};
  std::atomic<bool> sql_poison{true};
  auto fold = AppendMany(*store, 20, 4);
  REQUIRE(store->Append("s-1", ExpectedVersion::Any(), {Added(666)}).ok());
  REQUIRE(store->Append("s-2", ExpectedVersion::Any(), {Added(777)}).ok());
  Projection p = TotalsFailingInSql(&poison, &sql_poison);
  p.max_attempts = 1;
  p.on_error = ErrorPolicy::kPark;
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(), {p},
                                         Options(schema));
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(Eventually([&] { return StatusOf(**runner).parked == 2; }));
  auto stored = [&] {
    auto all =
        ReadProjectionStatuses(schema.pool(), schema.name(), schema.name());
    REQUIRE(all.ok());
    return (*all)[0];
  };
  CHECK(!stored().last_error.empty());
  CHECK(!stored().last_error_at.empty());

  // 666 is fixed, 777 still fails in SQL. Before the fix the failed
  // statement aborted the whole replay (libpqxx's subtransaction had not
  // opened its savepoint): nothing was replayed.
  poison = false;
  auto replay = ReplayParked(schema.pool(), p, schema.name());
  REQUIRE(replay.ok());
  CHECK(replay->replayed == 1);
  CHECK(replay->still_parked == 1);
  CHECK(absl::StrContains(stored().last_error, "division by zero"));
  fold["s-1"].first += 666;
  fold["s-1"].second += 1;
  CHECK(Converges(schema, fold));

  // Everything replayed: no error left to show (before: the poison's).
  sql_poison = false;
  replay = ReplayParked(schema.pool(), p, schema.name());
  REQUIRE(replay.ok());
  CHECK(replay->replayed == 1);
  CHECK(replay->still_parked == 0);
  CHECK(stored().last_error.empty());
  CHECK(stored().last_error_at.empty());
  CHECK(stored().parked == 0);
  fold["s-2"].first += 777;
  fold["s-2"].second += 1;
  CHECK(Converges(schema, fold));
  CHECK(Eventually([&] { return StatusOf(**runner).last_error.empty(); }));
}

TEST_CASE("a new projection version waits for its rebuild, then takes over",
          "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto fold = AppendMany(*store, 300, 7);
  auto old_code = ProjectionRunner::Create(&schema.pool(), store.get(),
                                           {Totals()}, Options(schema));
  REQUIRE(old_code.ok());
  (*old_code)->Start();
  REQUIRE(Converges(schema, fold));
  (*old_code)->Stop();

  // New code: version 2 of the same projection.
  Projection v2 = Totals();
  v2.version = 2;
  auto new_code = ProjectionRunner::Create(&schema.pool(), store.get(), {v2},
                                           Options(schema));
  REQUIRE(new_code.ok());
  (*new_code)->Start();
  REQUIRE(Eventually([&] {
    return absl::StrContains(StatusOf(**new_code).last_error, "rebuild");
  }));
  CHECK(StatusOf(**new_code).state == "outdated");
  auto more = AppendMany(*store, 50, 7, 1000);
  for (const auto& [stream, d] : more) {
    fold[stream].first += d.first;
    fold[stream].second += d.second;
  }
  REQUIRE(RebuildProjection(&schema.pool(), store.get(), v2, schema.name(), {})
              .ok());
  CHECK(schema.QueryInt(absl::StrCat("SELECT version FROM ", schema.name(),
                                     ".projections WHERE name = 'totals'")) ==
        2);
  // The new code's runner takes over from the rebuilt checkpoint.
  CHECK(Eventually([&] { return StatusOf(**new_code).state == "running"; }));
  auto last = AppendMany(*store, 20, 7, 5000);
  for (const auto& [stream, d] : last) {
    fold[stream].first += d.first;
    fold[stream].second += d.second;
  }
  CHECK(Converges(schema, fold));
}

// The deploy flow of docs/projections.md with both versions running at
// once, whichever starts first: the old version applies until the rebuild
// swaps the new one in, then the new version takes over; neither freezes
// the projection by holding it while it cannot apply it.
void DeployWithBothVersions(bool new_code_first) {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto fold = AppendMany(*store, 100, 5);
  auto add = [&](int n, int first) {
    for (const auto& [stream, d] : AppendMany(*store, n, 5, first)) {
      fold[stream].first += d.first;
      fold[stream].second += d.second;
    }
  };
  // Version 1 exists in the database before the deploy.
  {
    auto first = ProjectionRunner::Create(&schema.pool(), store.get(),
                                          {Totals()}, Options(schema));
    REQUIRE(first.ok());
    (*first)->Start();
    REQUIRE(Converges(schema, fold));
  }
  Projection v2 = Totals();
  v2.version = 2;
  std::unique_ptr<ProjectionRunner> old_code, new_code;
  auto start = [&](std::unique_ptr<ProjectionRunner>& runner, Projection p) {
    auto r = ProjectionRunner::Create(&schema.pool(), store.get(),
                                      {std::move(p)}, Options(schema));
    REQUIRE(r.ok());
    runner = *std::move(r);
    runner->Start();
  };
  if (new_code_first) {
    start(new_code, v2);
    // Before the fix the new code kept ownership here, and the old code
    // below stayed a standby: nothing was applied until it was killed.
    REQUIRE(
        Eventually([&] { return StatusOf(*new_code).state == "outdated"; }));
    start(old_code, Totals());
  } else {
    start(old_code, Totals());
    REQUIRE(Eventually([&] { return StatusOf(*old_code).state == "running"; }));
    start(new_code, v2);
    REQUIRE(
        Eventually([&] { return StatusOf(*new_code).state == "outdated"; }));
  }
  add(40, 1000);
  CHECK(Converges(schema, fold));
  CHECK(StatusOf(*new_code).state == "outdated");
  auto stored = ReadProjectionStatuses(schema.pool(), schema.name(),
                                       schema.name(), {{"totals", 2}});
  REQUIRE(stored.ok());
  CHECK((*stored)[0].state == "outdated");
  CHECK((*stored)[0].code_version == 2);

  REQUIRE(RebuildProjection(&schema.pool(), store.get(), v2, schema.name(), {})
              .ok());
  // Before the fix the old code kept ownership after the swap: the new
  // version never took over.
  REQUIRE(Eventually([&] { return StatusOf(*new_code).state == "running"; }));
  CHECK(Eventually([&] { return StatusOf(*old_code).state == "outdated"; }));
  add(30, 5000);
  CHECK(Converges(schema, fold));
  stored = ReadProjectionStatuses(schema.pool(), schema.name(), schema.name(),
                                  {{"totals", 2}});
  REQUIRE(stored.ok());
  CHECK((*stored)[0].state == "running");
  CHECK(absl::StrContains((*stored)[0].owner, "cqrs projection"));
}

TEST_CASE("deploy: new code first, both versions running",
          "[projections][pg]") {
  DeployWithBothVersions(/*new_code_first=*/true);
}

TEST_CASE("deploy: old code first, both versions running",
          "[projections][pg]") {
  DeployWithBothVersions(/*new_code_first=*/false);
}

TEST_CASE("the status names no owner from another database",
          "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {Totals()}, Options(schema));
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(Eventually([&] { return StatusOf(**runner).state == "running"; }));
  // The same schema and projection in another database of the cluster,
  // which nothing runs.
  cqrs::testing::TestDatabase other("");
  {
    PgPoolOptions pool_options;
    pool_options.conninfo = other.url();
    pool_options.max_connections = 2;
    auto twin_pool = PgPool::Create(pool_options);
    REQUIRE(twin_pool.ok());
    REQUIRE(eventstore::PostgresEventStore::Migrate(**twin_pool, schema.name())
                .ok());
    REQUIRE(ProjectionRunner::Migrate(**twin_pool, schema.name()).ok());
    pqxx::connection conn(other.url());
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat(
        "INSERT INTO ", schema.name(),
        ".projections (name, version, generation) VALUES ('totals', 1, 1)"));
    auto statuses =
        ReadProjectionStatuses(**twin_pool, schema.name(), schema.name());
    REQUIRE(statuses.ok());
    REQUIRE(statuses->size() == 1);
    // Before the fix: "running", owned by the other database's runner.
    CHECK((*statuses)[0].owner.empty());
    CHECK((*statuses)[0].state == "stopped");
  }
  auto here =
      ReadProjectionStatuses(schema.pool(), schema.name(), schema.name());
  REQUIRE(here.ok());
  CHECK(!(*here)[0].owner.empty());
}

TEST_CASE("bad projections are refused", "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto create = [&](Projection p) {
    return ProjectionRunner::Create(&schema.pool(), store.get(), {std::move(p)},
                                    Options(schema))
        .status();
  };
  Projection p = Totals();
  p.name = "Bad Name";
  CHECK(absl::IsInvalidArgument(create(p)));
  p = Totals();
  p.tables[0].ddl = "CREATE TABLE totals (x int)";
  CHECK(absl::IsInvalidArgument(create(p)));
  p = Totals();
  p.event_types.clear();
  CHECK(absl::IsInvalidArgument(create(p)));
  CHECK(absl::IsInvalidArgument(
      ProjectionRunner::Create(&schema.pool(), store.get(),
                               {Totals(), Totals()}, Options(schema))
          .status()));
  // Nothing was created by the refused calls.
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                     ".projections")) == 0);
}

TEST_CASE("a rebuild while serving: readers see no error, gap or regression",
          "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto fold = AppendMany(*store, 3000, 40);
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {Totals()}, Options(schema));
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(Converges(schema, fold));

  // Readers poll the live view; a writer keeps appending.
  std::atomic<bool> done{false};
  std::atomic<int> reads{0};
  std::atomic<int> problems{0};
  absl::Mutex first_error_mu;
  std::string first_error;
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      pqxx::connection conn(schema.url());
      std::map<std::string, int64_t> seen;
      while (!done) {
        try {
          pqxx::nontransaction tx(conn);
          pqxx::result rows = tx.exec(absl::StrCat(
              "SELECT stream, events FROM ", schema.name(), ".totals"));
          if (rows.size() < 40) ++problems;  // a missing row
          for (const pqxx::row& row : rows) {
            int64_t& last = seen[row[0].as<std::string>()];
            if (row[1].as<int64_t>() < last) ++problems;  // went backwards
            last = row[1].as<int64_t>();
          }
          ++reads;
        } catch (const std::exception& e) {
          // Said on the test's thread (Catch2's macros are for it only).
          if (problems++ == 0) {
            absl::MutexLock lock(&first_error_mu);
            first_error = e.what();
          }
        }
      }
    });
  }
  std::map<std::string, std::pair<int64_t, int64_t>> more;
  std::atomic<int> failed_appends{0};
  std::thread writer(
      [&] { more = AppendMany(*store, 300, 40, 10000, &failed_appends); });

  RebuildOptions options;
  options.batch_size = 200;
  int reports = 0;
  bool swapped = false;
  options.progress = [&](const RebuildProgress& p) {
    ++reports;
    swapped = p.swapped;
    CHECK(p.done <= p.total);
  };
  absl::Status rebuilt = RebuildProjection(&schema.pool(), store.get(),
                                           Totals(), schema.name(), options);
  INFO(rebuilt.ToString());
  CHECK(rebuilt.ok());
  writer.join();
  CHECK(failed_appends == 0);
  for (const auto& [stream, d] : more) {
    fold[stream].first += d.first;
    fold[stream].second += d.second;
  }
  REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); }));
  done = true;
  for (auto& t : readers) t.join();
  absl::MutexLock lock(&first_error_mu);
  INFO(first_error);
  CHECK(problems == 0);
  CHECK(reads > 0);
  CHECK(reports > 1);
  CHECK(swapped);
  CHECK(Converges(schema, fold));
  CHECK(schema.QueryInt(absl::StrCat("SELECT generation FROM ", schema.name(),
                                     ".projections WHERE name = 'totals'")) ==
        2);
  CHECK(schema.QueryInt(
            absl::StrCat("SELECT count(*) FROM pg_tables WHERE schemaname = '",
                         schema.name(), "' AND tablename = 'totals_g1'")) == 0);
}

TEST_CASE("an interrupted rebuild leaves the live model and resumes",
          "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto fold = AppendMany(*store, 1000, 10);
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {Totals()}, Options(schema));
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(Converges(schema, fold));

  RebuildOptions options;
  options.batch_size = 100;
  int batches = 0;
  options.progress = [&](const RebuildProgress&) { ++batches; };
  options.cancelled = [&] { return batches >= 3; };
  absl::Status first = RebuildProjection(&schema.pool(), store.get(), Totals(),
                                         schema.name(), options);
  CHECK(absl::IsCancelled(first));
  CHECK(Converges(schema, fold));  // live untouched
  CHECK(schema.QueryInt(
            absl::StrCat("SELECT position_gp FROM ", schema.name(),
                         ".projection_rebuilds WHERE name = 'totals'")) > 0);

  // Another rebuild of it is refused while one holds the lock.
  pqxx::connection holder(schema.url());
  pqxx::nontransaction lock(holder);
  lock.exec_params("SELECT pg_advisory_lock($1, hashtext($2))",
                   projections_internal::kRebuildLockClass,
                   schema.name() + ".totals");
  options.cancelled = nullptr;
  CHECK(absl::IsAborted(RebuildProjection(&schema.pool(), store.get(), Totals(),
                                          schema.name(), options)));
  lock.exec_params("SELECT pg_advisory_unlock($1, hashtext($2))",
                   projections_internal::kRebuildLockClass,
                   schema.name() + ".totals");

  // Resumed: it starts from its checkpoint, not from scratch.
  int64_t first_done = -1;
  options.progress = [&](const RebuildProgress& p) {
    if (first_done < 0) first_done = p.done;
  };
  absl::Status second = RebuildProjection(&schema.pool(), store.get(), Totals(),
                                          schema.name(), options);
  INFO(second.ToString());
  REQUIRE(second.ok());
  CHECK(first_done > 300);
  REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); }));
  CHECK(Converges(schema, fold));
}

// Transient errors, isolation on MustRetryTransaction, exceptions of any
// type, and resuming a failed projection.

// `base` with `before` run first on every batch: an error from it is the
// batch's error.
Projection Hooked(
    Projection base,
    std::function<absl::Status(ProjectionContext&, EventBatch)> before) {
  auto apply = base.apply;
  base.apply = [apply, before](ProjectionContext& ctx,
                               EventBatch events) -> absl::Status {
    absl::Status s = before(ctx, events);
    if (!s.ok()) return s;
    return apply(ctx, events);
  };
  return base;
}

// Sum of the "events" column: every event applied exactly once makes it
// the number of "Added" events.
int64_t AppliedEvents(TestSchema& schema) {
  int64_t events = 0;
  for (const auto& [stream, d] : ReadTotals(schema)) events += d.second;
  return events;
}

// The stored status of "totals", as GET /projections reads it.
StoredStatus StoredTotals(TestSchema& schema) {
  auto all =
      ReadProjectionStatuses(schema.pool(), schema.name(), schema.name());
  REQUIRE(all.ok());
  for (const StoredStatus& s : *all) {
    if (s.name == "totals") return s;
  }
  FAIL("no stored status for totals");
  return {};
}

TEST_CASE(
    "a lock timeout on the read model is retried past max_attempts, never "
    "failed or parked, and applies every event once after the lock goes",
    "[projections][pg]") {
  const ErrorPolicy policy = GENERATE(ErrorPolicy::kStop, ErrorPolicy::kPark);
  INFO("policy " << (policy == ErrorPolicy::kStop ? "stop" : "park"));
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  // The runner's sessions give up on a lock after 50 ms.
  PgPoolOptions pool_options;
  pool_options.conninfo = schema.url();
  pool_options.max_connections = 4;
  pool_options.on_connect = [](pqxx::connection& conn) {
    pqxx::nontransaction tx(conn);
    tx.exec("SET lock_timeout = '50ms'");
  };
  auto pool = PgPool::Create(std::move(pool_options));
  REQUIRE(pool.ok());
  std::atomic<int> calls{0};
  Projection p = Hooked(Totals(), [&](ProjectionContext&, EventBatch) {
    ++calls;
    return absl::OkStatus();
  });
  p.max_attempts = 2;
  p.on_error = policy;
  ProjectionRunnerOptions options = Options(schema);
  options.retry_backoff = absl::Milliseconds(1);
  auto runner = ProjectionRunner::Create(pool->get(), store.get(),
                                         {std::move(p)}, options);
  REQUIRE(runner.ok());

  // What a plain CREATE INDEX takes: writers wait for it.
  pqxx::connection locker(schema.url());
  auto lock = std::make_unique<pqxx::work>(locker);
  lock->exec(
      absl::StrCat("LOCK TABLE ", schema.name(), ".totals_g1 IN SHARE MODE"));
  auto fold = AppendMany(*store, 60, 4);
  (*runner)->Start();
  // Well past max_attempts (2 for the batch, 2 per isolated event).
  REQUIRE(Eventually([&] { return calls >= 12; }));
  ProjectionStatus s = StatusOf(**runner);
  CHECK(s.state == "catching_up");
  CHECK(s.parked == 0);
  CHECK(s.last_error.empty());
  CHECK(absl::StrContains(s.transient_error, "lock timeout"));
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                     ".projection_parked")) == 0);
  // Every process sees the retry in the stored status, as GET /projections.
  REQUIRE(Eventually(
      [&] { return !StoredTotals(schema).transient_error.empty(); }));
  StoredStatus stored = StoredTotals(schema);
  CHECK(stored.state == "running");  // owned and not behind: not failed
  CHECK(absl::StrContains(stored.transient_error, "lock timeout"));
  CHECK(absl::StrContains(StatusesJson({stored}, StatusFields::kApi),
                          "\"transient_error\":"));
  CHECK(AppliedEvents(schema) == 0);

  lock->abort();
  lock.reset();
  CHECK(Converges(schema, fold));
  CHECK(Eventually([&] {
    return StatusOf(**runner).transient_error.empty() &&
           StoredTotals(schema).transient_error.empty();
  }));
  CHECK(Eventually([&] { return StatusOf(**runner).state == "running"; }));
  CHECK(StatusOf(**runner).parked == 0);
  CHECK(StoredTotals(schema).state == "running");
  (*runner)->Stop();
  CHECK(ReadTotals(schema) == fold);
}

TEST_CASE(
    "cancelled statements, killed sessions and transient commit failures "
    "are retried without end, never failed",
    "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto fold = AppendMany(*store, 40, 4);
  // The first `stalls` batches wait in a statement that the test cancels
  // or whose session it terminates; then `hook_failures` commits fail with
  // transient errors before committing.
  // Each stalled statement is named by the stalls left when it started.
  auto marker = [&](int n) {
    return absl::StrCat("stall_", schema.name(), "_", n, "_end");
  };
  std::atomic<int> stalls{6};
  std::atomic<int> hook_failures{6};
  std::atomic<int> calls{0};
  Projection p =
      Hooked(Totals(), [&](ProjectionContext& ctx, EventBatch) -> absl::Status {
        ++calls;
        const int n = stalls;
        if (n > 0) {
          ctx.tx().exec(absl::StrCat("SELECT pg_sleep(60) AS ", marker(n)));
        }
        return absl::OkStatus();
      });
  p.max_attempts = 2;
  ProjectionRunnerOptions options = Options(schema);
  options.retry_backoff = absl::Milliseconds(1);
  options.before_commit_for_testing = [&](absl::string_view, Position) {
    if (hook_failures > 0) {
      const int left = hook_failures--;
      return left % 2 == 0 ? absl::UnavailableError("injected: connection lost")
                           : absl::DeadlineExceededError("injected: timeout");
    }
    return absl::OkStatus();
  };
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {std::move(p)}, options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  for (int n = stalls; n > 0; --n) {
    INFO("stall " << n);
    const std::string stalled =
        absl::StrCat("FROM pg_stat_activity WHERE query LIKE '%AS ", marker(n),
                     "%' AND state = 'active' AND pid <> pg_backend_pid()");
    REQUIRE(Eventually(
        [&] { return schema.QueryInt("SELECT count(*) " + stalled) == 1; }));
    CHECK(StatusOf(**runner).state != "failed");
    // Alternately a cancelled statement (statement_timeout, pg_cancel_backend)
    // and a killed session (pg_terminate_backend, the OOM killer).
    stalls = n - 1;
    const char* fault =
        n % 2 == 0 ? "pg_cancel_backend" : "pg_terminate_backend";
    REQUIRE(schema.QueryInt(
                absl::StrCat("SELECT count(", fault, "(pid)) ", stalled)) == 1);
  }
  CHECK(Converges(schema, fold));
  CHECK(hook_failures <= 0);
  CHECK(Eventually([&] { return StatusOf(**runner).state == "running"; }));
  ProjectionStatus s = StatusOf(**runner);
  CHECK(s.parked == 0);
  CHECK(s.last_error.empty());
  CHECK(calls >= 13);  // 6 stalls, 6 failed commits, at least one success
  (*runner)->Stop();
  CHECK(ReadTotals(schema) == fold);
}

TEST_CASE(
    "MustRetryTransaction on a batch of several events goes on one event "
    "per transaction without counting an attempt, then in full batches",
    "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  auto fold = AppendMany(*store, 60, 3);
  // In the second batch (batch_size 50).
  REQUIRE(store->Append("s-1", ExpectedVersion::Any(), {Added(777)}).ok());
  fold["s-1"].first += 777;
  fold["s-1"].second += 1;
  auto more = AppendMany(*store, 100, 3, 1000);
  for (const auto& [stream, d] : more) {
    fold[stream].first += d.first;
    fold[stream].second += d.second;
  }
  // Batches holding 777 must redo their transaction: the first one (of
  // several events) once, then 777 alone five more times.
  absl::Mutex mu;
  std::vector<size_t> sizes;  // of every call, in order
  int retry_left = 6;
  int retried_batches = 0;  // calls of several events that got the error
  Projection p = Hooked(Totals(), [&](ProjectionContext&, EventBatch events) {
    absl::MutexLock lock(&mu);
    sizes.push_back(events.size());
    bool marked = false;
    for (const RecordedEvent& e : events) {
      marked = marked || absl::StrContains(e.data, "777");
    }
    if (!marked || retry_left == 0) return absl::OkStatus();
    --retry_left;
    if (events.size() > 1) ++retried_batches;
    return eventstore_internal::RetryTransaction(
        "injected: the stream has a newer transaction's event");
  });
  p.max_attempts = 3;
  ProjectionRunnerOptions options = Options(schema);
  options.retry_backoff = absl::Milliseconds(1);
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {std::move(p)}, options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(Converges(schema, fold));
  REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); }));
  (*runner)->Stop();
  CHECK(ReadTotals(schema) == fold);
  ProjectionStatus s = StatusOf(**runner);
  CHECK(s.parked == 0);
  CHECK(s.last_error.empty());
  absl::MutexLock lock(&mu);
  CHECK(retry_left == 0);
  // The big batch was not retried as it was: it went one event at a time.
  CHECK(retried_batches == 1);
  // ... and then back to full batches.
  size_t first_single = 0;
  while (first_single < sizes.size() && sizes[first_single] > 1) ++first_single;
  REQUIRE(first_single < sizes.size());
  size_t largest_after = 0;
  for (size_t i = first_single; i < sizes.size(); ++i) {
    largest_after = std::max(largest_after, sizes[i]);
  }
  CHECK(largest_after == 50);
}

TEST_CASE("a handler that throws a non-standard exception fails its event",
          "[projections][pg]") {
  const ErrorPolicy policy = GENERATE(ErrorPolicy::kStop, ErrorPolicy::kPark);
  INFO("policy " << (policy == ErrorPolicy::kStop ? "stop" : "park"));
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  AppendMany(*store, 10, 2);
  auto bad = store->Append("s-1", ExpectedVersion::Any(), {Added(666)});
  REQUIRE(bad.ok());
  Projection p = Hooked(Totals(), [](ProjectionContext&, EventBatch events) {
    for (const RecordedEvent& e : events) {
      if (absl::StrContains(e.data, "666")) throw 42;
    }
    return absl::OkStatus();
  });
  p.max_attempts = 2;
  p.on_error = policy;
  ProjectionRunnerOptions options = Options(schema);
  options.retry_backoff = absl::Milliseconds(1);
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {std::move(p)}, options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  if (policy == ErrorPolicy::kStop) {
    REQUIRE(Eventually([&] { return StatusOf(**runner).state == "failed"; }));
    CHECK(StatusOf(**runner).failed_position == bad->position);
  } else {
    REQUIRE(Eventually([&] { return StatusOf(**runner).parked == 1; }));
    REQUIRE(Eventually([&] { return ReachedHead(**runner, *store); }));
  }
  CHECK(absl::StrContains(StatusOf(**runner).last_error, "unknown type"));
  CHECK(AppliedEvents(schema) == 10);
}

TEST_CASE(
    "a failed projection resumes from its checkpoint without a rebuild and "
    "applies the failed event once",
    "[projections][pg]") {
  TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(ProjectionRunner::Migrate(schema.pool(), schema.name()).ok());
  std::atomic<bool> poison{true};
  auto fold = AppendMany(*store, 30, 3);
  auto bad = store->Append("s-1", ExpectedVersion::Any(), {Added(666)});
  REQUIRE(bad.ok());
  fold["s-1"].first += 666;
  fold["s-1"].second += 1;
  auto more = AppendMany(*store, 30, 3, 1000);
  for (const auto& [stream, d] : more) {
    fold[stream].first += d.first;
    fold[stream].second += d.second;
  }
  CHECK(absl::IsNotFound(
      ResumeProjection(schema.pool(), schema.name(), "totals")));
  Projection p = Totals(&poison);
  p.max_attempts = 2;
  auto runner = ProjectionRunner::Create(&schema.pool(), store.get(),
                                         {std::move(p)}, Options(schema));
  REQUIRE(runner.ok());
  CHECK(absl::IsFailedPrecondition(
      ResumeProjection(schema.pool(), schema.name(), "totals")));
  (*runner)->Start();
  REQUIRE(Eventually([&] { return StatusOf(**runner).state == "failed"; }));
  CHECK(StoredTotals(schema).state == "failed");
  CHECK(AppliedEvents(schema) == 30);
  const Position checkpoint = StatusOf(**runner).position;
  CHECK(checkpoint < bad->position);

  CHECK(absl::IsNotFound(
      ResumeProjection(schema.pool(), schema.name(), "no_such_projection")));
  poison = false;  // the handler is fixed
  REQUIRE(ResumeProjection(schema.pool(), schema.name(), "totals").ok());
  CHECK(absl::IsFailedPrecondition(
      ResumeProjection(schema.pool(), schema.name(), "totals")));
  // The running worker goes on from its checkpoint: generation 1, no
  // rebuild, each event once.
  CHECK(Converges(schema, fold));
  REQUIRE(Eventually([&] { return StatusOf(**runner).state == "running"; }));
  ProjectionStatus s = StatusOf(**runner);
  CHECK(s.last_error.empty());
  CHECK(!s.failed_position.has_value());
  StoredStatus stored = StoredTotals(schema);
  CHECK(stored.state == "running");
  CHECK(stored.last_error.empty());
  CHECK(stored.failed_position.empty());
  CHECK(stored.generation == 1);
  (*runner)->Stop();
  CHECK(ReadTotals(schema) == fold);
}

}  // namespace
}  // namespace cqrs::projections

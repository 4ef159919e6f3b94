// The query side's machinery on its own: ProgressTracker (positions,
// waiters, deadlines, notifications from runners elsewhere) and
// QueryService (read-only sessions, batches, read-your-writes parsing),
// against the test PostgreSQL.
#include "queries/query_service.h"

#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "framework/http/status_mapping.h"
#include "projections/progress.h"
#include "projections/runner.h"
#include "queries/progress_tracker.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace cqrs::queries {
namespace {

using eventstore::Position;

Position At(uint64_t xid, int64_t gp) { return Position{xid, gp}; }

std::unique_ptr<ProgressTracker> NewTracker(testing::TestSchema& schema,
                                            absl::Duration refresh) {
  REQUIRE(projections::ProjectionRunner::Migrate(schema.pool(), schema.name())
              .ok());
  ProgressTrackerOptions options;
  options.schema = schema.name();
  options.refresh_interval = refresh;
  auto tracker = ProgressTracker::Create(&schema.pool(), options);
  REQUIRE(tracker.ok());
  return *std::move(tracker);
}

// Whether the tracker's listening session is there (it is named once its
// LISTEN is in effect), waiting for it up to 20 s.
bool Listening(testing::TestSchema& schema) {
  return testing::Eventually(
      [&] {
        return schema.QueryInt(
                   absl::StrCat("SELECT count(*) FROM pg_stat_activity WHERE "
                                "application_name = 'cqrs progress ",
                                schema.name(), "'")) != 0;
      },
      absl::Seconds(20), absl::Milliseconds(20));
}

// The outcome of a WhenReached() call, once it is called.
struct Outcome {
  absl::Notification done;
  std::atomic<WaitOutcome> outcome{WaitOutcome::kDeadline};
  std::function<void(WaitOutcome)> Callback() {
    return [this](WaitOutcome o) {
      outcome = o;
      done.Notify();
    };
  }
  bool reached() const { return outcome == WaitOutcome::kReached; }
};

TEST_CASE("the tracker answers waiters when their projections get there",
          "[queries][pg]") {
  testing::TestSchema schema;
  auto tracker = NewTracker(schema, absl::Seconds(60));
  tracker->Start();
  CHECK(tracker->Current({"a"}) == Position::Start());

  tracker->Record("a", At(10, 5));
  tracker->Record("b", At(9, 7));
  CHECK(tracker->Current({"a", "b"}) == At(9, 7));
  tracker->Record("a", At(8, 1));  // older: ignored
  CHECK(tracker->Current({"a"}) == At(10, 5));

  // Reached already: answered inline.
  Outcome now;
  tracker->WhenReached({"a"}, At(10, 5), absl::Now() + absl::Seconds(5),
                       now.Callback());
  CHECK(now.done.HasBeenNotified());
  CHECK(now.reached());

  // Waits for the slower of two projections.
  Outcome later;
  tracker->WhenReached({"a", "b"}, At(11, 1), absl::Now() + absl::Seconds(30),
                       later.Callback());
  CHECK(tracker->waiting() == 1);
  tracker->Record("a", At(12, 1));
  CHECK(!later.done.HasBeenNotified());
  tracker->Record("b", At(11, 1));
  CHECK(later.done.HasBeenNotified());
  CHECK(later.reached());
  CHECK(tracker->waiting() == 0);

  // A deadline passes without progress: answered false by the timer, not
  // by a later Record().
  Outcome expired;
  const absl::Time start = absl::Now();
  tracker->WhenReached({"a"}, At(99, 1), start + absl::Milliseconds(150),
                       expired.Callback());
  REQUIRE(expired.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(expired.outcome == WaitOutcome::kDeadline);
  CHECK(absl::Now() - start >= absl::Milliseconds(150));

  // Stop answers whoever still waits.
  Outcome pending;
  tracker->WhenReached({"a"}, At(99, 1), absl::Now() + absl::Hours(1),
                       pending.Callback());
  tracker->Stop();
  CHECK(pending.done.HasBeenNotified());
  CHECK(pending.outcome == WaitOutcome::kShutdown);
}

TEST_CASE("the tracker hears checkpoints committed by other processes",
          "[queries][pg]") {
  testing::TestSchema schema;
  auto tracker = NewTracker(schema, absl::Seconds(60));
  tracker->Start();
  // Once the tracker listens, a "runner elsewhere" commits.
  REQUIRE(Listening(schema));
  Outcome heard;
  tracker->WhenReached({"remote"}, At(5, 3), absl::Now() + absl::Seconds(20),
                       heard.Callback());
  {
    pqxx::connection conn(schema.url());
    pqxx::work tx(conn);
    projections::NotifyProgress(tx, schema.name(), "remote", At(5, 3));
    tx.commit();
  }
  REQUIRE(heard.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  CHECK(heard.reached());
  CHECK(tracker->Current({"remote"}) == At(5, 3));

  // A notification inside a rolled back transaction is never heard.
  {
    pqxx::connection conn(schema.url());
    pqxx::work tx(conn);
    projections::NotifyProgress(tx, schema.name(), "remote", At(50, 3));
    tx.abort();
  }
  // The control: a lower checkpoint committed after it. Once that one is
  // heard, the rolled back one (sent before it) would have been too, and the
  // tracker would then stay at 50.
  {
    pqxx::connection conn(schema.url());
    pqxx::work tx(conn);
    projections::NotifyProgress(tx, schema.name(), "remote", At(6, 3));
    tx.commit();
  }
  CHECK(testing::Eventually(
      [&] { return tracker->Current({"remote"}) == At(6, 3); },
      absl::Seconds(20)));
}

TEST_CASE(
    "a runner's notifier tells trackers elsewhere, newest position first, "
    "and sends what is pending when it stops",
    "[queries][pg]") {
  testing::TestSchema schema;
  // Re-reads only once a minute: only notifications can pass this test.
  auto tracker = NewTracker(schema, absl::Seconds(60));
  tracker->Start();
  REQUIRE(Listening(schema));
  {
    projections::ProgressNotifier notifier(schema.url(), schema.name());
    Outcome heard;
    tracker->WhenReached({"a"}, At(5, 3), absl::Now() + absl::Seconds(20),
                         heard.Callback());
    notifier.Notify("a", At(5, 3));
    REQUIRE(heard.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
    CHECK(heard.reached());

    // Progress that comes in faster than it is sent is coalesced: the
    // newest position of each projection goes out.
    for (int64_t i = 6; i <= 500; ++i) notifier.Notify("a", At(i, 1));
    notifier.Notify("a", At(7, 1));  // older than what is pending
    notifier.Notify("b", At(9, 9));
    CHECK(testing::Eventually(
        [&] {
          return tracker->Current({"a"}) == At(500, 1) &&
                 tracker->Current({"b"}) == At(9, 9);
        },
        absl::Seconds(20)));
    // Sent on stopping, even right after the call.
    notifier.Notify("a", At(600, 1));
  }
  CHECK(
      testing::Eventually([&] { return tracker->Current({"a"}) == At(600, 1); },
                          absl::Seconds(20)));
}

TEST_CASE("the tracker re-reads checkpoints it was not told about",
          "[queries][pg]") {
  testing::TestSchema schema;
  auto tracker = NewTracker(schema, absl::Milliseconds(100));
  tracker->Start();
  // A checkpoint row written without a notification (as if the
  // notification was lost with the listening session).
  schema.Exec(absl::StrCat(
      "INSERT INTO ", schema.name(),
      ".projections (name, version, generation, position_xid, position_gp) "
      "VALUES ('silent', 1, 1, '77'::xid8, 4)"));
  Outcome seen;
  tracker->WhenReached({"silent"}, At(77, 4), absl::Now() + absl::Seconds(20),
                       seen.Callback());
  REQUIRE(seen.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  CHECK(seen.reached());
}

http::Request Get(const std::string& target, http::HeaderList headers = {}) {
  auto request = http::Request::Create("GET", target, std::move(headers), "");
  REQUIRE(request.ok());
  return *std::move(request);
}

TEST_CASE("positions and waits are parsed strictly", "[queries]") {
  QueryServiceOptions options;
  auto none = ParseConsistency(Get("/x"), options);
  REQUIRE(none.ok());
  CHECK(!none->min_position.has_value());
  CHECK(none->max_wait == absl::Seconds(5));

  auto both = ParseConsistency(
      Get("/x?min_position=1.1",
          {{"X-Min-Position", "7.9"}, {"X-Max-Wait-Ms", "250"}}),
      options);
  REQUIRE(both.ok());
  CHECK(*both->min_position == At(7, 9));  // the header wins
  CHECK(both->max_wait == absl::Milliseconds(250));

  auto query = ParseConsistency(Get("/x?min_position=3.4"), options);
  REQUIRE(query.ok());
  CHECK(*query->min_position == At(3, 4));

  for (const char* bad : {"x", "1", "1.2.3", "-1.2", "1.-2"}) {
    auto r = ParseConsistency(Get("/x", {{"X-Min-Position", bad}}), options);
    INFO(bad);
    REQUIRE(!r.ok());
    CHECK(http::ErrorCodeOf(r.status()) == "invalid_request");
  }
  for (const char* bad : {"30001", "-5", "x", "5s", "99999999999999"}) {
    auto r = ParseConsistency(Get("/x", {{"X-Max-Wait-Ms", bad}}), options);
    INFO(bad);
    REQUIRE(!r.ok());
    CHECK(http::ErrorCodeOf(r.status()) == "invalid_request");
  }
}

// Calls the route registered for `target` as the server would.
http::Response Call(const http::Router& router, const std::string& target,
                    http::HeaderList headers = {}) {
  http::RouteMatch match = router.Match("GET", target);
  REQUIRE(match.result == http::RouteMatch::Result::kFound);
  http::Request request = Get(target, std::move(headers));
  request.set_path_params(match.params);
  std::promise<http::Response> promise;
  match.route->async_handler(request,
                             http::Responder([&promise](http::Response r) {
                               promise.set_value(std::move(r));
                             }));
  auto future = promise.get_future();
  REQUIRE(future.wait_for(std::chrono::seconds(30)) ==
          std::future_status::ready);
  return future.get();
}

TEST_CASE(
    "query handlers run in read-only sessions, batches answer each "
    "request",
    "[queries][pg]") {
  testing::TestSchema schema;
  auto tracker = NewTracker(schema, absl::Seconds(60));
  tracker->Record("things", At(3, 3));
  schema.Exec(absl::StrCat("CREATE TABLE ", schema.name(),
                           ".things (id text PRIMARY KEY, n int)"));
  schema.Exec(absl::StrCat("INSERT INTO ", schema.name(),
                           ".things VALUES ('a', 1), ('b', 2)"));
  QueryServiceOptions options;
  options.conninfo = schema.url();
  options.threads = 2;
  auto service = QueryService::Create(tracker.get(), options);
  REQUIRE(service.ok());
  http::Router router;
  const std::string table = absl::StrCat(schema.name(), ".things");

  QueryRoute writer;
  writer.pattern = "/write";
  writer.projections = {"things"};
  writer.handler =
      [table](const http::Request&,
              pqxx::transaction_base& tx) -> absl::StatusOr<http::Response> {
    tx.exec(absl::StrCat("INSERT INTO ", table, " VALUES ('c', 3)"));
    return http::JsonResponse(200, "{}");
  };
  (*service)->Add(router, writer);

  QueryRoute batch;
  batch.pattern = "/things/{id}";
  batch.projections = {"things"};
  std::atomic<int> calls{0};
  batch.batch_handler = [table, &calls](
                            const std::vector<const http::Request*>& requests,
                            pqxx::transaction_base& tx) {
    ++calls;
    std::vector<absl::StatusOr<http::Response>> out;
    for (const http::Request* r : requests) {
      pqxx::result rows = tx.exec_params(
          absl::StrCat("SELECT n FROM ", table, " WHERE id = $1"),
          std::string(r->PathParam("id")));
      if (rows.empty()) {
        out.push_back(http::WithErrorCode(absl::NotFoundError("no"), "gone"));
      } else {
        out.push_back(http::JsonResponse(200, rows[0][0].c_str()));
      }
    }
    return out;
  };
  (*service)->Add(router, batch);

  QueryRoute broken;
  broken.pattern = "/broken";
  broken.batch_handler = [](const std::vector<const http::Request*>&,
                            pqxx::transaction_base&) {
    return std::vector<absl::StatusOr<http::Response>>{};  // one too few
  };
  (*service)->Add(router, broken);
  REQUIRE(router.status().ok());

  http::Response wrote = Call(router, "/write");
  CHECK(wrote.status >= 500);
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", table)) == 2);
  CHECK(wrote.Header("X-Projection-Position").value_or("") == "3.3");

  http::Response a = Call(router, "/things/a");
  CHECK(a.status == 200);
  CHECK(a.body == "1");
  CHECK(a.Header("X-Projection-Position").value_or("") == "3.3");
  http::Response gone = Call(router, "/things/zz");
  CHECK(gone.status == 404);
  CHECK(gone.body.find("gone") != std::string::npos);
  CHECK(calls >= 2);

  CHECK(Call(router, "/broken").status == 500);

  // Read-your-writes on a tracker without Start(): a Record() answers.
  std::promise<http::Response> promise;
  http::RouteMatch match = router.Match("GET", "/things/b");
  http::Request request = Get("/things/b", {{"X-Min-Position", "4.1"}});
  request.set_path_params(match.params);
  match.route->async_handler(request,
                             http::Responder([&promise](http::Response r) {
                               promise.set_value(std::move(r));
                             }));
  auto future = promise.get_future();
  CHECK(future.wait_for(std::chrono::milliseconds(100)) ==
        std::future_status::timeout);
  tracker->Record("things", At(4, 1));
  REQUIRE(future.wait_for(std::chrono::seconds(30)) ==
          std::future_status::ready);
  http::Response b = future.get();
  CHECK(b.status == 200);
  CHECK(b.body == "2");
  CHECK(b.Header("X-Projection-Position").value_or("") == "4.1");

  // A route needs exactly one handler.
  http::Router other;
  QueryRoute neither;
  neither.pattern = "/neither";
  (*service)->Add(other, neither);
  CHECK(!other.status().ok());
}

TEST_CASE(
    "shutdown answers parked read-your-writes queries at once with 503 and "
    "Retry-After",
    "[queries][pg]") {
  testing::TestSchema schema;
  auto tracker = NewTracker(schema, absl::Seconds(60));
  tracker->Start();
  tracker->Record("things", At(3, 3));
  QueryServiceOptions options;
  options.conninfo = schema.url();
  options.threads = 1;
  auto service = QueryService::Create(tracker.get(), options);
  REQUIRE(service.ok());
  http::Router router;
  QueryRoute route;
  route.pattern = "/things";
  route.projections = {"things"};
  route.handler =
      [](const http::Request&,
         pqxx::transaction_base&) -> absl::StatusOr<http::Response> {
    return http::JsonResponse(200, "{}");
  };
  (*service)->Add(router, route);
  REQUIRE(router.status().ok());
  http::RouteMatch match = router.Match("GET", "/things");
  REQUIRE(match.result == http::RouteMatch::Result::kFound);

  // Queries parked on a position the projection does not reach, for 30 s.
  constexpr int kParked = 5;
  std::vector<std::promise<http::Response>> promises(kParked);
  std::vector<std::future<http::Response>> answers;
  for (auto& promise : promises) {
    answers.push_back(promise.get_future());
    match.route->async_handler(
        Get("/things", {{"X-Min-Position", "9.9"}, {"X-Max-Wait-Ms", "30000"}}),
        http::Responder(
            [p = &promise](http::Response r) { p->set_value(std::move(r)); }));
  }
  CHECK(tracker->waiting() == kParked);

  // What a server's on_shutdown does: every one is answered now.
  tracker->StopWaiting();
  CHECK(tracker->waiting() == 0);
  for (auto& answer : answers) {
    REQUIRE(answer.wait_for(std::chrono::seconds(0)) ==
            std::future_status::ready);
    http::Response response = answer.get();
    CHECK(response.status == 503);
    CHECK(response.body.find("\"unavailable\"") != std::string::npos);
    CHECK(response.Header("Retry-After").value_or("") == "1");
    CHECK(response.Header("X-Projection-Position").value_or("") == "3.3");
  }

  // While the server drains: a later wait is answered at once, a position
  // already reached is still served.
  http::Response late =
      Call(router, "/things",
           {{"X-Min-Position", "9.9"}, {"X-Max-Wait-Ms", "30000"}});
  CHECK(late.status == 503);
  CHECK(late.Header("Retry-After").value_or("") == "1");
  CHECK(tracker->waiting() == 0);
  CHECK(Call(router, "/things", {{"X-Min-Position", "3.3"}}).status == 200);
}

}  // namespace
}  // namespace cqrs::queries

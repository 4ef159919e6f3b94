#include "commands/idempotency.h"

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "eventstore/in_memory_event_store.h"
#include "framework/http/status_mapping.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace cqrs::commands {
namespace {

using eventstore::ExpectedVersion;
using eventstore::NewEvent;

NewEvent Event(int n) {
  NewEvent e;
  e.event_type = "Happened";
  e.data = absl::StrCat("{\"n\":", n, "}");
  return e;
}

struct PgFixture {
  PgFixture() {
    store = schema.NewEventStore();
    REQUIRE(
        PostgresIdempotencyStore::Migrate(schema.pool(), schema.name()).ok());
    auto s = PostgresIdempotencyStore::Create(&schema.pool(), store.get(),
                                              schema.name());
    REQUIRE(s.ok());
    idempotency = *std::move(s);
  }

  testing::TestSchema schema;
  std::unique_ptr<eventstore::PostgresEventStore> store;
  std::unique_ptr<PostgresIdempotencyStore> idempotency;
};

// Appends one event to `stream` and answers with its position.
IdempotencyStore::Execute AppendOne(const std::string& stream,
                                    std::atomic<int>* runs) {
  return [stream, runs](eventstore::EventStore& store) {
    ++*runs;
    auto r = store.Append(stream, ExpectedVersion::Any(), {Event(*runs)});
    if (!r.ok()) return StoredResponse{500, r.status().ToString()};
    return StoredResponse{
        201, absl::StrCat("{\"position\":\"", r->position.ToToken(), "\"}")};
  };
}

TEST_CASE("a key runs once and replays its response byte for byte",
          "[commands][pg]") {
  PgFixture f;
  std::atomic<int> runs{0};
  auto first =
      f.idempotency->Run("key-1", "POST /x {}", AppendOne("s-1", &runs));
  REQUIRE(first.ok());
  CHECK(!first->replayed);
  CHECK(first->response.status == 201);
  auto again =
      f.idempotency->Run("key-1", "POST /x {}", AppendOne("s-1", &runs));
  REQUIRE(again.ok());
  CHECK(again->replayed);
  CHECK(again->response.status == 201);
  CHECK(again->response.body == first->response.body);
  CHECK(runs == 1);
  CHECK(f.store->GetStreamInfo("s-1")->version == 1);

  auto reused =
      f.idempotency->Run("key-1", "POST /x {\"a\":1}", AppendOne("s-1", &runs));
  CHECK(reused.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(http::ErrorCodeOf(reused.status()) == "idempotency_key_reused");
  CHECK(runs == 1);
}

TEST_CASE("20 concurrent requests with one key execute once",
          "[commands][pg]") {
  PgFixture f;
  std::atomic<int> runs{0};
  std::vector<std::string> bodies(20);
  std::atomic<int> errors{0};
  std::atomic<int> replays{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 20; ++i) {
    threads.emplace_back([&, i] {
      auto r = f.idempotency->Run("same", "req", AppendOne("s-2", &runs));
      if (!r.ok()) {
        ++errors;
        return;
      }
      if (r->replayed) ++replays;
      bodies[i] = r->response.body;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(errors == 0);
  CHECK(runs == 1);
  CHECK(replays == 19);
  CHECK(std::set<std::string>(bodies.begin(), bodies.end()).size() == 1);
  CHECK(f.store->GetStreamInfo("s-2")->version == 1);
}

TEST_CASE("server errors are not stored and roll back their events",
          "[commands][pg]") {
  PgFixture f;
  int runs = 0;
  auto failing = [&](eventstore::EventStore& store) {
    ++runs;
    REQUIRE(store.Append("s-3", ExpectedVersion::Any(), {Event(1)}).ok());
    return StoredResponse{503, "{\"error\":{}}"};
  };
  auto first = f.idempotency->Run("k", "req", failing);
  REQUIRE(first.ok());
  CHECK(first->response.status == 503);
  CHECK(f.store->GetStreamInfo("s-3").status().code() ==
        absl::StatusCode::kNotFound);
  auto second = f.idempotency->Run("k", "req", failing);
  REQUIRE(second.ok());
  CHECK(!second->replayed);
  CHECK(runs == 2);

  // A business failure (4xx) is stored and replayed.
  auto rejecting = [&](eventstore::EventStore&) {
    ++runs;
    return StoredResponse{422, "{\"error\":{\"code\":\"no\"}}"};
  };
  REQUIRE(f.idempotency->Run("k2", "req", rejecting).ok());
  auto replay = f.idempotency->Run("k2", "req", rejecting);
  REQUIRE(replay.ok());
  CHECK(replay->replayed);
  CHECK(replay->response.status == 422);
  CHECK(runs == 3);
}

TEST_CASE("expired keys no longer match and are purged", "[commands][pg]") {
  PgFixture f;
  IdempotencyOptions short_lived;
  short_lived.retention = absl::Milliseconds(200);
  auto idem = PostgresIdempotencyStore::Create(&f.schema.pool(), f.store.get(),
                                               f.schema.name(), short_lived);
  REQUIRE(idem.ok());
  std::atomic<int> runs{0};
  REQUIRE((*idem)->Run("old", "req", AppendOne("s-4", &runs)).ok());
  REQUIRE((*idem)->Run("old", "req", AppendOne("s-4", &runs))->replayed);
  // Purged once its retention has passed, whenever that is.
  int64_t purged = 0;
  REQUIRE(testing::Eventually([&] {
    auto now = (*idem)->PurgeExpired();
    REQUIRE(now.ok());
    purged += *now;
    return purged > 0;
  }));
  CHECK(purged == 1);
  auto after = (*idem)->Run("old", "req", AppendOne("s-4", &runs));
  REQUIRE(after.ok());
  CHECK(!after->replayed);
  CHECK(runs == 2);
}

TEST_CASE("bad idempotency keys are refused", "[commands]") {
  eventstore::InMemoryEventStore store;
  InMemoryIdempotencyStore idem(&store);
  std::atomic<int> runs{0};
  CHECK(idem.Run("", "r", AppendOne("s", &runs)).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(idem.Run(std::string(201, 'k'), "r", AppendOne("s", &runs))
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(idem.Run("tab\there", "r", AppendOne("s", &runs)).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(idem.Run(std::string(200, 'k'), "r", AppendOne("s", &runs)).ok());
  CHECK(runs == 1);
}

}  // namespace
}  // namespace cqrs::commands

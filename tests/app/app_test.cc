// The application object's declaration rules (app/app.h): names written
// once, subscriptions by C++ type, and every mistake reported before the
// app touches a database. The apps themselves run in
// tests/examples/examples_test.cc.
#include "app/app.h"

#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace {

namespace json = cqrs::json;

struct Added {
  int64_t n = 0;
  static auto Json() { return json::Shape<Added>().Field("n", &Added::n); }
};
struct Removed {
  int64_t n = 0;
  static auto Json() { return json::Shape<Removed>().Field("n", &Removed::n); }
};
struct Tally {
  int64_t total = 0;
};
using Tallies = cqrs::AggregateOf<Tally, Added, Removed>;

std::string Errors(cqrs::App& app) {
  return absl::StrJoin(app.Finalize(), "\n");
}

void NoOp(cqrs::ReadModel&, const cqrs::Recorded<Added>&) {}

TEST_CASE("a complete app has no definition errors", "[app]") {
  cqrs::App app("tally");
  app.Event<Added>("Added").Event<Removed>("Removed");
  Tallies& tallies = app.Aggregate<Tally, Added, Removed>("tally");
  tallies.On<Added>([](Tally& t, const Added& e) { t.total += e.n; });
  app.Command<Added>("POST", "/tallies/{id}/add", tallies,
                     [](const Tally&, const Added& a) -> Tallies::Decision {
                       return Tallies::Emit(a);
                     });
  app.Projection("totals")
      .Table("totals", "CREATE TABLE {table} (id text PRIMARY KEY)")
      .On<Added>(NoOp);
  app.Query("/tallies/{id}", {"totals"},
            [](cqrs::QueryContext& q) -> absl::StatusOr<cqrs::http::Response> {
              return q.One("SELECT id FROM {totals} WHERE id = $1",
                           {q.Param("id")}, "tally_not_found");
            });
  CHECK(Errors(app).empty());
  CHECK(app.options().schema == "tally");
  CHECK(app.IdOf("tally-42") == "42");
  CHECK(app.IdOf("tally-a-b") == "a-b");
  CHECK(app.IdOf("other-42") == "other-42");
  // The aggregate resolved its event names and folds them.
  CHECK(tallies.StreamId("7") == "tally-7");
}

TEST_CASE("an event type used but never declared is a definition error",
          "[app]") {
  cqrs::App app("tally");
  app.Event<Added>("Added");
  app.Aggregate<Tally, Added, Removed>("tally");  // Removed: not declared
  app.Projection("totals")
      .Table("totals", "CREATE TABLE {table} (id text PRIMARY KEY)")
      .On<Removed>([](cqrs::ReadModel&, const cqrs::Recorded<Removed>&) {});
  const std::string errors = Errors(app);
  INFO(errors);
  CHECK(absl::StrContains(errors, "aggregate 'tally' uses event type"));
  CHECK(absl::StrContains(errors, "Removed"));
  CHECK(absl::StrContains(errors, "projection 'totals' handles event type"));
}

TEST_CASE("names are declared once", "[app]") {
  cqrs::App app("tally");
  app.Event<Added>("Added").Event<Removed>("Added");
  app.Event<Added>("Other");
  const std::string errors = Errors(app);
  INFO(errors);
  CHECK(absl::StrContains(errors, "event name 'Added' declared twice"));
  CHECK(absl::StrContains(errors, "declared twice"));
}

TEST_CASE("raw projections, process managers and queries are checked too",
          "[app]") {
  cqrs::App app("tally");
  app.Event<Added>("Added");
  cqrs::projections::Projection raw;
  raw.name = "raw_totals";
  raw.event_types = {"Addded"};  // a typo
  raw.tables = {{"raw_totals", "CREATE TABLE {table} (id text)"}};
  raw.apply = [](cqrs::projections::ProjectionContext&,
                 cqrs::projections::EventBatch) { return absl::OkStatus(); };
  app.AddProjection(raw);
  cqrs::commands::ProcessManager pm;
  pm.name = "raw_totals";  // taken by the projection
  pm.event_types = {"Removed"};
  pm.handle = [](cqrs::commands::ProcessContext&,
                 const cqrs::eventstore::RecordedEvent&) {
    return absl::OkStatus();
  };
  app.AddProcessManager(pm);
  app.Projection("empty").Table("empty", "CREATE TABLE {table} (id text)");
  app.Query("/x/{id}", {"totalz"},
            [](cqrs::QueryContext& q) -> absl::StatusOr<cqrs::http::Response> {
              return q.Many("SELECT 1");
            });
  const std::string errors = Errors(app);
  INFO(errors);
  CHECK(absl::StrContains(errors, "subscribes to event 'Addded'"));
  CHECK(absl::StrContains(errors,
                          "process manager 'raw_totals' subscribes "
                          "to event 'Removed'"));
  CHECK(absl::StrContains(errors, "has the name of another projection"));
  CHECK(absl::StrContains(errors, "projection 'empty' handles no event"));
  CHECK(absl::StrContains(errors, "reads projection 'totalz'"));
}

TEST_CASE("Main reports definition errors and exits 1 before any database",
          "[app]") {
  cqrs::App app("tally");
  app.Aggregate<Tally, Added>("tally");
  char name[] = "tally";
  char command[] = "migrate";
  char* argv[] = {name, command, nullptr};
  CHECK(app.Main(2, argv) == 1);
}

TEST_CASE("a consumer must name a declared command", "[app]") {
  cqrs::App app("tally");
  app.Event<Added>("Added").Event<Removed>("Removed");
  Tallies& tallies = app.Aggregate<Tally, Added, Removed>("tally");
  tallies.On<Added>([](Tally& t, const Added& e) { t.total += e.n; });
  tallies.On<Removed>([](Tally& t, const Removed& e) { t.total -= e.n; });
  app.Command<Added>("POST", "/tallies/{id}/add", tallies,
                     [](const Tally&, const Added& a) -> Tallies::Decision {
                       return Tallies::Emit(a);
                     });
  app.Consume("adds", "post", "/tallies/{id}/add");  // fine
  app.Consume("removes", "POST", "/tallies/{id}/remove");
  app.Consume("adds", "POST", "/tallies/{id}/add").Prefetch(0).Concurrency(0);
  const std::string errors = Errors(app);
  INFO(errors);
  CHECK(absl::StrContains(errors,
                          "consumer of queue 'removes' (POST "
                          "/tallies/{id}/remove): no command is declared"));
  CHECK(absl::StrContains(errors, "the queue is consumed twice"));
  CHECK(absl::StrContains(errors, "Prefetch(0) is not in 1..65535"));
  CHECK(absl::StrContains(errors, "Concurrency(0) is not in 1..256"));
  CHECK(absl::StrContains(errors, "'adds'"));
}

TEST_CASE("decisions refuse with the contract's codes", "[app]") {
  absl::Status rejected = cqrs::Reject("counter_full", "full");
  CHECK(absl::IsFailedPrecondition(rejected));
  CHECK(cqrs::ErrorCodeOf(rejected) == "counter_full");
  absl::Status missing = cqrs::NotFound("counter_not_found", "none");
  CHECK(absl::IsNotFound(missing));
  CHECK(cqrs::ErrorCodeOf(missing) == "counter_not_found");
  CHECK(Tallies::Emit(Added{1}, Removed{2}).size() == 2);
}

}  // namespace

namespace {

TEST_CASE("published event types are checked at definition", "[app]") {
  cqrs::App app("tally");
  app.Event<Added>("Added")
      .Publish<Added>("tally.added")
      .Publish<Removed>("tally.removed")     // never declared
      .Publish<Added>("tally.added.again");  // Added twice
  const std::string errors = Errors(app);
  CHECK(absl::StrContains(errors, "published event type"));
  CHECK(absl::StrContains(errors, "Removed"));
  CHECK(absl::StrContains(errors, "published twice"));
  REQUIRE(app.publication().types().size() == 1);
  CHECK(app.publication().types()[0].CloudEventType() == "tally.added.v1");
  CHECK(app.publication().source() == "/tally");
  // The payload's JSON Schema comes from the event's shape.
  CHECK(absl::StrContains(app.publication().types()[0].data_schema, "\"n\""));

  cqrs::App bad("tally");
  bad.Event<Added>("Added").Publish<Added>("Tally Added");
  CHECK(absl::StrContains(Errors(bad), "lower-case words"));
}

// The public shape of an Added: what consumers get, whatever Added becomes.
struct Counted {
  int64_t count = 0;
  static auto Json() {
    return json::Shape<Counted>().Field("count", &Counted::count,
                                        json::Range(0, 1000));
  }
};

// The data of the CloudEvent `app` publishes for `event`.
std::string PublicData(const cqrs::App& app,
                       const cqrs::eventstore::RecordedEvent& event) {
  absl::StatusOr<std::optional<std::string>> ce =
      app.publication().Encode(event);
  REQUIRE(ce.ok());
  REQUIRE(ce->has_value());
  rapidjson::Document doc;
  doc.Parse((*ce)->c_str());
  REQUIRE(doc.IsObject());
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  doc["data"].Accept(writer);
  return buffer.GetString();
}

TEST_CASE(
    "an event published under a public shape of its own is mapped "
    "after its upcasters",
    "[app]") {
  cqrs::App app("tally");
  cqrs::EventOptions v2;
  v2.schema_version = 2;
  // Version 1 stored {"value": n}.
  v2.upcasters[1] = [](absl::string_view old) -> absl::StatusOr<std::string> {
    rapidjson::Document doc;
    doc.Parse(old.data(), old.size());
    if (!doc.IsObject() || !doc.HasMember("value")) {
      return absl::InvalidArgumentError("not a version 1 Added");
    }
    return json::Encode(Added{doc["value"].GetInt64()});
  };
  app.Event<Added>("Added", v2)
      .Publish<Added, Counted>("tally.counted", 3,
                               [](const Added& a) { return Counted{a.n}; });
  REQUIRE(Errors(app).empty());
  REQUIRE(app.publication().types().size() == 1);
  const cqrs::integration::PublishedType& type = app.publication().types()[0];
  CHECK(type.CloudEventType() == "tally.counted.v3");
  // The documented schema is the public shape's.
  CHECK(absl::StrContains(type.data_schema, "\"count\""));
  CHECK_FALSE(absl::StrContains(type.data_schema, "\"n\""));

  cqrs::eventstore::RecordedEvent event;
  event.event_id = "0190a6c0-0000-7000-8000-000000000001";
  event.stream_id = "tally-1";
  event.stream_version = 1;
  event.event_type = "Added";
  event.metadata = "{}";
  event.schema_version = 2;
  event.data = json::Encode(Added{5});
  CHECK(PublicData(app, event) == R"({"count":5})");
  event.schema_version = 1;
  event.data = R"({"value":4})";
  CHECK(PublicData(app, event) == R"({"count":4})");
  // Data that does not decode fails the read that meets it.
  event.schema_version = 2;
  event.data = R"({"n":"five"})";
  CHECK_FALSE(app.publication().Encode(event).ok());
}

}  // namespace

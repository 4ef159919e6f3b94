#include "commands/aggregate.h"

#include <atomic>
#include <thread>
#include <variant>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "eventstore/in_memory_event_store.h"
#include "framework/http/message.h"
#include "framework/http/status_mapping.h"
#include "tests/support/test_database.h"

namespace cqrs::commands {
namespace {

// A counter with an upper limit: small enough to read, rich enough to have
// a business rule.
struct Added {
  int64_t amount = 0;
};
struct Reset {};
using CounterEvent = std::variant<Added, Reset>;
struct Counter {
  int64_t value = 0;
  int64_t applied = 0;
};

// Parses {"amount":N}; the registry owns encoding, so tests see real JSON.
absl::StatusOr<Added> ParseAdded(absl::string_view json) {
  const size_t colon = json.find(':');
  const size_t end = json.find('}');
  int64_t amount = 0;
  if (colon == absl::string_view::npos || end == absl::string_view::npos ||
      !absl::SimpleAtoi(json.substr(colon + 1, end - colon - 1), &amount)) {
    return absl::InvalidArgumentError("bad Added");
  }
  return Added{amount};
}

const EventRegistry<CounterEvent>& Registry() {
  static const EventRegistry<CounterEvent>* registry = [] {
    auto* r = new EventRegistry<CounterEvent>();
    EventCodec<Added> added;
    added.name = "Added";
    added.schema_version = 2;
    added.to_json = [](const Added& a) {
      return absl::StrCat("{\"amount\":", a.amount, "}");
    };
    added.from_json = ParseAdded;
    // Version 1 stored {"n":N}.
    added.upcasters[1] =
        [](absl::string_view json) -> absl::StatusOr<std::string> {
      const size_t colon = json.find(':');
      return absl::StrCat("{\"amount\":", json.substr(colon + 1));
    };
    REQUIRE(r->Register(std::move(added)).ok());
    EventCodec<Reset> reset;
    reset.name = "Reset";
    reset.to_json = [](const Reset&) { return std::string("{}"); };
    reset.from_json = [](absl::string_view) -> absl::StatusOr<Reset> {
      return Reset{};
    };
    REQUIRE(r->Register(std::move(reset)).ok());
    return r;
  }();
  return *registry;
}

AggregateType<Counter, CounterEvent>::Options CounterOptions(
    int64_t snapshot_every = 0) {
  AggregateType<Counter, CounterEvent>::Options o;
  o.category = "counter";
  o.registry = &Registry();
  o.apply = [](Counter& c, const CounterEvent& e) {
    if (auto* a = std::get_if<Added>(&e)) c.value += a->amount;
    if (std::holds_alternative<Reset>(e)) c.value = 0;
    ++c.applied;
  };
  o.snapshots.every = snapshot_every;
  o.snapshots.to_json = [](const Counter& c) {
    return absl::StrCat("{\"amount\":", c.value, "}");
  };
  o.snapshots.from_json =
      [](absl::string_view json) -> absl::StatusOr<Counter> {
    absl::StatusOr<Added> a = ParseAdded(json);
    if (!a.ok()) return a.status();
    return Counter{a->amount, 0};
  };
  return o;
}

// Adds `amount` unless the counter would pass 100.
AggregateType<Counter, CounterEvent>::Decide Add(int64_t amount) {
  return [amount](const Counter& c,
                  int64_t) -> absl::StatusOr<std::vector<CounterEvent>> {
    if (c.value + amount > 100) {
      return http::WithErrorCode(absl::FailedPreconditionError("over 100"),
                                 "limit_reached");
    }
    return std::vector<CounterEvent>{Added{amount}};
  };
}

TEST_CASE("the registry encodes, decodes and upcasts", "[commands]") {
  const auto& r = Registry();
  auto enc = r.Encode(CounterEvent{Added{5}});
  REQUIRE(enc.ok());
  CHECK(enc->type == "Added");
  CHECK(enc->schema_version == 2);
  auto dec = r.Decode("Added", 2, enc->data);
  REQUIRE(dec.ok());
  CHECK(std::get<Added>(*dec).amount == 5);
  auto old = r.Decode("Added", 1, "{\"n\":7}");
  REQUIRE(old.ok());
  CHECK(std::get<Added>(*old).amount == 7);
  CHECK(r.Decode("Removed", 1, "{}").status().code() ==
        absl::StatusCode::kFailedPrecondition);
  auto newer = r.Decode("Added", 3, "{\"amount\":1}");
  CHECK(newer.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(newer.status().message(), "newer"));
  EventRegistry<CounterEvent> twice;
  EventCodec<Reset> reset;
  reset.name = "Reset";
  reset.to_json = [](const Reset&) { return std::string("{}"); };
  reset.from_json = [](absl::string_view) -> absl::StatusOr<Reset> {
    return Reset{};
  };
  REQUIRE(twice.Register(reset).ok());
  CHECK(twice.Register(reset).code() == absl::StatusCode::kAlreadyExists);
  CHECK(twice.Encode(CounterEvent{Added{1}}).status().code() ==
        absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("a command loads, decides, appends and stamps metadata",
          "[commands]") {
  eventstore::InMemoryEventStore store;
  AggregateType<Counter, CounterEvent> counters(CounterOptions());
  const CommandMetadata meta =
      CommandMetadata::ForCommand("corr-1", "0123456789ab");
  auto first = counters.Execute(store, "a", meta, {}, Add(40));
  REQUIRE(first.ok());
  CHECK(first->version == 1);
  CHECK(first->state.value == 40);
  CHECK(first->appended);
  auto second = counters.Execute(store, "a", meta, {}, Add(50));
  REQUIRE(second.ok());
  CHECK(second->version == 2);
  CHECK(second->state.value == 90);
  CHECK(eventstore::Position::Start() < second->position);

  auto events =
      store.ReadStream("counter-a", eventstore::Direction::kForward, 1, 10);
  REQUIRE(events.ok());
  REQUIRE(events->size() == 2);
  // Exact bytes: the members and their order are the documented format.
  CHECK((*events)[0].metadata ==
        absl::StrCat("{\"command_id\":\"", meta.command_id,
                     "\",\"correlation_id\":\"corr-1\",\"causation_id\":\"",
                     meta.command_id, "\",\"actor\":\"0123456789ab\"}"));
  CHECK((*events)[1].metadata == (*events)[0].metadata);

  // A business-rule failure appends nothing and keeps its code.
  auto over = counters.Execute(store, "a", meta, {}, Add(20));
  CHECK(over.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(http::ErrorCodeOf(over.status()) == "limit_reached");
  CHECK(store.GetStreamInfo("counter-a")->version == 2);
}

TEST_CASE("required versions and stale caches", "[commands]") {
  eventstore::InMemoryEventStore store;
  AggregateType<Counter, CounterEvent> counters(CounterOptions());
  AggregateType<Counter, CounterEvent> other_process(CounterOptions());
  const CommandMetadata meta =
      CommandMetadata::ForCommand("", http::kAnonymousActor);
  REQUIRE(counters.Execute(store, "b", meta, {}, Add(10)).ok());

  ExecuteOptions at_one;
  at_one.required_version = 1;
  ExecuteOptions at_five;
  at_five.required_version = 5;
  auto wrong = counters.Execute(store, "b", meta, at_five, Add(1));
  CHECK(wrong.status().code() == absl::StatusCode::kAborted);
  CHECK(http::ErrorCodeOf(wrong.status()) == "version_conflict");
  CHECK(absl::StrContains(wrong.status().message(), "current version 1"));

  // Another "process" moves the stream: this one's cache is stale now.
  REQUIRE(other_process.Execute(store, "b", meta, {}, Add(85)).ok());
  // A decision on stale state that would pass is caught by the append...
  auto add = counters.Execute(store, "b", meta, {}, Add(5));
  REQUIRE(add.ok());
  CHECK(add->state.value == 100);
  CHECK(add->version == 3);
  // other_process believes 95 and would allow +5: its append conflicts, it
  // reloads the truth (100) and the rule rejects.
  auto fresh = other_process.Execute(store, "b", meta, {}, Add(5));
  CHECK(http::ErrorCodeOf(fresh.status()) == "limit_reached");
  // If-Match against a stale cache reloads before answering.
  REQUIRE(counters
              .Execute(store, "b", meta, {},
                       [](const Counter&, int64_t)
                           -> absl::StatusOr<std::vector<CounterEvent>> {
                         return std::vector<CounterEvent>{Reset{}};
                       })
              .ok());
  ExecuteOptions at_four;
  at_four.required_version = 4;
  auto matched = other_process.Execute(store, "b", meta, at_four, Add(1));
  REQUIRE(matched.ok());
  CHECK(matched->version == 5);
  CHECK(matched->state.value == 1);
}

TEST_CASE("concurrent commands on one aggregate all land exactly once",
          "[commands]") {
  // Serialized in the process (the default), and racing through the
  // optimistic version check alone (as commands of separate processes do).
  const bool serialized = GENERATE(true, false);
  CAPTURE(serialized);
  eventstore::InMemoryEventStore store;
  AggregateType<Counter, CounterEvent>::Options options = CounterOptions();
  options.serialize_in_process = serialized;
  AggregateType<Counter, CounterEvent> counters(std::move(options));
  std::atomic<int> failures{0};
  std::atomic<int> decisions{0};
  const AggregateType<Counter, CounterEvent>::Decide add = Add(1);
  const AggregateType<Counter, CounterEvent>::Decide counted =
      [&](const Counter& c, int64_t version) {
        ++decisions;
        return add(c, version);
      };
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        if (!counters
                 .Execute(
                     store, "c",
                     CommandMetadata::ForCommand("", http::kAnonymousActor), {},
                     counted)
                 .ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  // In one process, serialized commands never decide on a stale version.
  if (serialized) CHECK(decisions == 80);
  counters.ClearCache();
  auto loaded = counters.Load(store, "c");
  REQUIRE(loaded.ok());
  CHECK(loaded->first.value == 80);
  CHECK(loaded->second == 80);
}

TEST_CASE("snapshots are written every N events and used by loads",
          "[commands]") {
  eventstore::InMemoryEventStore store;
  AggregateType<Counter, CounterEvent> counters(CounterOptions(3));
  for (int i = 0; i < 7; ++i) {
    REQUIRE(counters
                .Execute(store, "d",
                         CommandMetadata::ForCommand("", http::kAnonymousActor),
                         {}, Add(1))
                .ok());
  }
  auto snap = store.LoadSnapshot("counter-d");
  REQUIRE(snap.ok());
  CHECK(snap->stream_version == 6);
  CHECK(snap->state == "{\"amount\":6}");
  auto loaded = counters.Load(store, "d");
  REQUIRE(loaded.ok());
  CHECK(loaded->first.value == 7);
  CHECK(loaded->second == 7);
  // Only the event after the snapshot was folded.
  CHECK(loaded->first.applied == 1);
}

TEST_CASE("an undecodable stored event fails the load clearly", "[commands]") {
  eventstore::InMemoryEventStore store;
  eventstore::NewEvent unknown;
  unknown.event_type = "Multiplied";
  REQUIRE(
      store.Append("counter-e", eventstore::ExpectedVersion::Any(), {unknown})
          .ok());
  AggregateType<Counter, CounterEvent> counters(CounterOptions());
  auto loaded = counters.Load(store, "e");
  CHECK(loaded.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(loaded.status().message(), "Multiplied"));
}

TEST_CASE("commands on PostgreSQL: 16 threads on one aggregate",
          "[commands][pg]") {
  testing::TestSchema schema;
  auto store = schema.NewEventStore();
  AggregateType<Counter, CounterEvent> counters(CounterOptions());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        if (!counters
                 .Execute(
                     *store, "p",
                     CommandMetadata::ForCommand("", http::kAnonymousActor), {},
                     Add(1))
                 .ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  auto info = store->GetStreamInfo("counter-p");
  REQUIRE(info.ok());
  CHECK(info->version == 80);
  counters.ClearCache();
  auto loaded = counters.Load(*store, "p");
  REQUIRE(loaded.ok());
  CHECK(loaded->first.value == 80);
}

}  // namespace
}  // namespace cqrs::commands

namespace cqrs::commands {
namespace {

void DeletedAggregateStaysDeleted(eventstore::EventStore& store) {
  AggregateType<Counter, CounterEvent> counters(CounterOptions(2));
  for (int i = 0; i < 3; ++i) {
    REQUIRE(counters
                .Execute(store, "gone",
                         CommandMetadata::ForCommand("", http::kAnonymousActor),
                         {}, Add(1))
                .ok());
  }
  REQUIRE(store.LoadSnapshot("counter-gone").ok());
  REQUIRE(
      store
          .DeleteStream("counter-gone", eventstore::ExpectedVersion::Exactly(3))
          .ok());
  counters.ClearCache();
  // Before the fix: the snapshot brought back {value 2, version 2}, and
  // without it the aggregate loaded as new (version 0).
  auto loaded = counters.Load(store, "gone");
  CHECK(loaded.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(absl::StrContains(loaded.status().message(), "deleted"));
  auto command = counters.Execute(
      store, "gone", CommandMetadata::ForCommand("", http::kAnonymousActor), {},
      Add(1));
  CHECK(command.status().code() == absl::StatusCode::kFailedPrecondition);
  // A stream that never existed still loads as new.
  auto fresh = counters.Load(store, "never");
  REQUIRE(fresh.ok());
  CHECK(fresh->second == 0);
}

TEST_CASE("a deleted aggregate neither loads as new nor from its snapshot",
          "[commands]") {
  eventstore::InMemoryEventStore store;
  DeletedAggregateStaysDeleted(store);
}

TEST_CASE("a deleted aggregate stays deleted on PostgreSQL", "[commands][pg]") {
  testing::TestSchema schema;
  auto store = schema.NewEventStore();
  DeletedAggregateStaysDeleted(*store);
}

}  // namespace
}  // namespace cqrs::commands

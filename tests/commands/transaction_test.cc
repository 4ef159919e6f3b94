// Commands inside a caller's transaction (an Idempotency-Key's, a process
// manager's), against the test PostgreSQL with real faults: a snapshot write
// that times out on a lock, an append that times out on a stream lock held
// by another session, a transaction rolled back after its append, a
// concurrent writer between a load and an append. Each case lost or faked
// an acknowledged write before the fixes of issue 11.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "commands/aggregate.h"
#include "commands/idempotency.h"
#include "eventstore/postgres_event_store.h"
#include "framework/http/message.h"
#include "framework/http/status_mapping.h"
#include "tests/support/test_database.h"

namespace cqrs::commands {
namespace {

using eventstore::ExpectedVersion;

// A gauge that may never pass 100: Raise(n) checks the limit, Zero() resets.
struct Raised {
  int64_t amount = 0;
};
struct Zeroed {};
using GaugeEvent = std::variant<Raised, Zeroed>;
struct Gauge {
  int64_t value = 0;
};
using GaugeType = AggregateType<Gauge, GaugeEvent>;

const EventRegistry<GaugeEvent>& Registry() {
  static const EventRegistry<GaugeEvent>* registry = [] {
    auto* r = new EventRegistry<GaugeEvent>();
    EventCodec<Raised> raised;
    raised.name = "Raised";
    raised.to_json = [](const Raised& e) {
      return absl::StrCat("{\"amount\":", e.amount, "}");
    };
    raised.from_json = [](absl::string_view json) -> absl::StatusOr<Raised> {
      int64_t amount = 0;
      const size_t colon = json.find(':');
      if (colon == absl::string_view::npos ||
          !absl::SimpleAtoi(json.substr(colon + 1, json.size() - colon - 2),
                            &amount)) {
        return absl::InvalidArgumentError("bad Raised");
      }
      return Raised{amount};
    };
    REQUIRE(r->Register(std::move(raised)).ok());
    EventCodec<Zeroed> zeroed;
    zeroed.name = "Zeroed";
    zeroed.to_json = [](const Zeroed&) { return std::string("{}"); };
    zeroed.from_json = [](absl::string_view) -> absl::StatusOr<Zeroed> {
      return Zeroed{};
    };
    REQUIRE(r->Register(std::move(zeroed)).ok());
    return r;
  }();
  return *registry;
}

GaugeType::Options GaugeOptions(int64_t snapshot_every = 0) {
  GaugeType::Options o;
  o.category = "gauge";
  o.registry = &Registry();
  o.apply = [](Gauge& g, const GaugeEvent& e) {
    if (const auto* r = std::get_if<Raised>(&e)) g.value += r->amount;
    if (std::holds_alternative<Zeroed>(e)) g.value = 0;
  };
  o.snapshots.every = snapshot_every;
  o.snapshots.to_json = [](const Gauge& g) {
    return absl::StrCat("{\"value\":", g.value, "}");
  };
  o.snapshots.from_json = [](absl::string_view json) -> absl::StatusOr<Gauge> {
    int64_t value = 0;
    const size_t colon = json.find(':');
    if (colon == absl::string_view::npos ||
        !absl::SimpleAtoi(json.substr(colon + 1, json.size() - colon - 2),
                          &value)) {
      return absl::InvalidArgumentError("bad snapshot");
    }
    return Gauge{value};
  };
  return o;
}

GaugeType::Decide Raise(int64_t amount) {
  return [amount](const Gauge& g,
                  int64_t) -> absl::StatusOr<std::vector<GaugeEvent>> {
    if (g.value + amount > 100) {
      return http::WithErrorCode(absl::FailedPreconditionError("over 100"),
                                 "limit_reached");
    }
    return std::vector<GaugeEvent>{Raised{amount}};
  };
}

// Raises by one, without a limit.
GaugeType::Decide Bump() {
  return [](const Gauge&, int64_t) -> absl::StatusOr<std::vector<GaugeEvent>> {
    return std::vector<GaugeEvent>{Raised{1}};
  };
}

GaugeType::Decide Zero() {
  return [](const Gauge&, int64_t) -> absl::StatusOr<std::vector<GaugeEvent>> {
    return std::vector<GaugeEvent>{Zeroed{}};
  };
}

const CommandMetadata kMeta =
    CommandMetadata::ForCommand("", http::kAnonymousActor);

// The store and idempotency records on a pool whose sessions give up on a
// lock after 300 ms, so that a lock held by another session is a fault the
// test controls.
struct Fixture {
  explicit Fixture(IdempotencyOptions options = {}) {
    schema.NewEventStore();  // migrates
    REQUIRE(
        PostgresIdempotencyStore::Migrate(schema.pool(), schema.name()).ok());
    PgPoolOptions pool_options;
    pool_options.conninfo = schema.url();
    pool_options.on_connect = [](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      tx.exec("SET lock_timeout = '300ms'");
    };
    auto p = PgPool::Create(pool_options);
    REQUIRE(p.ok());
    pool = *std::move(p);
    eventstore::PostgresEventStoreOptions store_options;
    store_options.schema = schema.name();
    auto s = eventstore::PostgresEventStore::Create(pool.get(), store_options);
    REQUIRE(s.ok());
    store = *std::move(s);
    auto i = PostgresIdempotencyStore::Create(pool.get(), store.get(),
                                              schema.name(), options);
    REQUIRE(i.ok());
    idempotency = *std::move(i);
  }

  // An Idempotency-Key of this test alone: the store's lock on a key is
  // database-wide, and other tests run at the same time.
  std::string Key(const std::string& key) const {
    return absl::StrCat(schema.name(), "-", key);
  }

  int64_t Version(const std::string& stream) {
    auto info = store->GetStreamInfo(stream);
    return info.ok() ? info->version : 0;
  }

  // The gauge's value folded from every stored event.
  int64_t Fold(const std::string& id) {
    GaugeType fresh(GaugeOptions());
    auto loaded = fresh.Load(*store, id);
    REQUIRE(loaded.ok());
    return loaded->first.value;
  }

  testing::TestSchema schema;
  std::unique_ptr<PgPool> pool;
  std::unique_ptr<eventstore::PostgresEventStore> store;
  std::unique_ptr<PostgresIdempotencyStore> idempotency;
};

// A session that holds a lock until destroyed.
class LockHolder {
 public:
  LockHolder(const std::string& url, const std::string& sql)
      : conn_(url), tx_(conn_) {
    tx_.exec(sql);
  }

 private:
  pqxx::connection conn_;
  pqxx::work tx_;
};

// The event store's lock of `stream` in `schema` (docs/event-store.md).
std::string StreamLock(const std::string& schema, const std::string& stream) {
  return absl::StrCat("SELECT pg_advisory_xact_lock(hashtextextended('", stream,
                      "', hashtext('", schema, "')))");
}

TEST_CASE("a keyed command whose snapshot write times out still commits",
          "[commands][pg]") {
  Fixture f;
  GaugeType gauges(GaugeOptions(2));
  REQUIRE(gauges.Execute(*f.store, "s", kMeta, {}, Raise(1)).ok());
  // Reads of snapshots go on; their writes wait and time out.
  LockHolder lock(f.schema.url(), absl::StrCat("LOCK TABLE ", f.schema.name(),
                                               ".snapshots IN EXCLUSIVE MODE"));
  auto run =
      f.idempotency->Run(f.Key("k"), "req", [&](eventstore::EventStore& s) {
        auto out = gauges.Execute(s, "s", kMeta, {}, Raise(1));
        if (!out.ok()) return StoredResponse{500, out.status().ToString()};
        return StoredResponse{200, absl::StrCat(out->version)};
      });
  INFO(run.status().ToString());
  REQUIRE(run.ok());
  // Before the fix: 200 "2" for a transaction that had rolled back.
  CHECK(run->response.status == 200);
  CHECK(run->response.body == "2");
  CHECK(f.Version("gauge-s") == 2);
  auto replay =
      f.idempotency->Run(f.Key("k"), "req", [](eventstore::EventStore&) {
        return StoredResponse{500, "must not run"};
      });
  INFO(replay.status().ToString());
  REQUIRE(replay.ok());
  CHECK(replay->replayed);
  CHECK(replay->response.body == "2");
}

TEST_CASE("a keyed command whose transaction was aborted never answers 2xx",
          "[commands][pg]") {
  IdempotencyOptions options;
  options.max_transaction_attempts = 2;
  Fixture f(options);
  GaugeType gauges(GaugeOptions());
  std::atomic<int> runs{0};
  // Appends to gauge-a, then to gauge-b, ignoring the second failure: a
  // command that answers 200 whatever happens.
  auto careless = [&](eventstore::EventStore& s) {
    ++runs;
    auto a = gauges.Execute(s, "a", kMeta, {}, Raise(1));
    REQUIRE(a.ok());
    gauges.Execute(s, "b", kMeta, {}, Raise(1)).IgnoreError();
    return StoredResponse{200, "{}"};
  };
  {
    LockHolder lock(f.schema.url(), StreamLock(f.schema.name(), "gauge-b"));
    auto run = f.idempotency->Run(f.Key("k"), "req", careless);
    CHECK(!run.ok());
    CHECK(run.status().code() == absl::StatusCode::kUnavailable);
    CHECK(runs == 2);  // a transient failure runs again, then gives up
  }
  CHECK(f.Version("gauge-a") == 0);
  CHECK(f.Version("gauge-b") == 0);
  // No record was stored: the same key runs the command now.
  auto again = f.idempotency->Run(f.Key("k"), "req", careless);
  REQUIRE(again.ok());
  CHECK(!again->replayed);
  CHECK(again->response.status == 200);
  CHECK(f.Version("gauge-a") == 1);
  CHECK(f.Version("gauge-b") == 1);
}

TEST_CASE("a rolled-back command leaves no phantom state in the cache",
          "[commands][pg]") {
  Fixture f;
  GaugeType process_a(GaugeOptions());
  GaugeType process_b(GaugeOptions());
  REQUIRE(process_a.Execute(*f.store, "g", kMeta, {}, Raise(90)).ok());
  // Process A zeroes the gauge in a keyed transaction that then fails.
  auto failed =
      f.idempotency->Run(f.Key("k"), "req", [&](eventstore::EventStore& s) {
        REQUIRE(process_a.Execute(s, "g", kMeta, {}, Zero()).ok());
        return StoredResponse{503, "{}"};
      });
  REQUIRE(failed.ok());
  CHECK(failed->response.status == 503);
  REQUIRE(f.Version("gauge-g") == 1);
  // Process B takes version 2 for real.
  REQUIRE(process_b.Execute(*f.store, "g", kMeta, {}, Raise(5)).ok());
  // Before the fix, A decided on the phantom zero and appended version 3.
  auto over = process_a.Execute(*f.store, "g", kMeta, {}, Raise(50));
  CHECK(http::ErrorCodeOf(over.status()) == "limit_reached");
  CHECK(f.Fold("g") == 95);
  CHECK(f.Version("gauge-g") == 2);
}

TEST_CASE("keyed and plain commands racing on one aggregate all succeed",
          "[commands][pg]") {
  Fixture f;
  // Two processes: each serializes its own commands on an aggregate.
  GaugeType process_a(GaugeOptions(7));
  GaugeType process_b(GaugeOptions(7));
  constexpr int kThreads = 8;
  constexpr int kPerThread = 50;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        if (t % 2 == 0) {
          auto run = f.idempotency->Run(
              absl::StrCat("k-", t, "-", i), "req",
              [&](eventstore::EventStore& s) {
                auto out = process_a.Execute(s, "race", kMeta, {}, Bump());
                if (!out.ok()) {
                  return StoredResponse{500, out.status().ToString()};
                }
                return StoredResponse{200, "{}"};
              });
          if (!run.ok() || run->response.status != 200) {
            UNSCOPED_INFO(
                (run.ok() ? run->response.body : run.status().ToString()));
            ++failures;
          }
        } else if (!process_b.Execute(*f.store, "race", kMeta, {}, Bump())
                        .ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  CHECK(f.Version("gauge-race") == kThreads * kPerThread);
  CHECK(f.Fold("race") == kThreads * kPerThread);
}

TEST_CASE("a conflict inside a transaction is re-decided without a backoff",
          "[commands][pg]") {
  Fixture f;
  GaugeType gauges(GaugeOptions());
  GaugeType other(GaugeOptions());
  REQUIRE(gauges.Execute(*f.store, "b", kMeta, {}, Raise(1)).ok());
  gauges.ClearCache();
  ExecuteOptions slow;
  // Sleeping this long while holding the stream's lock would hang the test.
  slow.base_backoff = absl::Hours(1);
  std::atomic<int> decisions{0};
  std::atomic<bool> other_ok{false};  // checked on this thread
  absl::Notification done;
  absl::StatusOr<CommandOutcome<Gauge>> out;
  std::thread command([&] {
    pqxx::connection conn(f.schema.url());
    pqxx::work tx(conn);
    auto in_tx = f.store->InTransaction(tx);
    out = gauges.Execute(
        *in_tx, "b", kMeta, slow,
        [&](const Gauge& g,
            int64_t v) -> absl::StatusOr<std::vector<GaugeEvent>> {
          if (decisions++ == 0) {
            // Another writer takes the next version after the load.
            other_ok = other.Execute(*f.store, "b", kMeta, {}, Raise(1)).ok();
          }
          return Raise(1)(g, v);
        });
    if (out.ok()) tx.commit();
    done.Notify();
  });
  const bool finished = done.WaitForNotificationWithTimeout(absl::Seconds(60));
  CHECK(finished);
  if (!finished) {
    command.detach();  // the old code sleeps up to an hour
    return;
  }
  command.join();
  CHECK(other_ok);
  REQUIRE(out.ok());
  CHECK(out->version == 3);
  CHECK(decisions == 2);
  CHECK(f.Fold("b") == 3);
}

TEST_CASE("idempotency records can be kept forever", "[commands][pg]") {
  IdempotencyOptions forever;
  forever.retention = absl::InfiniteDuration();
  Fixture f(forever);
  int runs = 0;
  auto count = [&](eventstore::EventStore&) {
    ++runs;
    return StoredResponse{200, "{}"};
  };
  auto first = f.idempotency->Run(f.Key("k"), "req", count);
  REQUIRE(first.ok());  // before the fix: "interval out of range"
  CHECK(!first->replayed);
  auto second = f.idempotency->Run(f.Key("k"), "req", count);
  REQUIRE(second.ok());
  CHECK(second->replayed);
  CHECK(runs == 1);
  auto purged = f.idempotency->PurgeExpired();
  REQUIRE(purged.ok());
  CHECK(*purged == 0);

  for (absl::Duration bad : {absl::ZeroDuration(), absl::Seconds(-1)}) {
    IdempotencyOptions options;
    options.retention = bad;
    CHECK(PostgresIdempotencyStore::Create(f.pool.get(), f.store.get(),
                                           f.schema.name(), options)
              .status()
              .code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("a version conflict is not stored as a key's answer",
          "[commands][pg]") {
  Fixture f;
  GaugeType gauges(GaugeOptions());
  REQUIRE(gauges.Execute(*f.store, "v", kMeta, {}, Raise(1)).ok());
  int runs = 0;
  // What HttpCommandRunner stores for an If-Match of version 2.
  auto at_two = [&](eventstore::EventStore& s) {
    ++runs;
    ExecuteOptions options;
    options.required_version = 2;
    auto out = gauges.Execute(s, "v", kMeta, options, Raise(1));
    if (!out.ok()) {
      return StoredResponse{409, "{}", !IsTransientError(out.status())};
    }
    return StoredResponse{200, "{}"};
  };
  auto early = f.idempotency->Run(f.Key("k"), "req", at_two);
  REQUIRE(early.ok());
  CHECK(early->response.status == 409);
  REQUIRE(gauges.Execute(*f.store, "v", kMeta, {}, Raise(1)).ok());
  auto later = f.idempotency->Run(f.Key("k"), "req", at_two);
  REQUIRE(later.ok());
  CHECK(!later->replayed);
  CHECK(later->response.status == 200);
  CHECK(runs == 2);
}

}  // namespace
}  // namespace cqrs::commands

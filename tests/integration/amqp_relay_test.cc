// The AMQP relay (integration/amqp_relay.h) against the throwaway RabbitMQ
// node and PostgreSQL of scripts/test: 100,000 events through a broker
// restart and a SIGKILL of the broker, a standby taking over (in-process
// when the owner's session ends, and the built bank's `project` when the
// relaying process is SIGKILLed), unroutable messages, bad configuration,
// and the CloudEvents AMQP binding.
#include "integration/amqp_relay.h"

#include <signal.h>
#include <pqxx/pqxx>

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "eventstore/postgres_event_store.h"
#include "framework/metrics.h"
#include "integration/amqp_client.h"
#include "rapidjson/document.h"
#include "tests/support/child_process.h"
#include "tests/support/queue_consumer.h"
#include "tests/support/test_broker.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace cqrs::integration {
namespace {

using eventstore::ExpectedVersion;
using eventstore::NewEvent;

std::string AmqpUrl() { return testing::TestAmqpUrl(); }

void Broker(const std::string& what) { testing::ControlTestBroker(what); }

std::string Unique(const std::string& prefix) {
  return testing::UniqueAmqpName(prefix);
}

Publication Bank() {
  Publication p("/bank");
  REQUIRE(p.Add({"Opened", "bank.account.opened", 1, nullptr, ""}).ok());
  REQUIRE(p.Add({"Deposited", "bank.account.deposited", 1, nullptr, ""}).ok());
  return p;
}

NewEvent Event(const std::string& type, const std::string& data = "{}") {
  NewEvent e;
  e.event_type = type;
  e.data = data;
  e.metadata = "{}";
  return e;
}

struct Got {
  std::string id;
  std::string stream;
  int64_t version = 0;
  bool redelivered = false;
};

// Consumes `queue` on a thread of its own (QueueConsumer: reconnecting
// whenever the broker goes away, acknowledging each message after recording
// it), and reads what it got as the relay's CloudEvents.
class Consumer {
 public:
  explicit Consumer(std::string queue) : queue_(std::move(queue)) {}

  std::vector<Got> got() const {
    std::vector<Got> out;
    for (const amqp::Delivery& d : queue_.Deliveries()) {
      Got g;
      g.id = d.message_id;
      g.redelivered = d.redelivered;
      std::string category, subject;
      for (const auto& [name, value] : d.headers) {
        if (name == "cloudEvents:category") category = value;
        if (name == "cloudEvents:subject") subject = value;
        if (name == "cloudEvents:streamversion") {
          (void)absl::SimpleAtoi(value, &g.version);
        }
      }
      g.stream = absl::StrCat(category, "-", subject);
      out.push_back(std::move(g));
    }
    return out;
  }
  size_t distinct() const { return queue_.DistinctIds(); }

 private:
  cqrs::testing::QueueConsumer queue_;
};

struct Fixture {
  Fixture()
      : store(schema.NewEventStore()),
        publication(Bank()),
        exchange(Unique("relay-x")),
        queue(Unique("relay-q")) {
    REQUIRE(AmqpRelay::Migrate(schema.pool(), schema.name()).ok());
    auto conn = amqp::Connection::Open(AmqpUrl());
    REQUIRE(conn.ok());
    REQUIRE((*conn)->DeclareExchange(exchange, "topic").ok());
    REQUIRE((*conn)->DeclareQueue(queue, {}).ok());
    REQUIRE((*conn)->BindQueue(queue, exchange, "account.#").ok());
  }

  AmqpRelayOptions Options() {
    AmqpRelayOptions o;
    o.schema = schema.name();
    o.url = AmqpUrl();
    o.exchange = exchange;
    o.poll_interval = absl::Milliseconds(20);
    o.takeover_interval = absl::Milliseconds(50);
    o.max_backoff = absl::Milliseconds(500);
    return o;
  }

  std::unique_ptr<AmqpRelay> Relay(AmqpRelayOptions o) {
    auto r = AmqpRelay::Create(&schema.pool(), store.get(), &publication,
                               std::move(o));
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    return *std::move(r);
  }

  // `accounts` streams of an Opened and `deposits` Deposited each, in
  // appends of up to 100 events; the ids of the published events.
  void Append(int first, int accounts, int deposits) {
    for (int i = first; i < first + accounts; ++i) {
      std::vector<NewEvent> events = {Event("Opened")};
      for (int d = 0; d < deposits; ++d) {
        events.push_back(Event("Deposited", R"({"amount":1})"));
      }
      REQUIRE(store
                  ->Append(absl::StrCat("account-", i), ExpectedVersion::Any(),
                           events)
                  .ok());
    }
  }

  testing::TestSchema schema;
  std::unique_ptr<eventstore::PostgresEventStore> store;
  Publication publication;
  std::string exchange;
  std::string queue;
};

// Per stream, the first arrival of each version comes after the first
// arrival of the one before.
bool InStreamOrder(const std::vector<Got>& got) {
  std::map<std::string, int64_t> last;
  std::set<std::string> seen;
  for (const Got& g : got) {
    if (!seen.insert(g.id).second) continue;
    int64_t& at = last[g.stream];
    if (g.version != at + 1) return false;
    at = g.version;
  }
  return true;
}

TEST_CASE("a published event in the CloudEvents AMQP binding",
          "[integration]") {
  const std::string ce =
      R"({"specversion":"1.0","id":"e1","source":"/bank","type":)"
      R"("bank.account.deposited.v1","subject":"42","time":)"
      R"("2026-01-01T00:00:00Z","datacontenttype":"application/json",)"
      R"("data":{"amount":5},"position":"7.9","streamversion":3,)"
      R"("category":"account"})";
  auto binary = CloudEventToAmqp(ce, CloudEventsAmqpMode::kBinary);
  REQUIRE(binary.ok());
  CHECK(binary->routing_key == "account.bank.account.deposited.v1");
  CHECK(binary->message_id == "e1");
  CHECK(binary->content_type == "application/json");
  CHECK(binary->body == R"({"amount":5})");
  std::map<std::string, std::string> headers(binary->headers.begin(),
                                             binary->headers.end());
  CHECK(headers["cloudEvents:id"] == "e1");
  CHECK(headers["cloudEvents:specversion"] == "1.0");
  CHECK(headers["cloudEvents:type"] == "bank.account.deposited.v1");
  CHECK(headers["cloudEvents:streamversion"] == "3");
  CHECK(headers.count("cloudEvents:data") == 0);
  CHECK(headers.count("cloudEvents:datacontenttype") == 0);
  auto structured = CloudEventToAmqp(ce, CloudEventsAmqpMode::kStructured);
  REQUIRE(structured.ok());
  CHECK(structured->body == ce);
  CHECK(structured->content_type ==
        "application/cloudevents+json; charset=utf-8");
  CHECK(structured->headers.empty());
  CHECK_FALSE(CloudEventToAmqp("[]", CloudEventsAmqpMode::kBinary).ok());
}

TEST_CASE(
    "100,000 events reach a consumer through a broker restart and a "
    "SIGKILL of the broker, once each at least, in stream order",
    "[integration][pg][amqp][.slow]") {
  Fixture f;
  MetricsRegistry metrics;
  AmqpRelayOptions options = f.Options();
  options.metrics = &metrics;
  auto relay = f.Relay(options);
  // 2,000 streams of 50 events: 100,000, published.
  f.Append(0, 1000, 49);
  relay->Start();
  Consumer consumer(f.queue);
  REQUIRE(testing::Eventually([&] { return consumer.distinct() >= 20000; },
                              absl::Seconds(120)));
  Broker("restart");
  f.Append(1000, 500, 49);
  REQUIRE(testing::Eventually([&] { return consumer.distinct() >= 60000; },
                              absl::Seconds(120)));
  Broker("kill");
  Broker("start");
  f.Append(1500, 500, 49);
  REQUIRE(testing::Eventually([&] { return consumer.distinct() == 100000; },
                              absl::Seconds(180)));
  const std::vector<Got> got = consumer.got();
  CHECK(InStreamOrder(got));
  // Every repeat is of a message already seen (same id): the distinct ids
  // are exactly the events.
  std::set<std::string> ids;
  for (const Got& g : got) ids.insert(g.id);
  CHECK(ids.size() == 100000);
  CHECK(got.size() >= 100000);
  auto status = AmqpRelay::ReadStatus(f.schema.pool(), *f.store,
                                      f.schema.name(), "default");
  REQUIRE(status.ok());
  CHECK(status->published >= 100000);
  CHECK(status->lag_events == 0);
  CHECK_THAT(metrics.Render(),
             Catch::Contains("cqrs_relay_connected{relay=\"default\"} 1"));
  WARN("relayed 100000 events; the consumer got " << got.size() << " messages");
}

TEST_CASE("a standby relay takes over when the owner's session ends",
          "[integration][pg][amqp]") {
  Fixture f;
  auto first = f.Relay(f.Options());
  auto second = f.Relay(f.Options());
  first->Start();
  REQUIRE(testing::Eventually([&] { return first->owner(); }));
  second->Start();
  Consumer consumer(f.queue);
  f.Append(0, 100, 9);  // 1,000
  REQUIRE(testing::Eventually([&] { return consumer.distinct() == 1000; }));
  CHECK_FALSE(second->owner());
  f.schema.Exec(absl::StrCat(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
      "application_name = 'cqrs relay ",
      f.schema.name(), ".default'"));
  REQUIRE(testing::Eventually([&] { return second->owner(); }));
  first->Stop();
  f.Append(100, 100, 9);
  REQUIRE(testing::Eventually([&] { return consumer.distinct() == 2000; }));
  CHECK(InStreamOrder(consumer.got()));
}

// `bank project --amqp-url` on the fixture's schema and exchange: the
// built bank's relay (and projections) in a process of its own.
std::unique_ptr<testing::ChildProcess> BankRelay(Fixture& f) {
  return std::make_unique<testing::ChildProcess>(
      BANK_BINARY,
      std::vector<std::string>{"project", "--database-url", f.schema.url(),
                               "--schema", f.schema.name(), "--amqp-url",
                               AmqpUrl(), "--amqp-exchange", f.exchange});
}

TEST_CASE(
    "the relaying process SIGKILLed mid-stream: a standby process takes "
    "over, every event arrives, in stream order, repeats with the same id",
    "[integration][pg][amqp]") {
  Fixture f;
  testing::ChildProcess migrate(
      BANK_BINARY, {"migrate", "--database-url", f.schema.url(), "--schema",
                    f.schema.name()});
  REQUIRE(migrate.Wait() == 0);
  Consumer consumer(f.queue);
  auto owner = BankRelay(f);
  const std::string relaying =
      absl::StrCat("SELECT count(*) FROM ", f.schema.name(),
                   ".amqp_relays WHERE state IN ('caught_up', 'relaying')");
  REQUIRE(testing::Eventually([&] { return f.schema.QueryInt(relaying) == 1; },
                              absl::Seconds(60)));
  auto standby = BankRelay(f);  // waits for the owner's lock

  // 40 accounts: opened, then 5 rounds of 50 deposits each (10,040
  // events): two rounds appended while the owner relays, the other three
  // after it is killed (the writer waits for that, however fast the relay
  // or the writer is on this machine).
  constexpr int kAccounts = 40;
  constexpr int kRounds = 5;
  constexpr int kRoundsBeforeKill = 2;
  constexpr int kDeposits = 50;
  constexpr size_t kEvents = kAccounts * (1 + kRounds * kDeposits);
  std::atomic<bool> appended_ok{true};
  std::atomic<int> rounds_done{0};
  std::atomic<bool> killed{false};
  std::thread writer([&] {
    auto append = [&](int account, std::vector<NewEvent> events) {
      if (!f.store
               ->Append(absl::StrCat("account-r", account),
                        ExpectedVersion::Any(), std::move(events))
               .ok()) {
        appended_ok = false;
      }
    };
    for (int a = 0; a < kAccounts; ++a) {
      append(a, {Event("AccountOpened", R"({"owner":"o","currency":"EUR"})")});
    }
    for (int r = 0; r < kRounds; ++r) {
      if (r == kRoundsBeforeKill &&
          !testing::Eventually([&] { return killed.load(); },
                               absl::Seconds(120))) {
        appended_ok = false;
        return;
      }
      for (int a = 0; a < kAccounts; ++a) {
        append(a, std::vector<NewEvent>(
                      kDeposits, Event("MoneyDeposited", R"({"amount":1})")));
      }
      ++rounds_done;
    }
  });
  // The owner dies with part of the log relayed (its last pages possibly
  // published but not checkpointed).
  const bool midway = testing::Eventually(
      [&] { return consumer.distinct() >= kEvents / 4; }, absl::Seconds(120));
  const int rounds_at_kill = rounds_done.load();
  CHECK(owner->Kill(SIGKILL) == 128 + SIGKILL);
  killed = true;
  writer.join();
  REQUIRE(midway);
  REQUIRE(appended_ok);
  // The rest of the log was appended after the kill: the standby relays it.
  CHECK(rounds_at_kill <= kRoundsBeforeKill);
  REQUIRE(testing::Eventually([&] { return consumer.distinct() == kEvents; },
                              absl::Seconds(120)));
  const std::vector<Got> got = consumer.got();
  CHECK(InStreamOrder(got));
  // A repeat carries the id, stream and version of its first delivery.
  std::map<std::string, std::pair<std::string, int64_t>> first;
  size_t repeats = 0;
  for (const Got& g : got) {
    auto [it, inserted] =
        first.emplace(g.id, std::make_pair(g.stream, g.version));
    if (inserted) continue;
    ++repeats;
    CHECK(it->second == std::make_pair(g.stream, g.version));
  }
  CHECK(first.size() == kEvents);
  auto status = AmqpRelay::ReadStatus(f.schema.pool(), *f.store,
                                      f.schema.name(), "default");
  REQUIRE(status.ok());
  CHECK(status->lag_events == 0);
  CHECK(status->state != "stopped");  // the standby holds it now
  WARN("relayed " << kEvents << " events across the failover; " << repeats
                  << " repeats");
}

TEST_CASE("an unroutable message is counted and shown, and the relay goes on",
          "[integration][pg][amqp]") {
  Fixture f;
  // Only account events are bound: other categories are unroutable.
  MetricsRegistry metrics;
  AmqpRelayOptions options = f.Options();
  options.metrics = &metrics;
  auto relay = f.Relay(options);
  relay->Start();
  Consumer consumer(f.queue);
  REQUIRE(f.store->Append("ledger-1", ExpectedVersion::Any(), {Event("Opened")})
              .ok());
  f.Append(0, 1, 0);
  REQUIRE(testing::Eventually([&] { return consumer.distinct() == 1; }));
  REQUIRE(testing::Eventually([&] {
    auto s = AmqpRelay::ReadStatus(f.schema.pool(), *f.store, f.schema.name(),
                                   "default");
    return s.ok() && s->unroutable == 1 && s->lag_events == 0;
  }));
  auto s = AmqpRelay::ReadStatus(f.schema.pool(), *f.store, f.schema.name(),
                                 "default");
  CHECK_THAT(s->last_error, Catch::Contains("ledger.bank.account.opened.v1"));
  CHECK_THAT(
      metrics.Render(),
      Catch::Contains("cqrs_relay_unroutable_total{relay=\"default\"} 1"));
}

TEST_CASE("bad relay configuration is a clear error at startup",
          "[integration][pg][amqp]") {
  Fixture f;
  AmqpRelayOptions missing = f.Options();
  missing.exchange = Unique("no-such-exchange");
  auto made = AmqpRelay::Create(&f.schema.pool(), f.store.get(), &f.publication,
                                missing);
  REQUIRE_FALSE(made.ok());
  CHECK(made.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(made.status().message()),
             Catch::Contains(missing.exchange));

  AmqpRelayOptions unreachable = f.Options();
  unreachable.url = "amqp://guest:guest@127.0.0.1:1/";
  made = AmqpRelay::Create(&f.schema.pool(), f.store.get(), &f.publication,
                           unreachable);
  REQUIRE_FALSE(made.ok());
  CHECK(made.status().code() == absl::StatusCode::kUnavailable);

  AmqpRelayOptions declared = f.Options();
  declared.exchange = Unique("declared");
  declared.declare_exchange = true;
  CHECK(AmqpRelay::Create(&f.schema.pool(), f.store.get(), &f.publication,
                          declared)
            .ok());
}

}  // namespace
}  // namespace cqrs::integration

// App::Consume against the test RabbitMQ node and PostgreSQL: messages
// published to a queue become commands of an app served in-process, in
// order per aggregate, once per message_id; refusals end in "<queue>.dead"
// with x-cqrs-error; transient failures are retried until they apply; a
// SIGKILL of the broker mid-consumption loses nothing and doubles nothing.
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "app/app.h"
#include "app/app_server.h"
#include "integration/amqp_client.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "tests/app/inbound_support.h"
#include "tests/support/test_broker.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace {

namespace json = cqrs::json;
namespace amqp = cqrs::integration::amqp;

struct Deposited {
  int64_t amount = 0;
  int64_t seq = 0;
  static auto Json() {
    return json::Shape<Deposited>()
        .Field("amount", &Deposited::amount)
        .Field("seq", &Deposited::seq);
  }
};
struct Deposit {
  int64_t amount = 0;
  int64_t seq = 0;
  static auto Json() {
    return json::Shape<Deposit>()
        .Field("amount", &Deposit::amount, json::Range(1, 1000000))
        .Field("seq", &Deposit::seq);
  }
};
struct Account {
  int64_t balance = 0;
};
using Accounts = cqrs::AggregateOf<Account, Deposited>;

constexpr int64_t kLimit = 500;  // a larger deposit is refused (422)
constexpr char kFlakyId[] = "flaky";

// The app: POST /accounts/{id}/deposit, consumed from `queue`.
class Consumed {
 public:
  explicit Consumed(int concurrency)
      : queue_(cqrs::testing::UniqueAmqpName("inbound")), app_("inbound_test") {
    app_.Event<Deposited>("Deposited");
    Accounts& accounts = app_.Aggregate<Account, Deposited>("account");
    accounts.On<Deposited>(
        [](Account& a, const Deposited& e) { a.balance += e.amount; });
    std::atomic<int>* flaky_failures = &flaky_failures_;
    app_.Command<Deposit>(
        "POST", "/accounts/{id}/deposit", accounts,
        [](const Account&, const Deposit& d) -> Accounts::Decision {
          if (d.amount > kLimit) {
            return cqrs::Reject("limit_exceeded", "deposits above the limit");
          }
          return Accounts::Emit(Deposited{d.amount, d.seq});
        });
    app_.Command<Deposit>(
        "POST", "/flaky/{id}/deposit", accounts,
        [flaky_failures](const Account&,
                         const Deposit& d) -> Accounts::Decision {
          if (flaky_failures->fetch_add(1) < 3) {
            return absl::UnavailableError("the ledger is down");
          }
          return Accounts::Emit(Deposited{d.amount, d.seq});
        });
    app_.Consume(queue_, "POST", "/accounts/{id}/deposit")
        .Concurrency(concurrency);
    app_.Consume(flaky_queue(), "POST", "/flaky/{id}/deposit").Concurrency(2);
    REQUIRE(cqrs::MigrateApp(schema_.pool(), schema_.name()).ok());
    StartServer();
    auto conn = amqp::Connection::Open(cqrs::testing::TestAmqpUrl());
    REQUIRE(conn.ok());
    publisher_ = *std::move(conn);
    REQUIRE(publisher_->EnableConfirms().ok());
  }

  void StartServer() { server_ = NewServer(); }
  void StopServer() { server_.reset(); }
  // `n` more servers of the same app consuming the same queue: competing
  // consumers, as several `serve` processes would be.
  void StartMoreServers(int n) {
    for (int i = 0; i < n; ++i) more_.push_back(NewServer());
  }
  std::unique_ptr<cqrs::AppServer> NewServer() {
    cqrs::ServeOptions options;
    options.schema = schema_.name();
    options.amqp_url = cqrs::testing::TestAmqpUrl();
    auto server = cqrs::AppServer::Start(app_, &schema_.pool(), options);
    INFO(server.status().ToString());
    REQUIRE(server.ok());
    return *std::move(server);
  }
  // A new publishing connection (the old one died with the broker).
  void ReconnectPublisher() {
    auto conn = amqp::Connection::Open(cqrs::testing::TestAmqpUrl());
    REQUIRE(conn.ok());
    publisher_ = *std::move(conn);
    REQUIRE(publisher_->EnableConfirms().ok());
  }

  const std::string& queue() const { return queue_; }
  std::string flaky_queue() const { return absl::StrCat(queue_, "-flaky"); }
  int flaky_calls() const { return flaky_failures_.load(); }

  // Publishes to `queue` (the default exchange) and waits for the broker.
  void Publish(const std::string& queue, const std::string& id,
               const std::string& message_id, const std::string& body) {
    amqp::Message m;
    m.routing_key = queue;
    m.message_id = message_id;
    m.content_type = "application/json";
    m.body = body;
    m.headers = {{"cloudEvents:subject", id}};
    REQUIRE(publisher_->Publish(m).ok());
  }
  // A structured CloudEvent: the subject and data inside the body.
  void PublishStructured(const std::string& message_id,
                         const std::string& cloud_event) {
    amqp::Message m;
    m.routing_key = queue_;
    m.message_id = message_id;
    m.content_type = "application/cloudevents+json; charset=utf-8";
    m.body = cloud_event;
    REQUIRE(publisher_->Publish(m).ok());
  }
  void Publish(const std::string& id, const std::string& message_id,
               const std::string& body) {
    Publish(queue_, id, message_id, body);
  }
  void Confirm() {
    auto confirmed = publisher_->WaitForConfirms(absl::Seconds(30));
    REQUIRE(confirmed.ok());
    REQUIRE(confirmed->nacked.empty());
  }

  long long Events(const std::string& stream_like) {
    return schema_.QueryInt(
        absl::StrCat("SELECT count(*) FROM ", schema_.name(),
                     ".events WHERE stream_id LIKE '", stream_like, "'"));
  }
  // Waits until Events(stream_like) reaches `n`, for as long as the count
  // goes on growing: gives up after 60 s without a new event. (A fixed
  // bound failed on a loaded machine while the events still came in: the
  // consumer reconnects with a backoff of up to 16 s after a broker
  // restart, and then works through thousands of redeliveries.)
  long long AwaitEvents(const std::string& stream_like, long long n) {
    long long seen = Events(stream_like);
    while (seen < n && cqrs::testing::Eventually(
                           [&] { return Events(stream_like) > seen; },
                           absl::Seconds(60), absl::Milliseconds(50))) {
      seen = Events(stream_like);
    }
    return Events(stream_like);
  }

  // The value of the metric line starting with `series` (0 when absent).
  double Metric(const std::string& series) {
    for (absl::string_view line :
         absl::StrSplit(server_->metrics().Render(), '\n')) {
      if (absl::StartsWith(line, series + " ")) {
        double v = 0;
        if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
      }
    }
    return 0;
  }
  double Messages(const std::string& outcome) {
    return Metric(absl::StrCat("cqrs_inbound_messages_total{queue=\"", queue_,
                               "\",outcome=\"", outcome, "\"}"));
  }
  // Messages(outcome) summed over every server.
  double AllMessages(const std::string& outcome) {
    double sum = Messages(outcome);
    const std::string series =
        absl::StrCat("cqrs_inbound_messages_total{queue=\"", queue_,
                     "\",outcome=\"", outcome, "\"}");
    for (const auto& server : more_) {
      for (absl::string_view line :
           absl::StrSplit(server->metrics().Render(), '\n')) {
        double v = 0;
        if (absl::StartsWith(line, series + " ") &&
            absl::SimpleAtod(line.substr(series.size() + 1), &v)) {
          sum += v;
        }
      }
    }
    return sum;
  }
  // Waits until Messages(outcome) reaches `n` (or 60 s).
  double AwaitMessages(const std::string& outcome, double n) {
    cqrs::testing::Eventually([&] { return Messages(outcome) >= n; },
                              absl::Seconds(60), absl::Milliseconds(20));
    return Messages(outcome);
  }

  std::vector<Deposited> Stream(const std::string& id) {
    auto events = server_->store().ReadStream(
        absl::StrCat("account-", id), cqrs::eventstore::Direction::kForward, 1,
        1000);
    REQUIRE(events.ok());
    std::vector<Deposited> out;
    for (const auto& e : *events) {
      auto d = json::Decode<Deposited>(e.data);
      REQUIRE(d.ok());
      out.push_back(*d);
    }
    return out;
  }

  // The messages in "<queue>.dead", waiting up to 10 s for `n` of them.
  std::vector<amqp::Delivery> DeadLetters(size_t n) {
    return cqrs::testing::TakeMessages(absl::StrCat(queue_, ".dead"), n,
                                       absl::Seconds(10));
  }

 private:
  cqrs::testing::TestSchema schema_;
  std::string queue_;
  std::atomic<int> flaky_failures_{0};
  cqrs::App app_;
  std::unique_ptr<cqrs::AppServer> server_;
  std::vector<std::unique_ptr<cqrs::AppServer>> more_;
  std::unique_ptr<amqp::Connection> publisher_;
};

std::string DepositBody(int64_t amount, int64_t seq) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("amount");
  w.Int64(amount);
  w.Key("seq");
  w.Int64(seq);
  w.EndObject();
  return buffer.GetString();
}

// A structured CloudEvent (JSON) with `data` the JSON object `data`.
std::string StructuredEvent(const std::string& id, const std::string& subject,
                            const std::string& data) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  for (const auto& [key, value] :
       std::vector<std::pair<const char*, std::string>>{{"specversion", "1.0"},
                                                        {"id", id},
                                                        {"source", "/test"},
                                                        {"type", "deposit"},
                                                        {"subject", subject}}) {
    w.Key(key);
    w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  }
  w.Key("data");
  w.RawValue(data.data(), data.size(), rapidjson::kObjectType);
  w.EndObject();
  return buffer.GetString();
}

TEST_CASE("inbound: every message applies once, in order per aggregate",
          "[app][amqp][pg]") {
  Consumed c(/*concurrency=*/8);
  constexpr int kAggregates = 50;
  constexpr int kMessages = 1000;
  std::map<std::string, int64_t> sums;
  std::map<std::string, int64_t> seqs;
  for (int i = 0; i < kMessages; ++i) {
    const std::string id = absl::StrCat("a", i % kAggregates);
    const int64_t amount = i % 7 + 1;
    const int64_t seq = ++seqs[id];
    sums[id] += amount;
    c.Publish(id, absl::StrCat("m-", i), DepositBody(amount, seq));
  }
  c.Confirm();
  REQUIRE(c.AwaitEvents("account-a%", kMessages) == kMessages);
  CHECK(c.AwaitMessages("applied", kMessages) == kMessages);
  for (const auto& [id, sum] : sums) {
    const std::vector<Deposited> events = c.Stream(id);
    INFO(id);
    REQUIRE(static_cast<int64_t>(events.size()) == seqs[id]);
    int64_t total = 0;
    for (size_t k = 0; k < events.size(); ++k) {
      CHECK(events[k].seq == static_cast<int64_t>(k) + 1);
      total += events[k].amount;
    }
    CHECK(total == sum);
  }
  CHECK(c.Messages("dead_lettered") == 0);
}

TEST_CASE(
    "inbound: the broker SIGKILLed mid-consumption: every message applies "
    "once, in order per aggregate",
    "[app][amqp][pg]") {
  Consumed c(/*concurrency=*/8);
  constexpr int kAggregates = 50;
  constexpr int kMessages = 5000;
  std::map<std::string, int64_t> seqs;
  for (int i = 0; i < kMessages; ++i) {
    const std::string id = absl::StrCat("k", i % kAggregates);
    c.Publish(id, absl::StrCat("m-", i), DepositBody(1, ++seqs[id]));
  }
  c.Confirm();  // persistent and confirmed: on the broker's disk
  REQUIRE(c.AwaitMessages("applied", kMessages / 10) >= kMessages / 10);
  // Deliveries in the workers' queues and commands mid-flight lose their
  // broker; the broker redelivers every unacknowledged one after restart.
  cqrs::testing::ControlTestBroker("kill");
  const long long applied_at_kill = c.Events("account-k%");
  cqrs::testing::ControlTestBroker("start");
  INFO("applied when the broker was killed: " << applied_at_kill);
  CHECK(applied_at_kill < kMessages);  // else nothing was mid-consumption
  // One more message per aggregate, published after the restart, so behind
  // every redelivered one of its aggregate: once it is applied, so is
  // everything before it (one worker per aggregate, in queue order).
  c.ReconnectPublisher();
  for (int a = 0; a < kAggregates; ++a) {
    const std::string id = absl::StrCat("k", a);
    c.Publish(id, absl::StrCat("last-", a), DepositBody(1, ++seqs[id]));
  }
  c.Confirm();
  REQUIRE(c.AwaitEvents("account-k%", kMessages + kAggregates) ==
          kMessages + kAggregates);
  for (const auto& [id, n] : seqs) {
    const std::vector<Deposited> events = c.Stream(id);
    INFO(id);
    REQUIRE(static_cast<int64_t>(events.size()) == n);  // none twice
    for (size_t k = 0; k < events.size(); ++k) {
      CHECK(events[k].seq == static_cast<int64_t>(k) + 1);
    }
  }
  CHECK(c.Messages("dead_lettered") == 0);
}

TEST_CASE("inbound: a message delivered twice applies once",
          "[app][amqp][pg]") {
  Consumed c(/*concurrency=*/4);
  constexpr int kMessages = 100;
  for (int i = 0; i < kMessages; ++i) {
    const std::string id = absl::StrCat("b", i % 5);
    const std::string body = DepositBody(1, i);
    c.Publish(id, absl::StrCat("m-", i), body);
    c.Publish(id, absl::StrCat("m-", i), body);
  }
  c.Confirm();
  CHECK(c.AwaitMessages("replayed", kMessages) == kMessages);
  CHECK(c.Messages("applied") == kMessages);
  CHECK(c.Events("account-b%") == kMessages);
}

TEST_CASE(
    "inbound: copies of one message taken by 8 competing consumers at once "
    "apply once",
    "[app][amqp][pg]") {
  // 8 servers of one app on one queue, 2 workers each: the broker hands
  // consecutive deliveries (the two copies of a message) round-robin to
  // different consumers, which apply them at the same time.
  Consumed c(/*concurrency=*/2);
  c.StartMoreServers(7);
  constexpr int kMessages = 400;
  for (int i = 0; i < kMessages; ++i) {
    const std::string id = absl::StrCat("d", i % 20);
    const std::string body = DepositBody(1, i);
    for (int copy = 0; copy < 2; ++copy) {
      c.Publish(id, absl::StrCat("m-", i), body);
    }
  }
  c.Confirm();
  REQUIRE(cqrs::testing::Eventually(
      [&] {
        return c.AllMessages("applied") + c.AllMessages("replayed") >=
               2 * kMessages;
      },
      absl::Seconds(60), absl::Milliseconds(20)));
  CHECK(c.AllMessages("applied") == kMessages);
  CHECK(c.AllMessages("replayed") == kMessages);
  CHECK(c.Events("account-d%") == kMessages);
}

TEST_CASE("inbound: refused messages are dead-lettered with the reason",
          "[app][amqp][pg]") {
  Consumed c(/*concurrency=*/4);
  c.Publish("p1", "ok-1", DepositBody(10, 1));
  c.Publish("p1", "bad-json", "this is not json");
  c.Publish("p1", "too-much", DepositBody(kLimit + 1, 2));
  c.Publish("p1", "", DepositBody(10, 3));  // no message_id
  c.Publish("p1", "ok-2", DepositBody(20, 4));
  c.Confirm();
  REQUIRE(c.AwaitEvents("account-p1", 2) == 2);
  const std::vector<amqp::Delivery> dead = c.DeadLetters(3);
  REQUIRE(dead.size() == 3);
  std::map<std::string, std::string> reasons;
  std::map<std::string, std::string> bodies;
  for (const amqp::Delivery& d : dead) {
    reasons[d.message_id] = cqrs::testing::HeaderOf(d, "x-cqrs-error");
    bodies[d.message_id] = d.body;
    CHECK(cqrs::testing::HeaderOf(d, "cloudEvents:subject") == "p1");
  }
  INFO(reasons["bad-json"]);
  CHECK(absl::StartsWith(reasons["bad-json"], "400 invalid_json"));
  INFO(reasons["too-much"]);
  CHECK(absl::StartsWith(reasons["too-much"], "422 limit_exceeded"));
  INFO(reasons[""]);
  CHECK(absl::StrContains(reasons[""], "no message_id"));
  CHECK(bodies["too-much"] == DepositBody(kLimit + 1, 2));
  const std::vector<Deposited> events = c.Stream("p1");
  REQUIRE(events.size() == 2);
  CHECK(events[0].amount + events[1].amount == 30);
  CHECK(c.AwaitMessages("dead_lettered", 3) == 3);
  CHECK(c.Events("account-p1") == 2);
}

TEST_CASE("inbound: a structured CloudEvent's data is the command",
          "[app][amqp][pg]") {
  Consumed c(/*concurrency=*/1);
  c.PublishStructured("ce-1",
                      StructuredEvent("ce-1", "s1", DepositBody(42, 1)));
  c.Confirm();
  REQUIRE(c.AwaitEvents("account-s1", 1) == 1);
  const std::vector<Deposited> events = c.Stream("s1");
  REQUIRE(events.size() == 1);
  CHECK(events[0].amount == 42);
}

TEST_CASE("inbound: a message holding a NUL byte is dead-lettered unapplied",
          "[app][amqp][pg]") {
  Consumed c(/*concurrency=*/1);
  // RapidJSON alone stops at the NUL: both once applied their first value.
  c.Publish("n1", "nul-plain",
            DepositBody(10, 1) + std::string("\0garbage", 8));
  c.PublishStructured("nul-ce",
                      StructuredEvent("nul-ce", "n1", DepositBody(7, 2)) +
                          std::string("\0{}", 3));
  c.Publish("n1", "ok", DepositBody(20, 3));
  c.Confirm();
  REQUIRE(c.AwaitEvents("account-n1", 1) == 1);
  const std::vector<amqp::Delivery> dead = c.DeadLetters(2);
  REQUIRE(dead.size() == 2);
  std::map<std::string, std::string> reasons;
  for (const amqp::Delivery& d : dead) {
    reasons[d.message_id] = cqrs::testing::HeaderOf(d, "x-cqrs-error");
  }
  INFO(reasons["nul-plain"]);
  CHECK(absl::StartsWith(reasons["nul-plain"], "400 invalid_request"));
  CHECK(absl::StrContains(reasons["nul-plain"], "NUL"));
  INFO(reasons["nul-ce"]);
  CHECK(absl::StartsWith(reasons["nul-ce"], "400 "));
  CHECK(absl::StrContains(reasons["nul-ce"], "NUL"));
  const std::vector<Deposited> events = c.Stream("n1");
  REQUIRE(events.size() == 1);
  CHECK(events[0].amount == 20);
}

TEST_CASE("inbound: a transient failure is retried until it applies once",
          "[app][amqp][pg]") {
  Consumed c(/*concurrency=*/2);
  c.Publish(c.flaky_queue(), kFlakyId, "f-1", DepositBody(7, 1));
  c.Publish(c.flaky_queue(), kFlakyId, "f-2", DepositBody(8, 2));
  c.Confirm();
  REQUIRE(c.AwaitEvents(absl::StrCat("account-", kFlakyId), 2) == 2);
  const std::vector<Deposited> events = c.Stream(kFlakyId);
  REQUIRE(events.size() == 2);
  CHECK(events[0].seq == 1);
  CHECK(events[0].amount == 7);
  CHECK(events[1].seq == 2);
  CHECK(c.flaky_calls() == 5);  // 3 failures, then f-1 and f-2
  CHECK(c.Metric(absl::StrCat("cqrs_inbound_retries_total{queue=\"",
                              c.flaky_queue(), "\"}")) == 3);
}

TEST_CASE("inbound: a message retried when the server stops is redelivered",
          "[app][amqp][pg]") {
  Consumed c(/*concurrency=*/1);
  c.Publish(c.flaky_queue(), kFlakyId, "f-1", DepositBody(7, 1));
  c.Confirm();
  REQUIRE(cqrs::testing::Eventually([&] { return c.flaky_calls() >= 1; },
                                    absl::Seconds(10)));
  c.StopServer();  // while f-1 waits for its retry: not acked
  const int calls = c.flaky_calls();
  CHECK(calls < 4);
  CHECK(c.Events(absl::StrCat("account-", kFlakyId)) == 0);
  c.StartServer();  // the broker redelivers f-1
  REQUIRE(c.AwaitEvents(absl::StrCat("account-", kFlakyId), 1) == 1);
  // Once the redelivery is counted as applied (and so acked), nothing can
  // apply it again.
  REQUIRE(cqrs::testing::Eventually([&] {
    return c.Metric(absl::StrCat("cqrs_inbound_messages_total{queue=\"",
                                 c.flaky_queue(), "\",outcome=\"applied\"}")) >=
           1;
  }));
  CHECK(c.Events(absl::StrCat("account-", kFlakyId)) == 1);
  CHECK(c.flaky_calls() == 4);  // 3 failures across both servers, 1 success
}

}  // namespace

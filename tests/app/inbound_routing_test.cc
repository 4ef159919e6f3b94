// ConsumerBuilder::Bind and ::Body against the test RabbitMQ node and
// PostgreSQL: a queue bound to a topic exchange receives what is published
// there (whether the exchange existed before or not), a body codec maps
// another app's event to the command's body, and a message the codec
// refuses ends in "<queue>.dead" with its reason.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "app/app.h"
#include "app/app_server.h"
#include "integration/amqp_client.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "tests/app/inbound_support.h"
#include "tests/support/test_broker.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace {

namespace json = cqrs::json;
namespace amqp = cqrs::integration::amqp;

struct Credited {
  int64_t amount = 0;
  static auto Json() {
    return json::Shape<Credited>().Field("amount", &Credited::amount);
  }
};
struct Credit {
  int64_t amount = 0;
  static auto Json() {
    return json::Shape<Credit>().Field("amount", &Credit::amount,
                                       json::Range(1, 1000000));
  }
};
struct Wallet {
  int64_t balance = 0;
};
using Wallets = cqrs::AggregateOf<Wallet, Credited>;

// Another app's event {"cents": N} as the body of a credit of N / 100.
absl::StatusOr<std::string> CreditFromCents(const amqp::Delivery& d) {
  rapidjson::Document doc;
  doc.Parse(d.body.data(), d.body.size());
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("cents") ||
      !doc["cents"].IsInt64()) {
    return absl::InvalidArgumentError("no integer \"cents\" in the event");
  }
  return json::Encode(Credit{doc["cents"].GetInt64() / 100});
}

std::string IntObject(const char* key, int64_t value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key(key);
  w.Int64(value);
  w.EndObject();
  return buffer.GetString();
}

enum class Codec { kNone, kCents };

// An app with POST /wallets/{id}/credit consuming `queue`, bound to
// `exchange` with each of `keys`.
class Routed {
 public:
  Routed(const std::string& exchange, const std::vector<std::string>& keys,
         Codec codec)
      : queue_(cqrs::testing::UniqueAmqpName("routed")), app_("routing_test") {
    app_.Event<Credited>("Credited");
    Wallets& wallets = app_.Aggregate<Wallet, Credited>("wallet");
    wallets.On<Credited>(
        [](Wallet& w, const Credited& e) { w.balance += e.amount; });
    app_.Command<Credit>(
        "POST", "/wallets/{id}/credit", wallets,
        [](const Wallet&, const Credit& c) -> Wallets::Decision {
          return Wallets::Emit(Credited{c.amount});
        });
    cqrs::ConsumerBuilder& consumer =
        app_.Consume(queue_, "POST", "/wallets/{id}/credit");
    for (const std::string& key : keys) consumer.Bind(exchange, key);
    if (codec == Codec::kCents) consumer.Body(CreditFromCents);
    REQUIRE(cqrs::MigrateApp(schema_.pool(), schema_.name()).ok());
    cqrs::ServeOptions options;
    options.schema = schema_.name();
    options.amqp_url = cqrs::testing::TestAmqpUrl();
    auto server = cqrs::AppServer::Start(app_, &schema_.pool(), options);
    INFO(server.status().ToString());
    REQUIRE(server.ok());
    server_ = *std::move(server);
  }

  const std::string& queue() const { return queue_; }

  long long Events(const std::string& id) {
    return static_cast<long long>(Amounts(id).size());
  }
  std::vector<int64_t> Amounts(const std::string& id) {
    auto events = server_->store().ReadStream(
        absl::StrCat("wallet-", id), cqrs::eventstore::Direction::kForward, 1,
        1000);
    std::vector<int64_t> out;
    if (!events.ok() && absl::IsNotFound(events.status())) return out;
    INFO(events.status().ToString());
    REQUIRE(events.ok());
    for (const auto& e : *events) {
      auto c = json::Decode<Credited>(e.data);
      REQUIRE(c.ok());
      out.push_back(c->amount);
    }
    return out;
  }
  // Waits until the stream of `id` has `n` events (or 60 s).
  long long AwaitEvents(const std::string& id, long long n) {
    cqrs::testing::Eventually([&] { return Events(id) >= n; },
                              absl::Seconds(60), absl::Milliseconds(20));
    return Events(id);
  }

  // The messages in "<queue>.dead", waiting up to 30 s for `n` of them.
  std::vector<amqp::Delivery> DeadLetters(size_t n) {
    return cqrs::testing::TakeMessages(absl::StrCat(queue_, ".dead"), n,
                                       absl::Seconds(30));
  }

 private:
  cqrs::testing::TestSchema schema_;
  std::string queue_;
  cqrs::App app_;
  std::unique_ptr<cqrs::AppServer> server_;
};

// A publisher with confirms on its own connection.
class Publisher {
 public:
  Publisher() {
    auto conn = amqp::Connection::Open(cqrs::testing::TestAmqpUrl());
    REQUIRE(conn.ok());
    conn_ = *std::move(conn);
    REQUIRE(conn_->EnableConfirms().ok());
  }
  amqp::Connection& conn() { return *conn_; }

  // Publishes a binary CloudEvent (subject `id`) to `exchange` with `key`,
  // mandatory; returns how many the broker returned as unroutable.
  size_t Publish(const std::string& exchange, const std::string& key,
                 const std::string& id, const std::string& message_id,
                 const std::string& body) {
    amqp::Message m;
    m.exchange = exchange;
    m.routing_key = key;
    m.message_id = message_id;
    m.content_type = "application/json";
    m.body = body;
    m.mandatory = true;
    m.headers = {{"cloudEvents:subject", id}};
    REQUIRE(conn_->Publish(m).ok());
    auto confirmed = conn_->WaitForConfirms(absl::Seconds(30));
    REQUIRE(confirmed.ok());
    REQUIRE(confirmed->nacked.empty());
    return confirmed->returned.size();
  }

 private:
  std::unique_ptr<amqp::Connection> conn_;
};

TEST_CASE("inbound routing: Bind declares a missing exchange and binds to it",
          "[app][amqp][pg]") {
  const std::string exchange = cqrs::testing::UniqueAmqpName("routing-new");
  Routed app(exchange, {"wallet.credited"}, Codec::kNone);
  Publisher publisher;
  // The consumer declared the exchange as the relay would (durable topic).
  REQUIRE(publisher.conn().CheckExchange(exchange).ok());
  CHECK(publisher.conn().DeclareExchange(exchange, "topic").ok());
  // A key nobody bound is returned; the bound one is consumed.
  CHECK(publisher.Publish(exchange, "wallet.debited", "w1", "m-0",
                          IntObject("amount", 99)) == 1);
  CHECK(publisher.Publish(exchange, "wallet.credited", "w1", "m-1",
                          IntObject("amount", 5)) == 0);
  REQUIRE(app.AwaitEvents("w1", 1) == 1);
  CHECK(app.Amounts("w1") == std::vector<int64_t>{5});
}

TEST_CASE("inbound routing: Bind to an existing exchange, several keys",
          "[app][amqp][pg]") {
  const std::string exchange = cqrs::testing::UniqueAmqpName("routing-old");
  Publisher publisher;
  // Declared by the producer first (bank --amqp-declare-exchange).
  REQUIRE(publisher.conn().DeclareExchange(exchange, "topic").ok());
  Routed app(exchange, {"a.*.credited", "b.#"}, Codec::kNone);
  CHECK(publisher.Publish(exchange, "a.x.credited", "w2", "m-1",
                          IntObject("amount", 1)) == 0);
  CHECK(publisher.Publish(exchange, "b.y.z", "w2", "m-2",
                          IntObject("amount", 2)) == 0);
  CHECK(publisher.Publish(exchange, "c.x.credited", "w2", "m-3",
                          IntObject("amount", 4)) == 1);
  REQUIRE(app.AwaitEvents("w2", 2) == 2);
  CHECK(app.Amounts("w2") == std::vector<int64_t>{1, 2});
}

TEST_CASE("inbound routing: the body codec maps a message to the command",
          "[app][amqp][pg]") {
  const std::string exchange = cqrs::testing::UniqueAmqpName("routing-codec");
  Routed app(exchange, {"cents.#"}, Codec::kCents);
  Publisher publisher;
  CHECK(publisher.Publish(exchange, "cents.moved", "w3", "m-1",
                          IntObject("cents", 1250)) == 0);
  CHECK(publisher.Publish(exchange, "cents.moved", "w3", "m-2",
                          IntObject("cents", 300)) == 0);
  // Delivered twice: applies once (the message id is the idempotency key).
  CHECK(publisher.Publish(exchange, "cents.moved", "w3", "m-2",
                          IntObject("cents", 300)) == 0);
  REQUIRE(app.AwaitEvents("w3", 2) == 2);
  CHECK(app.Amounts("w3") == std::vector<int64_t>{12, 3});
}

TEST_CASE("inbound routing: a message the codec refuses is dead-lettered",
          "[app][amqp][pg]") {
  const std::string exchange = cqrs::testing::UniqueAmqpName("routing-poison");
  Routed app(exchange, {"cents.#"}, Codec::kCents);
  Publisher publisher;
  CHECK(publisher.Publish(exchange, "cents.moved", "w4", "poison-1",
                          IntObject("dollars", 3)) == 0);
  CHECK(publisher.Publish(exchange, "cents.moved", "w4", "ok-1",
                          IntObject("cents", 700)) == 0);
  REQUIRE(app.AwaitEvents("w4", 1) == 1);
  CHECK(app.Amounts("w4") == std::vector<int64_t>{7});
  const std::vector<amqp::Delivery> dead = app.DeadLetters(1);
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].message_id == "poison-1");
  CHECK(dead[0].body == IntObject("dollars", 3));
  CHECK(cqrs::testing::HeaderOf(dead[0], "cloudEvents:subject") == "w4");
  CHECK(cqrs::testing::HeaderOf(dead[0], "x-cqrs-error") ==
        "400 invalid_request: no integer \"cents\" in the event");
}

TEST_CASE("inbound routing: bad Bind arguments are definition errors",
          "[app]") {
  cqrs::App app("routing_definitions");
  app.Event<Credited>("Credited");
  Wallets& wallets = app.Aggregate<Wallet, Credited>("wallet");
  app.Command<Credit>("POST", "/wallets/{id}/credit", wallets,
                      [](const Wallet&, const Credit& c) -> Wallets::Decision {
                        return Wallets::Emit(Credited{c.amount});
                      });
  app.Consume("fine", "POST", "/wallets/{id}/credit")
      .Bind("bank.events", "account.#")
      .Body(CreditFromCents);
  app.Consume("bad", "POST", "/wallets/{id}/credit")
      .Bind("", "k")
      .Bind(std::string(256, 'x'), "k")
      .Bind("amq.topic", "k")
      .Bind("ok", "")
      .Bind("ok", std::string(256, 'k'));
  const std::vector<std::string> errors = app.Finalize();
  const std::string all = absl::StrJoin(errors, "\n");
  INFO(all);
  CHECK(errors.size() == 5);
  CHECK(!absl::StrContains(all, "'fine'"));
  CHECK(absl::StrContains(all,
                          "Bind(\"\", \"k\"): the exchange name must be "
                          "1 to 255 bytes"));
  CHECK(absl::StrContains(all,
                          "Bind(\"amq.topic\", \"k\"): exchanges named "
                          "amq.* are reserved"));
  CHECK(absl::StrContains(all,
                          "Bind(\"ok\", \"\"): the routing key must be 1 "
                          "to 255 bytes"));
}

}  // namespace

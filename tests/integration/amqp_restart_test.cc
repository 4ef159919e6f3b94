// The AMQP client (integration/amqp_client.h) when the broker goes away:
// restarted (SIGTERM: it closes connections with CONNECTION_FORCED) or
// killed (SIGKILL: the socket just ends). Each old connection reports
// kUnavailable and a new one works once the node is back, with durable
// topology and persistent messages kept. These tests restart the shared
// test node, so ctest runs them alone (RUN_SERIAL in tests/CMakeLists.txt).
#include <memory>
#include <string>
#include <utility>

#include <catch2/catch.hpp>

#include "absl/time/clock.h"
#include "integration/amqp_client.h"
#include "tests/support/test_broker.h"

namespace cqrs::integration::amqp {
namespace {

using testing::ControlTestBroker;
using testing::TestAmqpUrl;
using testing::UniqueAmqpName;

// A message with what every test sets.
Message Msg(std::string exchange, std::string routing_key, std::string body,
            std::string message_id = "") {
  Message m;
  m.exchange = std::move(exchange);
  m.routing_key = std::move(routing_key);
  m.body = std::move(body);
  m.message_id = std::move(message_id);
  return m;
}

std::unique_ptr<Connection> OpenTestConnection() {
  auto conn = Connection::Open(TestAmqpUrl());
  INFO(conn.status());
  REQUIRE(conn.ok());
  return *std::move(conn);
}

// Publishes until the connection reports the broker gone.
absl::Status PublishUntilBroken(Connection& conn, const Message& m) {
  for (int i = 0; i < 100; ++i) {
    auto seq = conn.Publish(m);
    if (!seq.ok()) return seq.status();
    auto confirms = conn.WaitForConfirms(absl::Seconds(5));
    if (!confirms.ok()) return confirms.status();
  }
  return absl::OkStatus();
}

void CheckSurvivedAndConsume(const std::string& exchange,
                             const std::string& queue) {
  auto conn = OpenTestConnection();
  CHECK(conn->CheckExchange(exchange).ok());
  REQUIRE(conn->Consume(queue).ok());
  auto next = conn->Next(absl::Seconds(10));
  REQUIRE(next.ok());
  REQUIRE(next->has_value());
  CHECK((*next)->message_id == "before");
}

TEST_CASE("amqp: a broker restart breaks old connections, not new ones",
          "[amqp][integration]") {
  std::string exchange = UniqueAmqpName("restart.x");
  std::string queue = UniqueAmqpName("restart.q");
  auto publisher = OpenTestConnection();
  auto consumer = OpenTestConnection();
  REQUIRE(publisher->DeclareExchange(exchange).ok());
  REQUIRE(publisher->DeclareQueue(queue, {}).ok());
  REQUIRE(publisher->BindQueue(queue, exchange, "#").ok());
  REQUIRE(publisher->EnableConfirms().ok());
  Message m = Msg(exchange, "k", "{}", "before");
  REQUIRE(publisher->Publish(m).ok());
  REQUIRE(publisher->WaitForConfirms(absl::Seconds(10)).ok());
  REQUIRE(consumer->Consume(queue).ok());
  auto first = consumer->Next(absl::Seconds(10));
  REQUIRE(first.ok());
  REQUIRE(first->has_value());

  SECTION("restarted") { ControlTestBroker("restart"); }
  SECTION("killed and started again") {
    ControlTestBroker("kill");
    // Down: a new connection is refused at once.
    auto refused = Connection::Open(TestAmqpUrl());
    CHECK(absl::IsUnavailable(refused.status()));
    ControlTestBroker("start");
  }

  absl::Status publishing = PublishUntilBroken(*publisher, m);
  INFO(publishing);
  CHECK(absl::IsUnavailable(publishing));
  auto next = consumer->Next(absl::Seconds(10));
  INFO(next.status());
  CHECK(absl::IsUnavailable(next.status()));
  // Broken stays broken.
  CHECK(absl::IsUnavailable(consumer->Ack(1)));

  CheckSurvivedAndConsume(exchange, queue);
}

}  // namespace
}  // namespace cqrs::integration::amqp

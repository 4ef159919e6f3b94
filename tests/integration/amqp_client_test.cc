// The AMQP client (integration/amqp_client.h) against the throwaway
// RabbitMQ node of scripts/test: topology, publishing with confirms,
// returns, consuming, dead-lettering, and the errors of a bad configuration.
// Broker restarts and crashes are in amqp_restart_test.cc.
#include "integration/amqp_client.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "tests/support/test_broker.h"

namespace cqrs::integration::amqp {
namespace {

// {"n": n}, through RapidJSON's writer.
std::string NumberBody(int n) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("n");
  w.Int(n);
  w.EndObject();
  return buffer.GetString();
}

using testing::TestAmqpUrl;
using testing::UniqueAmqpName;
using Headers = std::vector<std::pair<std::string, std::string>>;

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
  ConnectionOptions options;
  options.connection_name = "cqrs amqp_client_test";
  auto conn = Connection::Open(TestAmqpUrl(), options);
  INFO(conn.status());
  REQUIRE(conn.ok());
  return *std::move(conn);
}

// A topic exchange and a queue bound to it with `binding`.
struct Topology {
  std::string exchange = UniqueAmqpName("test.x");
  std::string queue = UniqueAmqpName("test.q");
};

Topology Declare(Connection& conn, const std::string& binding,
                 Connection::QueueOptions queue_options = {}) {
  Topology t;
  REQUIRE(conn.DeclareExchange(t.exchange).ok());
  REQUIRE(conn.DeclareQueue(t.queue, queue_options).ok());
  REQUIRE(conn.BindQueue(t.queue, t.exchange, binding).ok());
  return t;
}

std::optional<std::string> Header(const Headers& headers,
                                  const std::string& key) {
  for (const auto& [k, v] : headers) {
    if (k == key) return v;
  }
  return std::nullopt;
}

Delivery NextDelivery(Connection& conn) {
  auto next = conn.Next(absl::Seconds(10));
  INFO(next.status());
  REQUIRE(next.ok());
  REQUIRE(next->has_value());
  return **std::move(next);
}

TEST_CASE("amqp: a message round trip keeps body, id, type and headers",
          "[amqp][integration]") {
  auto conn = OpenTestConnection();
  Topology t = Declare(*conn, "bank.#");
  REQUIRE(conn->EnableConfirms().ok());

  Message m;
  m.exchange = t.exchange;
  m.routing_key = "bank.account.opened";
  m.body = R"({"id":"a-1"})";
  m.message_id = "0192f3c4-0000-7000-8000-000000000001";
  m.content_type = "application/json";
  m.headers = {{"cloudEvents:type", "bank.account.opened"},
               {"cloudEvents:source", "https://bank.example/"}};
  auto seq = conn->Publish(m);
  REQUIRE(seq.ok());
  CHECK(*seq == 1);
  auto confirms = conn->WaitForConfirms(absl::Seconds(10));
  REQUIRE(confirms.ok());
  CHECK(confirms->acked == 1);
  CHECK(confirms->nacked.empty());
  CHECK(confirms->returned.empty());
  CHECK(conn->Unconfirmed() == 0);

  REQUIRE(conn->Qos(10).ok());
  REQUIRE(conn->Consume(t.queue).ok());
  Delivery d = NextDelivery(*conn);
  CHECK(d.exchange == t.exchange);
  CHECK(d.routing_key == "bank.account.opened");
  CHECK(d.body == m.body);
  CHECK(d.message_id == m.message_id);
  CHECK(d.content_type == "application/json");
  CHECK_FALSE(d.redelivered);
  CHECK(d.headers == m.headers);
  REQUIRE(conn->Ack(d.delivery_tag).ok());

  // Acked: nothing comes back.
  auto none = conn->Next(absl::Milliseconds(200));
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
}

TEST_CASE("amqp: a rejected delivery requeued comes back redelivered",
          "[amqp][integration]") {
  auto conn = OpenTestConnection();
  Topology t = Declare(*conn, "#");
  Message m = Msg(t.exchange, "any", "body");
  m.message_id = "m-1";
  REQUIRE(conn->Publish(m).ok());
  REQUIRE(conn->Consume(t.queue).ok());
  Delivery first = NextDelivery(*conn);
  CHECK_FALSE(first.redelivered);
  REQUIRE(conn->Reject(first.delivery_tag, /*requeue=*/true).ok());
  Delivery again = NextDelivery(*conn);
  CHECK(again.redelivered);
  CHECK(again.message_id == "m-1");
  REQUIRE(conn->Ack(again.delivery_tag).ok());
}

TEST_CASE("amqp: 10,000 messages are all confirmed", "[amqp][integration]") {
  auto conn = OpenTestConnection();
  Topology t = Declare(*conn, "bank.#");
  REQUIRE(conn->EnableConfirms().ok());
  constexpr int kMessages = 10000;
  Message m;
  m.exchange = t.exchange;
  m.headers = {{"cloudEvents:type", "bank.account.deposited"}};
  uint64_t last = 0;
  for (int i = 0; i < kMessages; ++i) {
    m.routing_key = absl::StrCat("bank.account.", i % 7);
    m.message_id = absl::StrCat("id-", i);
    m.body = NumberBody(i);
    auto seq = conn->Publish(m);
    REQUIRE(seq.ok());
    CHECK(*seq == last + 1);
    last = *seq;
  }
  CHECK(last == kMessages);
  auto confirms = conn->WaitForConfirms(absl::Seconds(60));
  INFO(confirms.status());
  REQUIRE(confirms.ok());
  CHECK(confirms->acked == kMessages);
  CHECK(confirms->nacked.empty());
  CHECK(confirms->returned.empty());
  CHECK(conn->Unconfirmed() == 0);
  // Nothing more to wait for: an immediate, empty result.
  auto again = conn->WaitForConfirms(absl::ZeroDuration());
  REQUIRE(again.ok());
  CHECK(again->acked == 0);
  REQUIRE(conn->PurgeQueue(t.queue).ok());
}

TEST_CASE(
    "amqp: waiting for the confirms of a prefix leaves later ones "
    "in flight",
    "[amqp][integration]") {
  auto conn = OpenTestConnection();
  Topology t = Declare(*conn, "#");
  REQUIRE(conn->EnableConfirms().ok());
  CHECK(conn->LastPublished() == 0);
  CHECK(conn->ConfirmedThrough() == 0);
  Message m = Msg(t.exchange, "k", "{}");
  for (int i = 0; i < 1000; ++i) REQUIRE(conn->Publish(m).ok());
  const uint64_t first_page = conn->LastPublished();
  for (int i = 0; i < 1000; ++i) REQUIRE(conn->Publish(m).ok());
  CHECK(conn->LastPublished() == 2000);
  auto prefix = conn->WaitForConfirmsThrough(first_page, absl::Seconds(30));
  INFO(prefix.status());
  REQUIRE(prefix.ok());
  CHECK(conn->ConfirmedThrough() >= first_page);
  CHECK(prefix->acked == conn->ConfirmedThrough());
  CHECK(prefix->nacked.empty());
  auto rest = conn->WaitForConfirms(absl::Seconds(30));
  REQUIRE(rest.ok());
  CHECK(prefix->acked + rest->acked == 2000);
  CHECK(conn->ConfirmedThrough() == 2000);
  CHECK(conn->Unconfirmed() == 0);
  REQUIRE(conn->PurgeQueue(t.queue).ok());
}

TEST_CASE("amqp: classic queues are declared as version 2 unless told",
          "[amqp][integration]") {
  auto conn = OpenTestConnection();
  const std::string queue = UniqueAmqpName("test.version");
  REQUIRE(conn->DeclareQueue(queue, {}).ok());
  // The declaration carried x-queue-version 2: declaring it as version 1
  // contradicts it (406), the same declaration again does not.
  Connection::QueueOptions v1;
  v1.classic_version = 1;
  absl::Status contradicts = conn->DeclareQueue(queue, v1);
  INFO(contradicts.ToString());
  CHECK(absl::IsFailedPrecondition(contradicts));
  CHECK(conn->DeclareQueue(queue, {}).ok());
}

TEST_CASE("amqp: an unroutable mandatory message is returned",
          "[amqp][integration]") {
  auto conn = OpenTestConnection();
  Topology t = Declare(*conn, "bank.#");
  REQUIRE(conn->EnableConfirms().ok());
  Message routed = Msg(t.exchange, "bank.account.opened", "{}");
  routed.mandatory = true;
  routed.message_id = "routed";
  Message unroutable = Msg(t.exchange, "shop.order.placed", "{}");
  unroutable.mandatory = true;
  unroutable.message_id = "unroutable";
  unroutable.headers = {{"k", "v"}};
  REQUIRE(conn->Publish(routed).ok());
  REQUIRE(conn->Publish(unroutable).ok());
  auto confirms = conn->WaitForConfirms(absl::Seconds(10));
  REQUIRE(confirms.ok());
  CHECK(confirms->acked == 2);
  REQUIRE(confirms->returned.size() == 1);
  const Message& r = confirms->returned[0];
  CHECK(r.exchange == t.exchange);
  CHECK(r.routing_key == "shop.order.placed");
  CHECK(r.message_id == "unroutable");
  CHECK(r.headers == unroutable.headers);
  CHECK(r.body == "{}");
}

TEST_CASE("amqp: a missing exchange is kNotFound and the connection goes on",
          "[amqp][integration]") {
  auto conn = OpenTestConnection();
  std::string missing = UniqueAmqpName("missing");
  absl::Status status = conn->CheckExchange(missing);
  CHECK(absl::IsNotFound(status));
  CHECK(status.message() ==
        absl::StrCat("exchange '", missing, "' does not exist in vhost '/'"));

  // The channel the broker closed was reopened.
  Topology t = Declare(*conn, "#");
  CHECK(conn->CheckExchange(t.exchange).ok());

  SECTION("publishing to it: the next WaitForConfirms reports it") {
    REQUIRE(conn->EnableConfirms().ok());
    REQUIRE(conn->Publish(Msg(missing, "k", "lost")).ok());
    auto confirms = conn->WaitForConfirms(absl::Seconds(10));
    INFO(confirms.status());
    CHECK(absl::IsNotFound(confirms.status()));
    CHECK(absl::StrContains(confirms.status().message(), missing));
    // Confirm mode survived the reopened channel; numbering restarted.
    auto seq = conn->Publish(Msg(t.exchange, "k", "kept"));
    REQUIRE(seq.ok());
    CHECK(*seq == 1);
    auto ok = conn->WaitForConfirms(absl::Seconds(10));
    REQUIRE(ok.ok());
    CHECK(ok->acked == 1);
  }
}

TEST_CASE("amqp: bad configurations fail Open with a clear error",
          "[amqp][integration]") {
  SECTION("nobody listens: kUnavailable, connection refused") {
    // A port bound but not listening, held until the end: connecting is
    // refused, and no other process can take the port meanwhile.
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    socklen_t len = sizeof(addr);
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    const int port = ntohs(addr.sin_port);
    auto conn =
        Connection::Open(absl::StrCat("amqp://guest:guest@127.0.0.1:", port));
    close(fd);
    CHECK(absl::IsUnavailable(conn.status()));
    CHECK(conn.status().message() ==
          absl::StrCat("cannot reach the AMQP broker at 127.0.0.1:", port,
                       ": connection refused"));
  }
  SECTION("a malformed URL: kInvalidArgument") {
    auto conn = Connection::Open("http://127.0.0.1:5672/");
    CHECK(absl::IsInvalidArgument(conn.status()));
  }
  SECTION("a wrong password: kUnauthenticated") {
    std::string url = TestAmqpUrl();
    REQUIRE(absl::StartsWith(url, "amqp://guest:guest@"));
    url.replace(0, 19, "amqp://guest:wrong@");
    auto conn = Connection::Open(url);
    INFO(conn.status());
    CHECK(absl::IsUnauthenticated(conn.status()));
  }
  SECTION("a vhost that does not exist: refused") {
    auto conn = Connection::Open(absl::StrCat(TestAmqpUrl(), "no-such-vhost"));
    INFO(conn.status());
    CHECK((absl::IsPermissionDenied(conn.status()) ||
           absl::IsUnauthenticated(conn.status())));
    CHECK(absl::StrContains(conn.status().message(), "no-such-vhost"));
  }
}

TEST_CASE("amqp: Reject without requeue dead-letters to the queue's DLX",
          "[amqp][integration]") {
  auto conn = OpenTestConnection();
  std::string dlx = UniqueAmqpName("test.dlx");
  std::string dead = UniqueAmqpName("test.dead");
  REQUIRE(conn->DeclareExchange(dlx, "fanout").ok());
  REQUIRE(conn->DeclareQueue(dead, {}).ok());
  REQUIRE(conn->BindQueue(dead, dlx, "").ok());
  Connection::QueueOptions work_options;
  work_options.dead_letter_exchange = dlx;
  SECTION("classic queue") {}
  SECTION("quorum queue") { work_options.quorum = true; }
  Topology t = Declare(*conn, "commands.#", work_options);

  Message m = Msg(t.exchange, "commands.open", "poison");
  m.message_id = "poison-1";
  m.headers = {{"reason", "bad input"}};
  REQUIRE(conn->Publish(m).ok());
  REQUIRE(conn->Consume(t.queue).ok());
  Delivery d = NextDelivery(*conn);
  CHECK(d.message_id == "poison-1");
  REQUIRE(conn->Reject(d.delivery_tag, /*requeue=*/false).ok());

  REQUIRE(conn->Consume(dead).ok());
  Delivery dl = NextDelivery(*conn);
  CHECK(dl.exchange == dlx);
  CHECK(dl.routing_key == "commands.open");
  CHECK(dl.message_id == "poison-1");
  CHECK(dl.body == "poison");
  CHECK(Header(dl.headers, "reason") == "bad input");
  CHECK(Header(dl.headers, "x-death") == "<array>");
  REQUIRE(conn->Ack(dl.delivery_tag).ok());
}

}  // namespace
}  // namespace cqrs::integration::amqp

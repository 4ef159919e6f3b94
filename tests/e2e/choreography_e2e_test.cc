// Choreography between two built apps through RabbitMQ only
// (docs/choreography.md): `bank serve` relays its published events to the
// topic exchange bank.events; `rewards serve` consumes the queue
// rewards.transfers bound to it and earns points for every transfer debit.
// Nothing calls the rewards app over HTTP but the test's reads.
//
//   1. 20 transfers between two accounts: each member's points become
//      exactly the sum over its transfers (each counted once);
//   2. 20 more transfers while the rewards process is SIGKILLed and
//      started again: the points are exact again (nothing lost, nothing
//      applied twice);
//   3. a message on bank.events with the bound key whose data the rewards
//      codec refuses lands in rewards.transfers.dead with the reason.
#include <signal.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "integration/amqp_client.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/child_process.h"
#include "tests/support/test_broker.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace {

namespace amqp = cqrs::integration::amqp;
using cqrs::http_test::ClientResponse;
using cqrs::http_test::TestClient;

constexpr char kExchange[] = "bank.events";
constexpr char kQueue[] = "rewards.transfers";
constexpr char kDeadQueue[] = "rewards.transfers.dead";
constexpr char kDebitKey[] = "account.bank.account.transfer_debited.v1";

// A JSON object of string and integer members, written by RapidJSON.
using Member = std::pair<const char*, std::variant<std::string, int64_t>>;
std::string Json(const std::vector<Member>& members) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  for (const auto& [key, value] : members) {
    w.Key(key);
    if (const auto* s = std::get_if<std::string>(&value)) {
      w.String(s->data(), static_cast<rapidjson::SizeType>(s->size()));
    } else {
      w.Int64(std::get<int64_t>(value));
    }
  }
  w.EndObject();
  return buffer.GetString();
}

// A served app (`binary serve`) on its own schema and a port it picks (a
// new one on each start), with an API key of every scope; SIGKILLed when
// the test ends while it still runs.
class Served {
 public:
  Served(std::string binary, int pool_size)
      : binary_(std::move(binary)),
        schema_(pool_size),
        token_(cqrs::testing::CreateToken(schema_.pool(), schema_.name())) {}

  // Starts the server and waits until /readyz answers 200.
  void Start() {
    process_ = std::make_unique<cqrs::testing::ChildProcess>(
        binary_,
        std::vector<std::string>{
            "serve", "--listen", "127.0.0.1:0", "--database-url", schema_.url(),
            "--schema", schema_.name(), "--amqp-url",
            cqrs::testing::TestAmqpUrl(), "--amqp-declare-exchange"},
        cqrs::testing::ChildProcess::Output::kCapture);
    port_ = process_->WaitForListeningPort();
    REQUIRE(cqrs::testing::Eventually(
        [&] {
          auto client = TestClient::Connect(port_, absl::Seconds(2));
          if (!client.ok()) return false;
          auto r = (*client)->Send("GET", "/readyz");
          return r.ok() && r->status == 200;
        },
        absl::Seconds(60), absl::Milliseconds(50)));
  }
  // SIGKILL: no shutdown, unacknowledged deliveries go back to the queue.
  void Kill() {
    REQUIRE(process_->Kill(SIGKILL) == 128 + SIGKILL);
    process_.reset();
  }

  ClientResponse Send(const std::string& method, const std::string& target,
                      const std::string& body = "") {
    auto client = TestClient::Connect(port_, absl::Seconds(10));
    REQUIRE(client.ok());
    (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(token_));
    cqrs::http::HeaderList headers;
    if (!body.empty()) headers.emplace_back("Content-Type", "application/json");
    auto r = (*client)->Send(method, target, body, headers);
    REQUIRE(r.ok());
    return *std::move(r);
  }

 private:
  std::string binary_;
  cqrs::testing::TestSchema schema_;
  int port_ = 0;  // of the running process
  std::string token_;
  std::unique_ptr<cqrs::testing::ChildProcess> process_;
};

// The rewards app's view of a member: {points, history}, or {-1, -1} while
// it has none.
std::pair<int64_t, int64_t> MemberOf(Served& rewards, const std::string& id) {
  ClientResponse r = rewards.Send("GET", absl::StrCat("/members/", id));
  if (r.status == 404) return {-1, -1};
  INFO(r.status << " " << r.body);
  REQUIRE(r.status == 200);
  rapidjson::Document doc;
  doc.Parse(r.body.c_str());
  REQUIRE(!doc.HasParseError());
  return {doc["points"].GetInt64(), doc["history"].GetInt64()};
}

// Waits until both members show exactly the expected points and history
// (a duplicate would overshoot and never come back).
void AwaitMembers(Served& rewards, const std::string (&ids)[2],
                  const int64_t (&points)[2], const int64_t (&history)[2]) {
  const bool exact = cqrs::testing::Eventually(
      [&] {
        for (int k = 0; k < 2; ++k) {
          if (MemberOf(rewards, ids[k]) !=
              std::make_pair(points[k], history[k])) {
            return false;
          }
        }
        return true;
      },
      absl::Seconds(90), absl::Milliseconds(100));
  for (int k = 0; k < 2; ++k) {
    INFO(ids[k] << ": expected " << points[k] << " points in " << history[k]
                << " entries");
    CHECK(MemberOf(rewards, ids[k]) == std::make_pair(points[k], history[k]));
  }
  REQUIRE(exact);
}

TEST_CASE("choreography: the bank's transfers earn rewards points once each",
          "[e2e][amqp][pg]") {
  // A previous run's leftovers must not count here.
  {
    auto conn = amqp::Connection::Open(cqrs::testing::TestAmqpUrl());
    REQUIRE(conn.ok());
    for (const char* queue : {kQueue, kDeadQueue}) {
      absl::Status purged = (*conn)->PurgeQueue(queue);
      REQUIRE((purged.ok() || absl::IsNotFound(purged)));
    }
  }
  Served rewards(REWARDS_BINARY, 4);
  Served bank(BANK_BINARY, 4);
  // The consumer starts first: it declares bank.events and binds its queue,
  // so no debit is published before someone listens.
  rewards.Start();
  bank.Start();

  // Ids unique to this run ([A-Za-z0-9_-], as the bank wants them).
  const std::string run =
      absl::StrReplaceAll(cqrs::testing::UniqueAmqpName("c"), {{".", "-"}});
  const std::string ids[2] = {absl::StrCat(run, "-alice"),
                              absl::StrCat(run, "-bob")};
  for (const std::string& id : ids) {
    ClientResponse opened = bank.Send("POST", "/accounts",
                                      Json({{"owner", id},
                                            {"currency", std::string("EUR")},
                                            {"account_id", id}}));
    INFO(opened.body);
    REQUIRE(opened.status == 201);
    ClientResponse deposited =
        bank.Send("POST", absl::StrCat("/accounts/", id, "/deposit"),
                  Json({{"amount", int64_t{10000000}}}));
    INFO(deposited.body);
    REQUIRE(deposited.status == 200);
  }

  int64_t points[2] = {0, 0};
  int64_t history[2] = {0, 0};
  std::atomic<int> transfers{0};
  // Transfer n goes from ids[n % 2] to the other: (n % 7 + 1) points.
  auto transfer = [&](int n) {
    const int from = n % 2;
    const int64_t amount = 100 * (n % 7 + 1) + 37;
    ClientResponse r =
        bank.Send("POST", "/transfers",
                  Json({{"from", ids[from]},
                        {"to", ids[1 - from]},
                        {"amount", amount},
                        {"transfer_id", absl::StrCat(run, "-t", n)}}));
    INFO(r.body);
    REQUIRE(r.status == 202);
    points[from] += amount / 100;
    ++history[from];
    ++transfers;
  };

  for (int n = 0; n < 20; ++n) transfer(n);
  AwaitMembers(rewards, ids, points, history);

  // 20 more; the rewards process dies after the 8th and comes back.
  std::thread traffic([&] {
    for (int n = 20; n < 40; ++n) transfer(n);
  });
  REQUIRE(cqrs::testing::Eventually([&] { return transfers.load() >= 28; }));
  rewards.Kill();
  traffic.join();
  rewards.Start();
  AwaitMembers(rewards, ids, points, history);

  // A message the codec refuses, one per member: each goes to the dead queue
  // with the reason and changes nothing. Each is queued behind every
  // earlier message of its member (same worker, queue order), so once both
  // are dead-lettered every transfer has been settled: the points must
  // still be exact.
  auto conn = amqp::Connection::Open(cqrs::testing::TestAmqpUrl());
  REQUIRE(conn.ok());
  REQUIRE((*conn)->EnableConfirms().ok());
  std::map<std::string, std::string> reasons;  // by message id
  for (const std::string& id : ids) {
    amqp::Message poison;
    poison.exchange = kExchange;
    poison.routing_key = kDebitKey;
    poison.message_id = absl::StrCat(id, "-poison");
    poison.content_type = "application/json";
    poison.body = Json({{"transfer_id", absl::StrCat(id, "-tx")}});
    poison.headers = {{"cloudEvents:subject", id}};
    poison.mandatory = true;
    REQUIRE((*conn)->Publish(poison).ok());
    reasons[poison.message_id] = "";
  }
  auto confirmed = (*conn)->WaitForConfirms(absl::Seconds(30));
  REQUIRE(confirmed.ok());
  REQUIRE(confirmed->nacked.empty());
  REQUIRE(confirmed->returned.empty());  // rewards.transfers is bound

  REQUIRE((*conn)->Consume(kDeadQueue).ok());
  size_t found = 0;
  REQUIRE(cqrs::testing::Eventually(
      [&] {
        auto d = (*conn)->Next(absl::Milliseconds(200));
        REQUIRE(d.ok());
        if (!d->has_value()) return false;
        REQUIRE((*conn)->Ack((*d)->delivery_tag).ok());
        auto it = reasons.find((*d)->message_id);
        if (it == reasons.end()) return false;
        for (const auto& [key, value] : (*d)->headers) {
          if (key == "x-cqrs-error") it->second = value;
        }
        return ++found == reasons.size();
      },
      absl::Seconds(30), absl::Milliseconds(1)));
  for (const auto& [message_id, reason] : reasons) {
    INFO(message_id << ": " << reason);
    CHECK(absl::StartsWith(reason,
                           "400 invalid_request: a transfer_debited "
                           "event needs \"amount\""));
  }
  // Read once the projection has caught up with whatever was applied.
  AwaitMembers(rewards, ids, points, history);
  CHECK(MemberOf(rewards, ids[0]) == std::make_pair(points[0], history[0]));
  CHECK(MemberOf(rewards, ids[1]) == std::make_pair(points[1], history[1]));
}

}  // namespace

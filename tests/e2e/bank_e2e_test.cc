// The whole bank through its real interfaces only: the built `bank` binary
// (`bank serve` as a separate process on the test PostgreSQL, `bank
// projections rebuild --all`), driven over HTTP by 16 concurrent clients.
//
//   1. opens 50 accounts, then runs 2,000 random deposits, withdrawals and
//      transfers (every request with an Idempotency-Key; some sent twice on
//      purpose, whose replay must be byte-identical);
//   2. after phase A, waits with read-your-writes and checks the read
//      models against the ledger of acknowledged commands;
//   3. phase B runs while `bank projections rebuild --all` rebuilds every
//      read model: the swapped-in models equal the ledger (the model before
//      plus the new traffic);
//   4. phase C SIGKILLs the server in the middle of its traffic and starts
//      it again; clients retry what got no answer with the same key, so
//      every outcome is known; every acknowledged command is reflected and
//      the invariants hold: per currency, the balances sum to deposits minus
//      withdrawals; every transfer is completed or failed; none is both
//      completed and refunded.
#include <signal.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/child_process.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace bank {
namespace {

namespace http = cqrs::http;
using cqrs::http_test::ClientResponse;
using cqrs::http_test::TestClient;

constexpr int kAccounts = 50;
constexpr int kClients = 16;

// A `bank` process on the test schema; killed with SIGKILL when still
// running at the end. Its output (2,000 access-log lines for a server) is
// discarded unless captured to learn a server's port.
class Bank : public cqrs::testing::ChildProcess {
 public:
  Bank(cqrs::testing::TestSchema& schema, std::vector<std::string> args,
       Output output = Output::kDiscard)
      : ChildProcess(BANK_BINARY, WithDatabase(schema, std::move(args)),
                     output) {}

 private:
  static std::vector<std::string> WithDatabase(
      cqrs::testing::TestSchema& schema, std::vector<std::string> args) {
    for (const std::string& a : {std::string("--database-url"), schema.url(),
                                 std::string("--schema"), schema.name()}) {
      args.push_back(a);
    }
    return args;
  }
};

// The bearer token every request sends: created once per test by `bank keys
// create` with every scope.
std::string& Token() {
  static std::string token;
  return token;
}

void CreateKey(cqrs::testing::TestSchema& schema) {
  const cqrs::testing::ShellResult created = cqrs::testing::RunShell(
      absl::StrCat(BANK_BINARY,
                   " keys create --name e2e --scopes "
                   "commands,queries,events,admin,metrics --database-url '",
                   schema.url(), "' --schema ", schema.name()));
  REQUIRE(created.exit_code == 0);
  Token() = created.LastLine();
  REQUIRE(absl::StartsWith(Token(), "cqrs_"));
}

std::unique_ptr<TestClient> Connect(int port, absl::Duration timeout) {
  auto client = TestClient::Connect(port, timeout);
  if (!client.ok()) return nullptr;
  (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(Token()));
  return *std::move(client);
}

// `bank serve` on a port it picks, once ready; stores that port in `*port`,
// which the clients read (a restarted server has a new one).
std::unique_ptr<Bank> Serve(cqrs::testing::TestSchema& schema,
                            std::atomic<int>* port) {
  auto bank = std::make_unique<Bank>(
      schema,
      std::vector<std::string>{"serve", "--listen", "127.0.0.1:0", "--workers",
                               "8"},
      Bank::Output::kCapture);
  const int listening = bank->WaitForListeningPort();
  REQUIRE(cqrs::testing::Eventually(
      [&] {
        auto client = TestClient::Connect(listening, absl::Seconds(2));
        if (!client.ok()) return false;
        auto r = (*client)->Send("GET", "/readyz");
        return r.ok() && r->status == 200;
      },
      absl::Seconds(60), absl::Milliseconds(50)));
  port->store(listening);
  return bank;
}

rapidjson::Document Parse(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.c_str());
  REQUIRE(!doc.HasParseError());
  return doc;
}

std::string Account(int i) { return absl::StrCat("e2e-", i); }
std::string Currency(int i) { return i % 10 == 9 ? "USD" : "EUR"; }

// What the clients were told.
struct Ledger {
  absl::Mutex mu;
  std::map<std::string, int64_t> net;  // by currency: deposits - withdrawals
  // (account, version) -> (type, amount) of every acknowledged deposit and
  // withdrawal.
  std::map<std::pair<std::string, int64_t>, std::pair<std::string, int64_t>>
      moves;
  struct TransferAck {
    std::string from, to;
    int64_t amount;
  };
  std::map<std::string, TransferAck> transfers;
  std::string last_position;
  int replays_checked = 0;
  // What the clients found wrong (they run on threads of their own, where
  // Catch2 must not be used; Traffic() checks this).
  std::vector<std::string> errors;
};

// One client connection that survives server restarts: a request that
// gets no answer is sent again, with the same Idempotency-Key, once the
// server is back (on the port `*port` then holds).
class Client {
 public:
  explicit Client(const std::atomic<int>* port) : port_(port) {}

  // The answer; nullopt when there was none within 90 s.
  std::optional<ClientResponse> Send(const std::string& target,
                                     const std::string& body,
                                     const std::string& key) {
    const http::HeaderList headers = {{"Content-Type", "application/json"},
                                      {"Idempotency-Key", key}};
    std::optional<ClientResponse> answer;
    cqrs::testing::Eventually(
        [&] {
          if (client_ == nullptr) client_ = Connect(*port_, absl::Seconds(10));
          if (client_ == nullptr) return false;
          auto r = client_->Send("POST", target, body, headers);
          // 503: the restarted server is not serving yet.
          if (r.ok() && r->status != 503) answer = *std::move(r);
          if (!answer.has_value()) client_.reset();
          return answer.has_value();
        },
        absl::Seconds(90), absl::Milliseconds(20));
    return answer;
  }

 private:
  const std::atomic<int>* port_;
  std::unique_ptr<TestClient> client_;
};

// Runs `ops` random commands from each of kClients clients; runs `at_half`
// (on this thread) once half of all operations are done.
void Traffic(const std::atomic<int>* port, Ledger& ledger, int ops,
             const std::string& tag,
             const std::function<void()>& at_half = {}) {
  std::atomic<int> done{0};
  std::atomic<int> stopped{0};  // clients that stopped at an error
  std::vector<std::thread> threads;
  // Joined however this function ends (a failed REQUIRE throws).
  struct JoinAll {
    std::vector<std::thread>& threads;
    ~JoinAll() {
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } join_all{threads};
  for (int c = 0; c < kClients; ++c) {
    // No Catch2 here: a client records what is wrong and stops.
    threads.emplace_back([&, c] {
      auto fail = [&](std::string what) {
        absl::MutexLock lock(&ledger.mu);
        ledger.errors.push_back(std::move(what));
        ++stopped;
      };
      Client client(port);
      std::mt19937 rng(
          static_cast<uint32_t>(c * 7919 + tag.size() * 31 + tag[0]));
      for (int n = 0; n < ops; ++n) {
        const std::string key = absl::StrCat(tag, "-", c, "-", n);
        const int a = static_cast<int>(rng() % kAccounts);
        const int kind = static_cast<int>(rng() % 20);
        std::string target;
        std::string body;
        std::string transfer_to;
        int64_t amount = 0;
        if (kind < 8) {
          amount = 1 + static_cast<int64_t>(rng() % 1000);
          target = absl::StrCat("/accounts/", Account(a), "/deposit");
        } else if (kind < 13) {
          amount = 1 + static_cast<int64_t>(rng() % 500);
          target = absl::StrCat("/accounts/", Account(a), "/withdraw");
        } else {
          amount = 1 + static_cast<int64_t>(rng() % 800);
          int b = static_cast<int>(rng() % (kAccounts + 1));
          if (b == a) b = (a + 1) % kAccounts;
          // kAccounts: an account that does not exist (refunded).
          transfer_to = b == kAccounts ? "e2e-missing" : Account(b);
          target = "/transfers";
        }
        if (target == "/transfers") {
          body = absl::StrCat(R"({"from":")", Account(a), R"(","to":")",
                              transfer_to, R"(","amount":)", amount,
                              R"(,"transfer_id":")", key, R"("})");
        } else {
          body = absl::StrCat(R"({"amount":)", amount, "}");
        }
        std::optional<ClientResponse> r = client.Send(target, body, key);
        if (!r.has_value()) {
          return fail(absl::StrCat(target, " ", body, ": no answer in 90 s"));
        }
        // Some requests are sent again on purpose: same answer, replayed.
        if (rng() % 10 == 0) {
          std::optional<ClientResponse> again = client.Send(target, body, key);
          if (!again.has_value() || again->status != r->status ||
              again->body != r->body ||
              again->Header("Idempotent-Replayed").value_or("") != "true") {
            return fail(
                absl::StrCat(target, " ", body, " -> ", r->status, " ", r->body,
                             "; sent again: ",
                             again.has_value()
                                 ? absl::StrCat(again->status, " ", again->body)
                                 : "no answer"));
          }
          absl::MutexLock lock(&ledger.mu);
          ++ledger.replays_checked;
        }
        if (r->status == 200 || r->status == 202) {
          rapidjson::Document doc;
          doc.Parse(r->body.c_str());
          absl::MutexLock lock(&ledger.mu);
          ledger.last_position = doc["position"].GetString();
          if (target == "/transfers") {
            ledger.transfers[key] = {Account(a), transfer_to, amount};
          } else {
            const bool deposit = kind < 8;
            ledger.net[Currency(a)] += deposit ? amount : -amount;
            ledger.moves[{Account(a), doc["version"].GetInt64()}] = {
                deposit ? "deposit" : "withdrawal", amount};
          }
        } else if (r->status != 422) {  // only business refusals are fine
          return fail(
              absl::StrCat(target, " ", body, " -> ", r->status, " ", r->body));
        }
        ++done;
      }
    });
  }
  if (at_half) {
    const bool halfway = cqrs::testing::Eventually(
        [&] { return done >= kClients * ops / 2 || stopped > 0; },
        absl::Seconds(300));
    if (halfway && stopped == 0) at_half();
  }
  for (auto& t : threads) t.join();
  absl::MutexLock lock(&ledger.mu);
  INFO(absl::StrJoin(ledger.errors, "\n"));
  REQUIRE(ledger.errors.empty());
}

// GET with a fresh connection, retried while the server restarts.
ClientResponse Get(int port, const std::string& target,
                   const http::HeaderList& headers = {}) {
  std::optional<ClientResponse> answer;
  REQUIRE(cqrs::testing::Eventually(
      [&] {
        auto client = Connect(port, absl::Seconds(10));
        if (client == nullptr) return false;
        auto r = client->Send("GET", target, "", headers);
        if (r.ok() && r->status != 503) answer = *std::move(r);
        return answer.has_value();
      },
      absl::Seconds(60), absl::Milliseconds(50)));
  return *std::move(answer);
}

// Every row of a paged list.
std::vector<rapidjson::Document> All(int port, const std::string& target,
                                     const std::string& at) {
  std::vector<rapidjson::Document> pages;
  std::string next_target = absl::StrCat(target, "limit=100");
  while (true) {
    ClientResponse r = Get(port, next_target, {{"X-Min-Position", at}});
    REQUIRE(r.status == 200);
    pages.push_back(Parse(r.body));
    const auto& next = pages.back()["next"];
    if (next.IsNull()) return pages;
    next_target = absl::StrCat(target, "limit=100&after=", next.GetString());
  }
}

// Waits until every acknowledged transfer is settled, then checks the read
// models against the ledger and the invariants, through the query API.
void Check(cqrs::testing::TestSchema& schema, int port, Ledger& ledger) {
  absl::MutexLock lock(&ledger.mu);
  std::map<std::string, std::string> status;  // transfer -> final status
  std::map<std::string, std::string> reason;
  std::string at = ledger.last_position;
  for (const auto& entry : ledger.transfers) {
    const std::string& id = entry.first;  // a lambda cannot capture a binding
    REQUIRE(cqrs::testing::Eventually(
        [&] {
          ClientResponse r = Get(port, absl::StrCat("/transfers/", id),
                                 {{"X-Min-Position", at}});
          REQUIRE(r.status == 200);
          rapidjson::Document doc = Parse(r.body);
          const std::string s = doc["status"].GetString();
          if (s == "pending") return false;
          status[id] = s;
          if (doc.HasMember("reason")) reason[id] = doc["reason"].GetString();
          return true;
        },
        absl::Seconds(60), absl::Milliseconds(20)));
  }
  // A position after every settlement: the log's head, once quiet (a
  // query's X-Projection-Position is the position taken before its read,
  // so the read that saw a transfer settled may name one before it).
  at = schema.LogHead();

  // Balances the ledger predicts, per account.
  std::map<std::string, int64_t> want;
  for (const auto& [key, move] : ledger.moves) {
    want[key.first] += move.first == "deposit" ? move.second : -move.second;
  }
  for (const auto& [id, t] : ledger.transfers) {
    if (status[id] == "completed") {
      want[t.from] -= t.amount;
      want[t.to] += t.amount;
    }
  }
  std::map<std::string, int64_t> sum_by_currency;
  for (const rapidjson::Document& page : All(port, "/accounts?", at)) {
    for (const auto& a : page["items"].GetArray()) {
      const std::string id = a["account_id"].GetString();
      INFO("account " << id);
      CHECK(a["balance"].GetInt64() == want[id]);
      CHECK(a["balance"].GetInt64() >= 0);
      sum_by_currency[a["currency"].GetString()] += a["balance"].GetInt64();
    }
  }
  CHECK(sum_by_currency == ledger.net);

  // Every acknowledged command is in the account's history; transfers moved
  // money exactly as their outcome says.
  std::map<std::string, std::multiset<std::string>> by_transfer;
  size_t moves_found = 0;
  for (int i = 0; i < kAccounts; ++i) {
    const std::string id = Account(i);
    for (const rapidjson::Document& page :
         All(port, absl::StrCat("/accounts/", id, "/transactions?"), at)) {
      for (const auto& t : page["items"].GetArray()) {
        const std::string type = t["type"].GetString();
        auto it = ledger.moves.find({id, t["version"].GetInt64()});
        if (it != ledger.moves.end()) {
          CHECK(type == it->second.first);
          CHECK(t["amount"].GetInt64() == it->second.second);
          ++moves_found;
        }
        if (t.HasMember("transfer_id")) {
          by_transfer[t["transfer_id"].GetString()].insert(type);
        }
      }
    }
  }
  CHECK(moves_found == ledger.moves.size());
  for (const auto& [id, t] : ledger.transfers) {
    INFO("transfer " << id << " " << status[id] << " " << reason[id]);
    const std::multiset<std::string>& seen = by_transfer[id];
    if (status[id] == "completed") {
      CHECK(seen == std::multiset<std::string>{"transfer_in", "transfer_out"});
    } else {
      REQUIRE(status[id] == "failed");
      CHECK(seen.count("transfer_in") == 0);
      // Refused by the source: nothing moved; by the target: refunded.
      if (reason[id] == "insufficient_funds") {
        CHECK(seen.empty());
      } else {
        CHECK(seen == std::multiset<std::string>{"refund", "transfer_out"});
      }
    }
  }
  rapidjson::Document stats =
      Parse(Get(port, "/stats", {{"X-Min-Position", at}}).body);
  CHECK(stats["transfers"]["pending"].GetInt64() == 0);
  CHECK(stats["transfers"]["completed"].GetInt64() +
            stats["transfers"]["failed"].GetInt64() ==
        static_cast<int64_t>(ledger.transfers.size()));
  for (const auto& [currency, net] : ledger.net) {
    CHECK(stats["total_balance"][currency.c_str()].GetInt64() == net);
  }
}

TEST_CASE(
    "the bank end to end: traffic, a rebuild under load, SIGKILL and "
    "restart",
    "[e2e][pg]") {
  cqrs::testing::TestSchema schema(4);
  std::atomic<int> port{0};
  CreateKey(schema);
  std::unique_ptr<Bank> server = Serve(schema, &port);
  {
    auto client = Connect(port, absl::Seconds(10));
    REQUIRE(client != nullptr);
    for (int i = 0; i < kAccounts; ++i) {
      auto r = client->Send(
          "POST", "/accounts",
          absl::StrCat(R"({"owner":"e2e","currency":")", Currency(i),
                       R"(","account_id":")", Account(i), R"("})"),
          {{"Content-Type", "application/json"}});
      REQUIRE(r.ok());
      REQUIRE(r->status == 201);
    }
  }
  Ledger ledger;
  ledger.net = {{"EUR", 0}, {"USD", 0}};

  // A: 800 commands.
  Traffic(&port, ledger, 50, "a");
  Check(schema, port, ledger);

  // B: 640 commands while every read model is rebuilt.
  std::unique_ptr<Bank> rebuild;
  Traffic(&port, ledger, 40, "b", [&] {
    rebuild = std::make_unique<Bank>(
        schema, std::vector<std::string>{"projections", "rebuild", "--all"});
  });
  REQUIRE(rebuild != nullptr);
  CHECK(rebuild->Wait() == 0);
  Check(schema, port, ledger);

  // C: 560 commands; the server is killed halfway and started again.
  Traffic(&port, ledger, 35, "c", [&] {
    CHECK(server->Kill(SIGKILL) == 128 + SIGKILL);
    server = Serve(schema, &port);
  });
  Check(schema, port, ledger);
  CHECK(ledger.replays_checked > 0);
  CHECK(ledger.transfers.size() > 100);
}

}  // namespace
}  // namespace bank

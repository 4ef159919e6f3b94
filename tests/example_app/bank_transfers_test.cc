// Transfers end to end inside one process: POST /transfers, the transfer
// process manager (commands/process_manager.h) moving the money, the read
// models, GET /transfers/{id} and GET /stats; the failure paths; command
// metadata; re-delivery; and the money invariant under concurrent traffic.
#include <atomic>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "rapidjson/document.h"
#include "tests/example_app/service_fixture.h"

namespace bank {
namespace {

namespace http = cqrs::http;
using cqrs::http_test::ClientResponse;

std::string Transfer(ServiceFixture& f, const std::string& from,
                     const std::string& to, int64_t amount,
                     const std::string& id) {
  auto r =
      f.Post("/transfers", absl::StrCat(R"({"from":")", from, R"(","to":")", to,
                                        R"(","amount":)", amount,
                                        R"(,"transfer_id":")", id, R"("})"));
  REQUIRE(r.status == 202);
  rapidjson::Document doc = Parse(r.body);
  CHECK(std::string(doc["transfer_id"].GetString()) == id);
  return doc["position"].GetString();
}

// Waits until the transfer is settled; returns its final JSON.
rapidjson::Document Settled(ServiceFixture& f, const std::string& id,
                            const std::string& requested_at) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (true) {
    auto r = f.Get(absl::StrCat("/transfers/", id), AtLeast(requested_at));
    REQUIRE(r.status == 200);
    rapidjson::Document doc = Parse(r.body);
    const std::string status = doc["status"].GetString();
    if (status != "pending") return doc;
    REQUIRE(absl::Now() < deadline);
    absl::SleepFor(absl::Milliseconds(20));
  }
}

// The account as the read model shows it once it has caught up with
// everything committed so far (the transfer's own events included).
rapidjson::Document Account(ServiceFixture& f, const std::string& id) {
  // A fresh deposit of 1 on a scratch account gives a position after
  // everything before it.
  static std::atomic<int> n{0};
  const std::string scratch = absl::StrCat("scratch-", n++);
  const std::string at = Open(f, scratch);
  auto r = f.Get(absl::StrCat("/accounts/", id), AtLeast(at));
  REQUIRE(r.status == 200);
  return Parse(r.body);
}

std::vector<std::pair<std::string, std::string>> Movements(
    ServiceFixture& f, const std::string& id) {
  auto r = f.Get(absl::StrCat("/accounts/", id, "/transactions?limit=500"));
  REQUIRE(r.status == 200);
  std::vector<std::pair<std::string, std::string>> out;
  rapidjson::Document doc = Parse(r.body);
  for (const auto& item : doc["items"].GetArray()) {
    out.emplace_back(
        item["type"].GetString(),
        item.HasMember("transfer_id") ? item["transfer_id"].GetString() : "");
  }
  return out;
}

TEST_CASE("a transfer moves money from one account to another",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  Open(f, "a");
  Open(f, "b");
  Deposit(f, "a", 1000);
  const std::string at = Transfer(f, "a", "b", 300, "t-1");
  rapidjson::Document t = Settled(f, "t-1", at);
  CHECK(std::string(t["status"].GetString()) == "completed");
  CHECK(std::string(t["from"].GetString()) == "a");
  CHECK(std::string(t["to"].GetString()) == "b");
  CHECK(t["amount"].GetInt64() == 300);
  CHECK(std::string(t["currency"].GetString()) == "EUR");
  CHECK(!t.HasMember("reason"));
  CHECK(Account(f, "a")["balance"].GetInt64() == 700);
  CHECK(Account(f, "b")["balance"].GetInt64() == 300);
  auto a = Movements(f, "a");
  REQUIRE(a.size() == 3);
  CHECK(a[2] ==
        std::make_pair(std::string("transfer_out"), std::string("t-1")));
  auto b = Movements(f, "b");
  REQUIRE(b.size() == 2);
  CHECK(b[1] == std::make_pair(std::string("transfer_in"), std::string("t-1")));

  auto stats = f.Get("/stats");
  REQUIRE(stats.status == 200);
  rapidjson::Document s = Parse(stats.body);
  CHECK(s["transfers"]["completed"].GetInt64() == 1);
  CHECK(s["transfers"]["pending"].GetInt64() == 0);
  CHECK(s["total_balance"]["EUR"].GetInt64() == 1000);

  // The commands the process manager ran carry the request's correlation
  // id, the triggering event as causation and a command id derived from it.
  const std::string schema = f.schema().name();
  CHECK(f.schema().QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", schema, ".events d JOIN ", schema,
            ".events r ON r.stream_id = 'transfer-t-1' AND r.event_type = "
            "'TransferRequested' WHERE d.stream_id = 'account-a' AND "
            "d.event_type = 'AccountDebitedForTransfer' AND "
            "d.metadata->>'causation_id' = r.event_id::text AND "
            "d.metadata->>'correlation_id' = r.metadata->>'correlation_id' "
            "AND d.metadata->>'command_id' = 'transfer_process:' || "
            "r.event_id::text || ':debit'")) == 1);
}

TEST_CASE("a transfer the source cannot pay fails and moves nothing",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  Open(f, "poor");
  Open(f, "rich");
  Open(f, "shut");
  Deposit(f, "poor", 50);
  REQUIRE(f.Post("/accounts/shut/close", "{}").status == 200);

  rapidjson::Document t =
      Settled(f, "t-poor", Transfer(f, "poor", "rich", 51, "t-poor"));
  CHECK(std::string(t["status"].GetString()) == "failed");
  CHECK(std::string(t["reason"].GetString()) == "insufficient_funds");
  rapidjson::Document c =
      Settled(f, "t-shut", Transfer(f, "shut", "rich", 1, "t-shut"));
  CHECK(std::string(c["reason"].GetString()) == "account_closed");
  CHECK(Account(f, "poor")["balance"].GetInt64() == 50);
  CHECK(Account(f, "rich")["balance"].GetInt64() == 0);
  CHECK(Movements(f, "poor").size() == 2);
  auto stats = Parse(f.Get("/stats").body);
  CHECK(stats["transfers"]["failed"].GetInt64() == 2);
}

TEST_CASE("a transfer the target cannot take is refunded, then fails",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  Open(f, "src");
  Open(f, "closed-dst");
  Open(f, "usd-dst", "Bob", "USD");
  REQUIRE(f.Post("/accounts/closed-dst/close", "{}").status == 200);
  Deposit(f, "src", 900);
  struct Case {
    std::string to, id, reason;
  };
  for (const Case& c : {Case{"nobody", "t-missing", "account_not_found"},
                        Case{"closed-dst", "t-closed", "account_closed"},
                        Case{"usd-dst", "t-usd", "currency_mismatch"}}) {
    INFO(c.id);
    rapidjson::Document t =
        Settled(f, c.id, Transfer(f, "src", c.to, 100, c.id));
    CHECK(std::string(t["status"].GetString()) == "failed");
    CHECK(std::string(t["reason"].GetString()) == c.reason);
  }
  CHECK(Account(f, "src")["balance"].GetInt64() == 900);
  CHECK(Account(f, "usd-dst")["balance"].GetInt64() == 0);
  auto moves = Movements(f, "src");
  REQUIRE(moves.size() == 8);  // opened, deposit, 3 x (transfer_out, refund)
  CHECK(moves[2].first == "transfer_out");
  CHECK(moves[3] ==
        std::make_pair(std::string("refund"), std::string("t-missing")));
  // No transfer both completed and refunded.
  const std::string schema = f.schema().name();
  CHECK(f.schema().QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", schema,
            ".transfers WHERE refunded AND status <> 'failed'")) == 0);
}

TEST_CASE("POST /transfers refuses bad requests and appends nothing",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  Open(f, "x");
  Open(f, "y");
  const std::string schema = f.schema().name();
  const long long before = f.schema().QueryInt(
      absl::StrCat("SELECT count(*) FROM ", schema, ".events"));
  struct Bad {
    std::string body;
    int status;
    std::string code;
  };
  for (const Bad& b :
       {Bad{R"({"from":"x","to":"x","amount":1})", 400, "invalid_request"},
        Bad{R"({"from":"ghost","to":"y","amount":1})", 404,
            "account_not_found"},
        Bad{R"({"from":"x","to":"y","amount":0})", 400, "invalid_request"},
        Bad{R"({"from":"x","to":"y","amount":1000000000000001})", 400,
            "invalid_request"},
        Bad{R"({"from":"x","to":"y"})", 400, "invalid_request"},
        Bad{R"({"from":"x","to":"y","amount":1,"extra":1})", 400,
            "invalid_request"},
        Bad{R"({"from":"x","to":"bad id","amount":1})", 400, "invalid_request"},
        Bad{R"({"from":"x","to":"y","amount":1,"transfer_id":"no/slash"})", 400,
            "invalid_request"},
        Bad{R"({"from":"x",)", 400, "invalid_json"}}) {
    INFO(b.body);
    auto r = f.Post("/transfers", b.body);
    CHECK(r.status == b.status);
    CHECK(ErrorCode(r) == b.code);
  }
  CHECK(f.schema().QueryInt(absl::StrCat("SELECT count(*) FROM ", schema,
                                         ".events")) == before);
  Transfer(f, "x", "y", 1, "dup");
  auto again = f.Post(
      "/transfers", R"({"from":"x","to":"y","amount":1,"transfer_id":"dup"})");
  CHECK(again.status == 409);
  CHECK(ErrorCode(again) == "transfer_exists");
  auto missing = f.Get("/transfers/none");
  CHECK(missing.status == 404);
  CHECK(ErrorCode(missing) == "transfer_not_found");
}

TEST_CASE("re-delivered transfer events never move money twice",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  Open(f, "r1");
  Open(f, "r2");
  Deposit(f, "r1", 500);
  for (int i = 0; i < 5; ++i) {
    const std::string id = absl::StrCat("rt-", i);
    Settled(f, id, Transfer(f, "r1", "r2", 10, id));
  }
  const std::string schema = f.schema().name();
  const std::string events =
      absl::StrCat("SELECT count(*) FROM ", schema, ".events");
  const long long before = f.schema().QueryInt(events);
  // Move the process manager's checkpoint back to the start: it reads
  // every transfer event again.
  f.schema().Exec(absl::StrCat(
      "UPDATE ", schema,
      ".projections SET position_xid = '0'::xid8, position_gp = 0 WHERE "
      "name = 'transfer_process'"));
  // The runner notices the moved checkpoint at its next batch: give it one.
  Open(f, "poke");
  // Wait until it has gone through them again (its checkpoint is back at
  // the head of the transfer events).
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (f.schema().QueryInt(absl::StrCat(
             "SELECT count(*) FROM ", schema,
             ".projections p WHERE name = "
             "'transfer_process' AND (p.position_xid, p.position_gp) >= "
             "(SELECT transaction_id, global_position FROM ",
             schema,
             ".events WHERE stream_id LIKE 'transfer-%' ORDER BY "
             "transaction_id DESC, global_position DESC LIMIT 1)")) == 0) {
    REQUIRE(absl::Now() < deadline);
    absl::SleepFor(absl::Milliseconds(50));
  }
  CHECK(f.schema().QueryInt(events) == before + 1);  // the poke only
  CHECK(Account(f, "r1")["balance"].GetInt64() == 450);
  CHECK(Account(f, "r2")["balance"].GetInt64() == 50);
}

TEST_CASE("money is neither created nor lost under concurrent transfers",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  constexpr int kAccounts = 8;
  for (int i = 0; i < kAccounts; ++i) {
    Open(f, absl::StrCat("m-", i), "M", i == 7 ? "USD" : "EUR");
  }
  REQUIRE(f.Post("/accounts/m-6/close", "{}").status == 200);
  std::atomic<int64_t> deposited{0};
  std::atomic<int64_t> withdrawn{0};
  std::atomic<int> transfers{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      auto client = f.Client();
      std::mt19937 rng(c);
      for (int n = 0; n < 60; ++n) {
        const int a = static_cast<int>(rng() % kAccounts);
        const int b = static_cast<int>(rng() % (kAccounts + 1));  // 8: none
        const int64_t amount = 1 + static_cast<int64_t>(rng() % 100);
        const int kind = static_cast<int>(rng() % 3);
        const http::HeaderList json = {{"Content-Type", "application/json"}};
        if (kind == 0) {
          auto r =
              client->Send("POST", absl::StrCat("/accounts/m-", a, "/deposit"),
                           absl::StrCat(R"({"amount":)", amount, "}"), json);
          REQUIRE(r.ok());
          if (r->status == 200) deposited += amount;
        } else if (kind == 1) {
          auto r =
              client->Send("POST", absl::StrCat("/accounts/m-", a, "/withdraw"),
                           absl::StrCat(R"({"amount":)", amount, "}"), json);
          REQUIRE(r.ok());
          if (r->status == 200) withdrawn += amount;
        } else if (a != b) {
          auto r =
              client->Send("POST", "/transfers",
                           absl::StrCat(R"({"from":"m-)", a, R"(","to":"m-)", b,
                                        R"(","amount":)", amount, "}"),
                           json);
          REQUIRE(r.ok());
          REQUIRE(r->status == 202);
          ++transfers;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  const std::string schema = f.schema().name();
  // Quiet: every transfer settles.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (f.schema().QueryInt(
             absl::StrCat("SELECT count(*) FROM ", schema,
                          ".events WHERE event_type = 'TransferRequested'")) !=
         f.schema().QueryInt(
             absl::StrCat("SELECT count(*) FROM ", schema,
                          ".events WHERE event_type IN ('TransferCompleted', "
                          "'TransferFailed')"))) {
    REQUIRE(absl::Now() < deadline);
    absl::SleepFor(absl::Milliseconds(50));
  }
  auto stats = [&] {
    // Read with a position after everything.
    const std::string at = Open(f, "last-scratch");
    auto r = f.Get("/stats", AtLeast(at));
    REQUIRE(r.status == 200);
    return Parse(r.body);
  }();
  const int64_t total = stats["total_balance"]["EUR"].GetInt64() +
                        stats["total_balance"]["USD"].GetInt64();
  CHECK(total == deposited - withdrawn);
  CHECK(stats["transfers"]["pending"].GetInt64() == 0);
  CHECK(stats["transfers"]["completed"].GetInt64() +
            stats["transfers"]["failed"].GetInt64() ==
        transfers);
  CHECK(f.schema().QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", schema,
            ".transfers WHERE refunded AND status = 'completed'")) == 0);
  // The read model agrees with the event store about every balance.
  CHECK(f.schema().QueryInt(
            absl::StrCat("SELECT coalesce(sum(balance), 0) FROM ", schema,
                         ".account_balances")) == deposited - withdrawn);
}

}  // namespace
}  // namespace bank

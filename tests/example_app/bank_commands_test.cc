// The bank's command routes over real HTTP against the test PostgreSQL:
// every status and error code of the contract, If-Match, Idempotency-Key,
// concurrency, and bad input that must change nothing.
#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "app/app.h"
#include "app/app_server.h"
#include "example_app/bank_app.h"
#include "framework/http/server.h"
#include "framework/uuid.h"
#include "rapidjson/document.h"
#include "tests/example_app/service_fixture.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/test_database.h"

namespace bank {
namespace {

namespace http = cqrs::http;
using cqrs::http_test::ClientResponse;
using cqrs::http_test::TestClient;

const http::HeaderList kJson = {{"Content-Type", "application/json"}};

http::HeaderList Json(http::HeaderList extra) {
  extra.emplace_back("Content-Type", "application/json");
  return extra;
}

// The bank's command side on its own schema, served on an ephemeral port
// (its projections do not run: these tests read the events).
class BankFixture {
 public:
  BankFixture() {
    DeclareBank(app_);
    REQUIRE(cqrs::MigrateApp(schema_.pool(), schema_.name()).ok());
    cqrs::ServeOptions options;
    options.schema = schema_.name();
    options.worker_threads = 16;
    options.run_projections = false;
    auto server = cqrs::AppServer::Start(app_, &schema_.pool(), options);
    INFO(server.status().ToString());
    REQUIRE(server.ok());
    server_ = *std::move(server);
    token_ = cqrs::testing::CreateToken(schema_.pool(), schema_.name());
  }
  ~BankFixture() { server_->Stop(); }

  // The id of the key every client sends (the events' actor).
  std::string KeyId() const { return token_.substr(5, 12); }

  std::unique_ptr<TestClient> Client() {
    auto client = TestClient::Connect(server_->port());
    REQUIRE(client.ok());
    (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(token_));
    return *std::move(client);
  }

  ClientResponse Post(const std::string& target, const std::string& body,
                      http::HeaderList headers = kJson) {
    auto client = Client();
    auto r = client->Send("POST", target, body, headers);
    REQUIRE(r.ok());
    return *std::move(r);
  }

  // Every event in the store, for "nothing changed" assertions.
  long long EventCount() {
    return schema_.QueryInt(
        absl::StrCat("SELECT count(*) FROM ", schema_.name(), ".events"));
  }

  long long QueryInt(const std::string& sql) { return schema_.QueryInt(sql); }
  const std::string& schema() const { return schema_.name(); }

 private:
  cqrs::testing::TestSchema schema_{40};
  cqrs::App app_{"bank"};
  std::unique_ptr<cqrs::AppServer> server_;
  std::string token_;
};

void Open(BankFixture& f, const std::string& id,
          const std::string& currency = "EUR") {
  auto r = f.Post("/accounts",
                  absl::StrCat(R"({"owner":"Ann","currency":")", currency,
                               R"(","account_id":")", id, R"("})"));
  REQUIRE(r.status == 201);
}

TEST_CASE("opening accounts", "[bank][pg]") {
  BankFixture f;
  auto given = f.Post("/accounts",
                      R"({"owner":"Ann","currency":"EUR","account_id":"a-1"})");
  REQUIRE(given.status == 201);
  rapidjson::Document doc = Parse(given.body);
  CHECK(std::string(doc["account_id"].GetString()) == "a-1");
  CHECK(doc["version"].GetInt64() == 1);
  CHECK(doc["position"].IsString());

  auto generated = f.Post("/accounts", R"({"owner":"Bob","currency":"USD"})");
  REQUIRE(generated.status == 201);
  CHECK(cqrs::IsUuid(Parse(generated.body)["account_id"].GetString()));

  const long long before = f.EventCount();
  auto again = f.Post("/accounts",
                      R"({"owner":"Eve","currency":"EUR","account_id":"a-1"})");
  CHECK(again.status == 409);
  CHECK(ErrorCode(again) == "account_exists");
  CHECK(f.EventCount() == before);
}

TEST_CASE("deposits, withdrawals and closing follow the rules", "[bank][pg]") {
  BankFixture f;
  Open(f, "acc");
  auto dep = f.Post("/accounts/acc/deposit", R"({"amount":500})");
  REQUIRE(dep.status == 200);
  rapidjson::Document d = Parse(dep.body);
  CHECK(d["balance"].GetInt64() == 500);
  CHECK(d["version"].GetInt64() == 2);
  CHECK(std::string(d["account_id"].GetString()) == "acc");

  auto too_much = f.Post("/accounts/acc/withdraw", R"({"amount":501})");
  CHECK(too_much.status == 422);
  CHECK(ErrorCode(too_much) == "insufficient_funds");

  auto wd = f.Post("/accounts/acc/withdraw", R"({"amount":200})");
  REQUIRE(wd.status == 200);
  CHECK(Parse(wd.body)["balance"].GetInt64() == 300);

  auto not_empty = f.Post("/accounts/acc/close", "");
  CHECK(not_empty.status == 422);
  CHECK(ErrorCode(not_empty) == "account_not_empty");

  REQUIRE(f.Post("/accounts/acc/withdraw", R"({"amount":300})").status == 200);
  auto closed = f.Post("/accounts/acc/close", "", {});
  REQUIRE(closed.status == 200);
  CHECK(Parse(closed.body)["version"].GetInt64() == 5);

  const long long before = f.EventCount();
  for (const char* op : {"deposit", "withdraw"}) {
    auto r = f.Post(absl::StrCat("/accounts/acc/", op), R"({"amount":1})");
    CHECK(r.status == 422);
    CHECK(ErrorCode(r) == "account_closed");
  }
  auto close_again = f.Post("/accounts/acc/close", "{}");
  CHECK(close_again.status == 422);
  CHECK(ErrorCode(close_again) == "account_closed");

  for (const char* op : {"deposit", "withdraw"}) {
    auto r = f.Post(absl::StrCat("/accounts/nobody/", op), R"({"amount":1})");
    CHECK(r.status == 404);
    CHECK(ErrorCode(r) == "account_not_found");
  }
  auto close_missing = f.Post("/accounts/nobody/close", "{}");
  CHECK(close_missing.status == 404);
  CHECK(ErrorCode(close_missing) == "account_not_found");
  CHECK(f.EventCount() == before);
}

TEST_CASE("If-Match runs a command only at that version", "[bank][pg]") {
  BankFixture f;
  Open(f, "m");
  auto ok = f.Post("/accounts/m/deposit", R"({"amount":5})",
                   Json({{"If-Match", "1"}}));
  CHECK(ok.status == 200);
  auto quoted = f.Post("/accounts/m/deposit", R"({"amount":5})",
                       Json({{"If-Match", "\"2\""}}));
  CHECK(quoted.status == 200);
  const long long before = f.EventCount();
  auto stale = f.Post("/accounts/m/deposit", R"({"amount":5})",
                      Json({{"If-Match", "2"}}));
  CHECK(stale.status == 409);
  CHECK(ErrorCode(stale) == "version_conflict");
  CHECK(absl::StrContains(stale.body, "current version 3"));
  auto garbage = f.Post("/accounts/m/deposit", R"({"amount":5})",
                        Json({{"If-Match", "abc"}}));
  CHECK(garbage.status == 400);
  CHECK(ErrorCode(garbage) == "invalid_request");
  CHECK(f.EventCount() == before);
}

TEST_CASE("Idempotency-Key replays byte for byte and refuses reuse",
          "[bank][pg]") {
  BankFixture f;
  Open(f, "i");
  auto first = f.Post("/accounts/i/deposit", R"({"amount":7})",
                      Json({{"Idempotency-Key", "dep-1"}}));
  REQUIRE(first.status == 200);
  const long long after_first = f.EventCount();
  auto retry = f.Post("/accounts/i/deposit", R"({"amount":7})",
                      Json({{"Idempotency-Key", "dep-1"}}));
  CHECK(retry.status == 200);
  CHECK(retry.body == first.body);
  CHECK(retry.Header("Idempotent-Replayed") == std::string("true"));
  CHECK(f.EventCount() == after_first);

  auto reused = f.Post("/accounts/i/deposit", R"({"amount":8})",
                       Json({{"Idempotency-Key", "dep-1"}}));
  CHECK(reused.status == 422);
  CHECK(ErrorCode(reused) == "idempotency_key_reused");
  auto other_route = f.Post("/accounts/i/withdraw", R"({"amount":7})",
                            Json({{"Idempotency-Key", "dep-1"}}));
  CHECK(other_route.status == 422);
  CHECK(ErrorCode(other_route) == "idempotency_key_reused");

  // A failed first execution is replayed as well.
  auto failed = f.Post("/accounts/i/withdraw", R"({"amount":1000})",
                       Json({{"Idempotency-Key", "wd-1"}}));
  CHECK(failed.status == 422);
  auto failed_again = f.Post("/accounts/i/withdraw", R"({"amount":1000})",
                             Json({{"Idempotency-Key", "wd-1"}}));
  CHECK(failed_again.status == 422);
  CHECK(failed_again.body == failed.body);

  auto bad_key = f.Post("/accounts/i/deposit", R"({"amount":7})",
                        Json({{"Idempotency-Key", std::string(201, 'k')}}));
  CHECK(bad_key.status == 400);
  CHECK(f.EventCount() == after_first);
}

TEST_CASE("an Idempotency-Key identifies the request, not its spelling",
          "[bank][pg]") {
  BankFixture f;
  Open(f, "a1");
  auto first = f.Post("/accounts/a1/deposit", R"({"amount":7})",
                      Json({{"Idempotency-Key", "spell-1"}}));
  REQUIRE(first.status == 200);
  const long long after_first = f.EventCount();
  // The same request with an encoded path and an ignored query string.
  for (const char* target :
       {"/accounts/%61%31/deposit", "/accounts/a1/deposit?x=1"}) {
    INFO(target);
    auto same = f.Post(target, R"({"amount":7})",
                       Json({{"Idempotency-Key", "spell-1"}}));
    CHECK(same.status == 200);
    CHECK(same.body == first.body);
    CHECK(same.Header("Idempotent-Replayed") == std::string("true"));
  }
  CHECK(f.EventCount() == after_first);
  // If-Match changes what the request does: not the same request.
  auto other_version =
      f.Post("/accounts/a1/deposit", R"({"amount":7})",
             Json({{"Idempotency-Key", "spell-1"}, {"If-Match", "2"}}));
  CHECK(other_version.status == 422);
  CHECK(ErrorCode(other_version) == "idempotency_key_reused");
  CHECK(f.EventCount() == after_first);
}

TEST_CASE("a 409 version_conflict is not replayed for its Idempotency-Key",
          "[bank][pg]") {
  BankFixture f;
  Open(f, "vc");
  // The account is at version 1; the request wants version 2.
  auto early = f.Post("/accounts/vc/deposit", R"({"amount":5})",
                      Json({{"Idempotency-Key", "vc-1"}, {"If-Match", "2"}}));
  CHECK(early.status == 409);
  CHECK(ErrorCode(early) == "version_conflict");
  REQUIRE(f.Post("/accounts/vc/deposit", R"({"amount":1})").status == 200);
  // Now it can run: the retry executes instead of replaying the 409.
  auto retry = f.Post("/accounts/vc/deposit", R"({"amount":5})",
                      Json({{"Idempotency-Key", "vc-1"}, {"If-Match", "2"}}));
  CHECK(retry.status == 200);
  CHECK(!retry.Header("Idempotent-Replayed").has_value());
  CHECK(absl::StrContains(retry.body, R"("balance":6)"));
  auto replay = f.Post("/accounts/vc/deposit", R"({"amount":5})",
                       Json({{"Idempotency-Key", "vc-1"}, {"If-Match", "2"}}));
  CHECK(replay.status == 200);
  CHECK(replay.body == retry.body);
}

TEST_CASE("20 concurrent requests with one Idempotency-Key run once",
          "[bank][pg]") {
  BankFixture f;
  Open(f, "c");
  std::vector<std::string> bodies(20);
  std::vector<int> statuses(20, 0);
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < 20; ++i) clients.push_back(f.Client());
  for (int i = 0; i < 20; ++i) {
    threads.emplace_back([&, i] {
      auto r =
          clients[i]->Send("POST", "/accounts/c/deposit", R"({"amount":3})",
                           Json({{"Idempotency-Key", "same-key"}}));
      if (r.ok()) {
        statuses[i] = r->status;
        bodies[i] = r->body;
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int s : statuses) CHECK(s == 200);
  CHECK(std::set<std::string>(bodies.begin(), bodies.end()).size() == 1);
  CHECK(f.QueryInt(absl::StrCat("SELECT count(*) FROM ", f.schema(),
                                ".events WHERE stream_id = 'account-c' AND "
                                "event_type = 'MoneyDeposited'")) == 1);
}

TEST_CASE("16 threads deposit into one account without If-Match",
          "[bank][pg]") {
  BankFixture f;
  Open(f, "hot");
  constexpr int kThreads = 16;
  constexpr int kEach = 10;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < kThreads; ++i) clients.push_back(f.Client());
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto r = clients[t]->Send(
            "POST", "/accounts/hot/deposit",
            absl::StrCat(R"({"amount":)", t * 100 + i + 1, "}"), kJson);
        if (!r.ok() || r->status != 200) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  long long expected_balance = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kEach; ++i) expected_balance += t * 100 + i + 1;
  }
  auto last = f.Post("/accounts/hot/deposit", R"({"amount":1})");
  REQUIRE(last.status == 200);
  rapidjson::Document d = Parse(last.body);
  CHECK(d["version"].GetInt64() == 1 + kThreads * kEach + 1);
  CHECK(d["balance"].GetInt64() == expected_balance + 1);
  // Each deposit's event is in the stream exactly once.
  CHECK(f.QueryInt(absl::StrCat(
            "SELECT count(DISTINCT data->>'amount') FROM ", f.schema(),
            ".events WHERE stream_id = 'account-hot' AND event_type = "
            "'MoneyDeposited'")) == kThreads * kEach);
  CHECK(f.QueryInt(absl::StrCat("SELECT count(*) FROM ", f.schema(),
                                ".events WHERE stream_id = 'account-hot'")) ==
        1 + kThreads * kEach + 1);
}

TEST_CASE("bad input gets the contract's error and appends nothing",
          "[bank][pg]") {
  BankFixture f;
  Open(f, "b");
  REQUIRE(f.Post("/accounts/b/deposit", R"({"amount":10})").status == 200);
  const long long before = f.EventCount();

  struct Case {
    std::string target;
    std::string body;
    int status;
    std::string code;
  };
  const std::string big(static_cast<size_t>(1 << 20) + 10, ' ');
  const std::vector<Case> cases = {
      {"/accounts/b/deposit", "{\"amount\":", 400, "invalid_json"},
      {"/accounts/b/deposit", "not json", 400, "invalid_json"},
      {"/accounts/b/deposit", "[1]", 400, "invalid_request"},
      {"/accounts/b/deposit", R"({"amount":"5"})", 400, "invalid_request"},
      {"/accounts/b/deposit", R"({"amount":1.5})", 400, "invalid_request"},
      {"/accounts/b/deposit", R"({"amount":true})", 400, "invalid_request"},
      {"/accounts/b/deposit", R"({})", 400, "invalid_request"},
      {"/accounts/b/deposit", R"({"amount":0})", 400, "invalid_request"},
      {"/accounts/b/withdraw", R"({"amount":-5})", 400, "invalid_request"},
      {"/accounts/b/deposit", R"({"amount":1000000000000001})", 400,
       "invalid_request"},
      {"/accounts/b/deposit", R"({"amount":99999999999999999999})", 400,
       "invalid_request"},
      {"/accounts/b/deposit", R"({"amount":5,"extra":1})", 400,
       "invalid_request"},
      {"/accounts/b/deposit", "", 400, "invalid_json"},
      {"/accounts/b.c/deposit", R"({"amount":5})", 400, "invalid_request"},
      {absl::StrCat("/accounts/", std::string(65, 'x'), "/deposit"),
       R"({"amount":5})", 400, "invalid_request"},
      {"/accounts", R"({"owner":"A","currency":"eur"})", 400,
       "invalid_request"},
      {"/accounts", R"({"owner":"A","currency":"EURO"})", 400,
       "invalid_request"},
      {"/accounts", R"({"owner":"","currency":"EUR"})", 400, "invalid_request"},
      {"/accounts",
       absl::StrCat(R"({"owner":")", std::string(201, 'o'),
                    R"(","currency":"EUR"})"),
       400, "invalid_request"},
      {"/accounts", R"({"currency":"EUR"})", 400, "invalid_request"},
      {"/accounts", R"({"owner":"A","currency":"EUR","account_id":"a b"})", 400,
       "invalid_request"},
      {"/accounts", R"({"owner":"A","currency":"EUR","account_id":""})", 400,
       "invalid_request"},
      {"/accounts/b/close", R"({"force":true})", 400, "invalid_request"},
      // NUL bytes: raw in the body (RapidJSON would stop reading there),
      // percent-encoded in the path or query, escaped in a string.
      {"/accounts/b/deposit", std::string("{\"amount\":5}\0garbage", 20), 400,
       "invalid_request"},
      {"/accounts/b/deposit", std::string("{\"amount\":5}\0", 13), 400,
       "invalid_request"},
      {"/accounts/b%00/deposit", R"({"amount":5})", 400, "invalid_request"},
      {"/accounts/b/deposit?x=%00", R"({"amount":5})", 400, "invalid_request"},
      {"/accounts", R"({"owner":"A\u0000","currency":"EUR"})", 400,
       "invalid_request"},
      {"/accounts", R"({"owner":"A","currency":"EUR","account_id":"x\u0000"})",
       400, "invalid_request"},
      {"/accounts/b/deposit", big, 413, "payload_too_large"},
      {"/nowhere", "{}", 404, "not_found"},
      {"/accounts/b/explode", "{}", 404, "not_found"},
  };
  for (const Case& c : cases) {
    INFO(c.target << " " << c.body.substr(0, 80));
    auto r = f.Post(c.target, c.body);
    CHECK(r.status == c.status);
    CHECK(ErrorCode(r) == c.code);
  }

  auto client = f.Client();
  auto wrong_method = client->Send("GET", "/accounts/b/deposit");
  REQUIRE(wrong_method.ok());
  CHECK(wrong_method->status == 405);
  CHECK(ErrorCode(*wrong_method) == "method_not_allowed");
  CHECK(wrong_method->Header("Allow") == std::string("OPTIONS, POST"));

  auto text = f.Post("/accounts/b/deposit", R"({"amount":5})",
                     {{"Content-Type", "text/plain"}});
  CHECK(text.status == 415);
  CHECK(ErrorCode(text) == "unsupported_media_type");

  CHECK(f.EventCount() == before);
}

TEST_CASE("a request body naming a field twice is refused", "[bank][pg]") {
  BankFixture f;
  const long long before = f.EventCount();
  for (
      const char* body :
      {R"({"owner":"a","owner":"b","currency":"EUR","account_id":"dup"})",
       R"({"owner":"a","currency":"EUR","account_id":"dup","currency":"USD"})",
       R"({"owner":"a","currency":"EUR","account_id":"dup","account_id":"x"})"}) {
    INFO(body);
    auto r = f.Post("/accounts", body);
    CHECK(r.status == 400);
    CHECK(ErrorCode(r) == "invalid_request");
    CHECK(absl::StrContains(r.body, "duplicate field"));
  }
  CHECK(f.EventCount() == before);
  // No account was opened: the same body without the repeat opens it (201,
  // not 409 account_exists).
  CHECK(f.Post("/accounts",
               R"({"owner":"a","currency":"EUR","account_id":"dup"})")
            .status == 201);
}

TEST_CASE("correlation ids are echoed and stamped into events", "[bank][pg]") {
  BankFixture f;
  auto r = f.Post("/accounts",
                  R"({"owner":"C","currency":"EUR","account_id":"corr"})",
                  Json({{"X-Correlation-Id", "trace-42"}}));
  REQUIRE(r.status == 201);
  CHECK(r.Header("X-Correlation-Id") == std::string("trace-42"));
  CHECK(f.QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", f.schema(),
            ".events WHERE stream_id = 'account-corr' AND "
            "metadata->>'correlation_id' = 'trace-42' AND "
            "metadata->>'command_id' IS NOT NULL AND "
            "metadata->>'causation_id' = metadata->>'command_id' AND "
            // No authentication on this server: nobody in particular.
            "metadata->>'actor' = '",
            f.KeyId(),
            "' AND "
            "metadata->>'on_behalf_of' IS NULL")) == 1);
}

TEST_CASE("healthz and readyz", "[bank][pg]") {
  BankFixture f;
  auto client = f.Client();
  auto health = client->Send("GET", "/healthz");
  REQUIRE(health.ok());
  CHECK(health->status == 200);
  auto ready = client->Send("GET", "/readyz");
  REQUIRE(ready.ok());
  CHECK(ready->status == 200);
  // The same app on a schema whose tables are gone is not ready.
  cqrs::testing::TestSchema other;
  other.Exec(absl::StrCat("DROP SCHEMA ", f.schema(), " CASCADE"));
  auto not_ready = client->Send("GET", "/readyz");
  REQUIRE(not_ready.ok());
  CHECK(not_ready->status == 503);
}

}  // namespace
}  // namespace bank

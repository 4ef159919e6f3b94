// The bank's read side over real HTTP against the test PostgreSQL: every
// query route and error code, cursor walks while rows are added,
// read-your-writes (in-process projections, projections in "another
// process", and none: 503), /metrics, /projections and /openapi.json.
#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "eventstore/position.h"
#include "example_app/bank_app.h"
#include "example_app/bank_projections.h"
#include "framework/http/message.h"
#include "framework/http/server.h"
#include "projections/rebuild.h"
#include "projections/runner.h"
#include "rapidjson/document.h"
#include "tests/example_app/service_fixture.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/prometheus_text.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace bank {
namespace {

namespace http = cqrs::http;
using cqrs::http_test::ClientResponse;
using cqrs::http_test::TestClient;

const http::HeaderList kJson = {{"Content-Type", "application/json"}};

// A token the projections have not reached: the next transaction's.
std::string FuturePosition(const std::string& token) {
  auto p = cqrs::eventstore::Position::FromToken(token);
  REQUIRE(p.ok());
  p->transaction_id += 1000000;
  return p->ToToken();
}

TEST_CASE("GET /accounts/{id} answers from account_balances",
          "[bank][queries][pg]") {
  ServiceFixture f;
  const std::string opened = Open(f, "acc-1", "Ann", "EUR");
  Moved moved = Deposit(f, "acc-1", 1234);

  auto r = f.Get("/accounts/acc-1", AtLeast(moved.position));
  REQUIRE(r.status == 200);
  rapidjson::Document doc = Parse(r.body);
  CHECK(std::string(doc["account_id"].GetString()) == "acc-1");
  CHECK(std::string(doc["owner"].GetString()) == "Ann");
  CHECK(std::string(doc["currency"].GetString()) == "EUR");
  CHECK(doc["balance"].GetInt64() == 1234);
  CHECK(std::string(doc["status"].GetString()) == "open");
  CHECK(doc["version"].GetInt64() == 2);
  REQUIRE(r.Header("X-Projection-Position").has_value());
  auto at =
      cqrs::eventstore::Position::FromToken(*r.Header("X-Projection-Position"));
  REQUIRE(at.ok());
  CHECK(*cqrs::eventstore::Position::FromToken(moved.position) <= *at);

  REQUIRE(f.Post("/accounts/acc-1/withdraw", R"({"amount":1234})").status ==
          200);
  auto closed = f.Post("/accounts/acc-1/close", "{}");
  REQUIRE(closed.status == 200);
  r = f.Get("/accounts/acc-1",
            AtLeast(Parse(closed.body)["position"].GetString()));
  REQUIRE(r.status == 200);
  CHECK(std::string(Parse(r.body)["status"].GetString()) == "closed");

  auto missing = f.Get("/accounts/nobody");
  CHECK(missing.status == 404);
  CHECK(ErrorCode(missing) == "account_not_found");
  CHECK(missing.Header("X-Projection-Position").has_value());

  auto bad = f.Get("/accounts/bad%21id");
  CHECK(bad.status == 400);
  CHECK(ErrorCode(bad) == "invalid_request");
  CHECK(bad.Header("X-Projection-Position").has_value());

  auto post = f.Send("DELETE", "/accounts/acc-1");
  CHECK(post.status == 405);
  (void)opened;
}

TEST_CASE("concurrent reads of many accounts each get their own answer",
          "[bank][queries][pg]") {
  // Requests arriving together are answered in batches by one statement:
  // every response must still be the one for its own request.
  ServiceFixture f;
  std::string at;
  for (int i = 0; i < 40; ++i) {
    Open(f, absl::StrCat("c-", i), absl::StrCat("owner-", i));
    at = Deposit(f, absl::StrCat("c-", i), 100 + i).position;
  }
  REQUIRE(f.Get("/accounts/c-0", AtLeast(at)).status == 200);
  std::atomic<int> wrong{0};
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 16; ++t) {
    clients.emplace_back([&, t] {
      auto client = f.Client();
      for (int n = 0; n < 60; ++n) {
        const int i = (t * 7 + n * 13) % 50;  // 40..49 do not exist
        const bool invalid = n % 17 == 5;
        const std::string target =
            invalid ? "/accounts/bad%24id" : absl::StrCat("/accounts/c-", i);
        auto r = client->Send("GET", target);
        if (!r.ok()) {
          ++wrong;
          continue;
        }
        ++answered;
        rapidjson::Document doc;
        doc.Parse(r->body.c_str());
        if (invalid) {
          if (r->status != 400) ++wrong;
        } else if (i >= 40) {
          if (r->status != 404) ++wrong;
        } else if (r->status != 200 || doc.HasParseError() ||
                   doc["account_id"].GetString() != absl::StrCat("c-", i) ||
                   doc["owner"].GetString() != absl::StrCat("owner-", i) ||
                   doc["balance"].GetInt64() != 100 + i) {
          ++wrong;
        }
        if (!r->Header("X-Projection-Position").has_value()) ++wrong;
      }
    });
  }
  for (auto& c : clients) c.join();
  CHECK(answered == 16 * 60);
  CHECK(wrong == 0);
}

TEST_CASE("GET /accounts/{id}/transactions pages oldest first",
          "[bank][queries][pg]") {
  ServiceFixture f;
  Open(f, "t-1");
  std::string last;
  for (int i = 1; i <= 12; ++i) last = Deposit(f, "t-1", i * 10).position;
  REQUIRE(f.Post("/accounts/t-1/withdraw", R"({"amount":5})").status == 200);
  auto closing = f.Post("/accounts/t-1/withdraw", R"({"amount":775})");
  REQUIRE(closing.status == 200);
  auto closed = f.Post("/accounts/t-1/close", "");
  REQUIRE(closed.status == 200);
  const std::string at = Parse(closed.body)["position"].GetString();

  // 16 rows: opened, 12 deposits, 2 withdrawals, closed; pages of 5.
  std::vector<std::string> types;
  std::vector<int64_t> versions;
  std::string target = "/accounts/t-1/transactions?limit=5";
  int pages = 0;
  while (true) {
    auto r = f.Get(target, AtLeast(at));
    REQUIRE(r.status == 200);
    CHECK(r.Header("X-Projection-Position").has_value());
    rapidjson::Document doc = Parse(r.body);
    REQUIRE(doc["items"].IsArray());
    CHECK(doc["items"].Size() <= 5);
    for (const auto& item : doc["items"].GetArray()) {
      types.push_back(item["type"].GetString());
      versions.push_back(item["version"].GetInt64());
      CHECK(item["at"].IsString());
      CHECK(!item.HasMember("transfer_id"));
      if (types.back() == "deposit") {
        CHECK(item["amount"].GetInt64() == 10 * (versions.back() - 1));
      }
    }
    ++pages;
    if (doc["next"].IsNull()) break;
    target = absl::StrCat("/accounts/t-1/transactions?limit=5&after=",
                          doc["next"].GetString());
  }
  CHECK(pages == 4);
  REQUIRE(versions.size() == 16);
  for (size_t i = 0; i < versions.size(); ++i) {
    CHECK(versions[i] == static_cast<int64_t>(i + 1));
  }
  CHECK(types.front() == "opened");
  CHECK(types[1] == "deposit");
  CHECK(types[13] == "withdrawal");
  CHECK(types.back() == "closed");

  // The balance after each movement.
  auto all = f.Get("/accounts/t-1/transactions?limit=500");
  REQUIRE(all.status == 200);
  rapidjson::Document doc = Parse(all.body);
  CHECK(doc["items"].Size() == 16);
  CHECK(doc["next"].IsNull());
  CHECK(doc["items"][12]["balance_after"].GetInt64() == 780);
  CHECK(doc["items"][13]["balance_after"].GetInt64() == 775);
  CHECK(doc["items"][15]["balance_after"].GetInt64() == 0);

  auto missing = f.Get("/accounts/ghost/transactions");
  CHECK(missing.status == 404);
  CHECK(ErrorCode(missing) == "account_not_found");

  for (const char* bad : {"limit=0", "limit=501", "limit=-1", "limit=abc",
                          "limit=", "after=not-a-cursor", "after="}) {
    auto r = f.Get(absl::StrCat("/accounts/t-1/transactions?", bad));
    INFO(bad);
    CHECK(r.status == 400);
    CHECK(ErrorCode(r) == "invalid_request");
  }
  CHECK(f.Get("/accounts/t-1/transactions?limit=500").status == 200);
  CHECK(f.Get("/accounts/t-1/transactions?limit=1").status == 200);
}

http::Principal Key(std::string id, std::vector<std::string> scopes) {
  http::Principal key;
  key.id = std::move(id);
  key.scopes = std::move(scopes);
  return key;
}

// The member names of a JSON object, in order.
std::vector<std::string> Members(const rapidjson::Value& object) {
  std::vector<std::string> names;
  for (const auto& m : object.GetObject()) names.push_back(m.name.GetString());
  return names;
}

// A string member, or "<none>".
std::string Text(const rapidjson::Value& object, const char* name) {
  auto it = object.FindMember(name);
  if (it == object.MemberEnd() || !it->value.IsString()) return "<none>";
  return it->value.GetString();
}

// Who appended each transaction's event, for admin callers only. The
// requests carry the principal the server's authentication would set
// (ServiceFixture::SendAs), so commands record it as their actor.
TEST_CASE("GET /accounts/{id}/transactions shows actors to admin callers only",
          "[bank][queries][pg]") {
  ServiceFixture f;
  const http::Principal teller = Key("0123456789ab", {"commands"});
  const http::Principal clerk = Key("ba9876543210", {"commands"});
  const http::Principal reader = Key("aaaaaaaaaaaa", {"queries"});
  const http::Principal admin = Key("bbbbbbbbbbbb", {"queries", "admin"});

  Open(f, "who-a");  // over HTTP, with the fixture's key
  REQUIRE(
      f.SendAs(teller, "POST", "/accounts/who-a/deposit", R"({"amount":1000})")
          .status == 200);
  REQUIRE(f.SendAs(teller, "POST", "/accounts",
                   R"({"owner":"Bo","currency":"EUR","account_id":"who-b"})")
              .status == 201);
  http::Response requested =
      f.SendAs(clerk, "POST", "/transfers",
               R"({"from":"who-a","to":"who-b","amount":300,)"
               R"("transfer_id":"t-who"})");
  REQUIRE(requested.status == 202);
  const std::string at = Parse(requested.body)["position"].GetString();
  // Settled: completed; the log's head is then past its movements.
  REQUIRE(cqrs::testing::Eventually([&] {
    auto r = f.Get("/transfers/t-who", AtLeast(at));
    return r.status == 200 && Text(Parse(r.body), "status") == "completed";
  }));
  const std::string settled = f.schema().LogHead();

  // Without the admin scope, over HTTP and through the handler: the
  // contract's items, byte for byte the same.
  http::HeaderList queries_only =
      cqrs::testing::BearerHeader(cqrs::testing::CreateToken(
          f.schema().pool(), f.schema().name(), {"queries"}, "reader"));
  queries_only.push_back({"X-Min-Position", settled});
  const auto plain = f.Get("/accounts/who-a/transactions", queries_only);
  REQUIRE(plain.status == 200);
  const http::Response as_reader = f.SendAs(
      reader, "GET", "/accounts/who-a/transactions", "", AtLeast(settled));
  REQUIRE(as_reader.status == 200);
  CHECK(as_reader.body == plain.body);
  rapidjson::Document hidden = Parse(as_reader.body);
  REQUIRE(hidden["items"].Size() == 3);
  CHECK(Members(hidden["items"][1]) ==
        std::vector<std::string>{"type", "amount", "balance_after", "version",
                                 "at"});
  CHECK(Members(hidden["items"][2]) ==
        std::vector<std::string>{"type", "amount", "balance_after",
                                 "transfer_id", "version", "at"});

  // With it: actor, and on_behalf_of for the transfer process's movements.
  const http::Response as_admin = f.SendAs(
      admin, "GET", "/accounts/who-a/transactions", "", AtLeast(settled));
  REQUIRE(as_admin.status == 200);
  rapidjson::Document a = Parse(as_admin.body);
  REQUIRE(a["items"].Size() == 3);
  CHECK(Text(a["items"][0], "type") == "opened");
  // Opened over HTTP with the fixture's key.
  CHECK(Text(a["items"][0], "actor") == f.token().substr(5, 12));
  CHECK(Text(a["items"][1], "type") == "deposit");
  CHECK(Text(a["items"][1], "actor") == "0123456789ab");
  CHECK(Members(a["items"][1]) ==
        std::vector<std::string>{"type", "amount", "balance_after", "version",
                                 "at", "actor"});
  CHECK(Text(a["items"][2], "type") == "transfer_out");
  CHECK(Text(a["items"][2], "actor") == "process:transfer_process");
  CHECK(Text(a["items"][2], "on_behalf_of") == "ba9876543210");
  CHECK(Members(a["items"][2]) ==
        std::vector<std::string>{"type", "amount", "balance_after",
                                 "transfer_id", "version", "at", "actor",
                                 "on_behalf_of"});

  const http::Response b = f.SendAs(
      admin, "GET", "/accounts/who-b/transactions", "", AtLeast(settled));
  REQUIRE(b.status == 200);
  rapidjson::Document bd = Parse(b.body);
  REQUIRE(bd["items"].Size() == 2);
  CHECK(Text(bd["items"][0], "actor") == "0123456789ab");
  CHECK(Text(bd["items"][0], "on_behalf_of") == "<none>");
  CHECK(Text(bd["items"][1], "type") == "transfer_in");
  CHECK(Text(bd["items"][1], "actor") == "process:transfer_process");
  CHECK(Text(bd["items"][1], "on_behalf_of") == "ba9876543210");
  const http::Response b_hidden = f.SendAs(
      reader, "GET", "/accounts/who-b/transactions", "", AtLeast(settled));
  CHECK(!absl::StrContains(b_hidden.body, "actor"));
  CHECK(!absl::StrContains(b_hidden.body, "on_behalf_of"));
}

TEST_CASE(
    "GET /accounts lists by owner and walks every row once while rows "
    "are added",
    "[bank][queries][pg]") {
  ServiceFixture f;
  std::set<std::string> before;
  std::string at;
  for (int i = 0; i < 60; ++i) {
    const std::string id = absl::StrCat("w-", i * 2);  // gaps for newcomers
    at = Open(f, id, "Walker");
    before.insert(id);
  }
  Open(f, "someone-else", "Other");
  at = Open(f, "zz-other", "Other");

  // Opens more of Walker's accounts, between and after the existing ones,
  // while the walk runs.
  std::atomic<bool> stop{false};
  std::atomic<int> unanswered{0};  // checked after the join (no Catch2 here)
  std::thread writer([&] {
    auto client = f.Client();
    for (int i = 0; !stop && i < 200; ++i) {
      auto r = client->Send(
          "POST", "/accounts",
          absl::StrCat(R"({"owner":"Walker","currency":"EUR","account_id":")",
                       "w-", i * 2 + 1, R"("})"),
          kJson);
      if (!r.ok()) ++unanswered;
    }
  });
  std::multiset<std::string> seen;
  std::string previous;
  std::string target = "/accounts?owner=Walker&limit=7";
  while (true) {
    auto r = f.Get(target, AtLeast(at));
    REQUIRE(r.status == 200);
    rapidjson::Document doc = Parse(r.body);
    for (const auto& item : doc["items"].GetArray()) {
      const std::string id = item["account_id"].GetString();
      CHECK(std::string(item["owner"].GetString()) == "Walker");
      CHECK(id > previous);  // stable order, no repeats
      previous = id;
      seen.insert(id);
    }
    if (doc["next"].IsNull()) break;
    target = absl::StrCat("/accounts?owner=Walker&limit=7&after=",
                          doc["next"].GetString());
  }
  stop = true;
  writer.join();
  CHECK(unanswered == 0);
  for (const std::string& id : before) CHECK(seen.count(id) == 1);
  for (const std::string& id : seen) CHECK(seen.count(id) == 1);

  // Without owner: everyone, in id order.
  auto all = f.Get("/accounts?limit=500", AtLeast(at));
  REQUIRE(all.status == 200);
  rapidjson::Document doc = Parse(all.body);
  std::set<std::string> owners;
  for (const auto& item : doc["items"].GetArray()) {
    owners.insert(item["owner"].GetString());
  }
  CHECK(owners == std::set<std::string>{"Other", "Walker"});

  auto nobody = f.Get("/accounts?owner=Nobody");
  REQUIRE(nobody.status == 200);
  CHECK(Parse(nobody.body)["items"].Size() == 0);
  CHECK(Parse(nobody.body)["next"].IsNull());
  CHECK(f.Get("/accounts?owner=").status == 400);
  CHECK(f.Get(absl::StrCat("/accounts?owner=", std::string(201, 'x'))).status ==
        400);
  CHECK(f.Get("/accounts?limit=501").status == 400);
  CHECK(f.Get("/accounts?after=%%%").status == 400);
}

TEST_CASE("a NUL byte in a query or a command is refused and changes nothing",
          "[bank][queries][pg]") {
  using namespace std::string_literals;
  ServiceFixture f;
  Open(f, "nul-1", "Ann", "EUR");
  const Moved moved = Deposit(f, "nul-1", 10);
  auto ann = f.Get("/accounts?owner=Ann", AtLeast(moved.position));
  REQUIRE(ann.status == 200);
  REQUIRE(Parse(ann.body)["items"].Size() == 1);

  // "Ann%00x" once listed Ann's accounts (libpq read the parameter as the
  // C string "Ann").
  for (const char* target : {"/accounts?owner=Ann%00x", "/accounts?owner=%00",
                             "/accounts/nul-1%00", "/accounts/nul-1?x=%00"}) {
    INFO(target);
    auto r = f.Get(target);
    CHECK(r.status == 400);
    CHECK(ErrorCode(r) == "invalid_request");
  }

  // {"amount":5} followed by a NUL was once read as a deposit of 5.
  for (const std::string& body :
       {"{\"amount\":5}\0{\"amount\":7}garbage"s, "{\"amount\":5}\0"s}) {
    auto r = f.Post("/accounts/nul-1/deposit", body);
    CHECK(r.status == 400);
    CHECK(ErrorCode(r) == "invalid_request");
  }
  // A U+0000 escape inside a string field: a clean 400, not a 500 from
  // PostgreSQL.
  auto opened = f.Post("/accounts", R"({"owner":"A\u0000B","currency":"EUR"})");
  CHECK(opened.status == 400);
  CHECK(ErrorCode(opened) == "invalid_request");

  // The balance is what it was: a later deposit moves it from 10.
  const Moved after = Deposit(f, "nul-1", 1);
  CHECK(after.balance == 11);
  auto r = f.Get("/accounts/nul-1", AtLeast(after.position));
  REQUIRE(r.status == 200);
  CHECK(Parse(r.body)["balance"].GetInt64() == 11);
  CHECK(Parse(r.body)["version"].GetInt64() == 3);
  ann = f.Get("/accounts?owner=Ann", AtLeast(after.position));
  REQUIRE(ann.status == 200);
  CHECK(Parse(ann.body)["items"].Size() == 1);
}

TEST_CASE("HEAD and OPTIONS on the bank's routes", "[bank][queries][pg]") {
  ServiceFixture f;
  Open(f, "h-1", "Ann", "EUR");
  const Moved moved = Deposit(f, "h-1", 5);
  const auto get = f.Get("/accounts/h-1", AtLeast(moved.position));
  REQUIRE(get.status == 200);
  const auto head =
      f.Send("HEAD", "/accounts/h-1", "", AtLeast(moved.position));
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  CHECK(head.Header("Content-Length").value_or("") ==
        std::to_string(get.body.size()));
  // The same authentication as GET.
  const auto anonymous =
      f.Send("HEAD", "/accounts/h-1", "", {{"Authorization", "Bearer nope"}});
  CHECK(anonymous.status == 401);
  CHECK(anonymous.body.empty());
  // A command route serves no HEAD.
  const auto post_only = f.Send("HEAD", "/accounts/h-1/deposit");
  CHECK(post_only.status == 405);
  CHECK(post_only.Header("Allow").value_or("") == "OPTIONS, POST");

  auto options = f.Send("OPTIONS", "/accounts/h-1", "",
                        {{"Authorization", "Bearer nope"}});
  CHECK(options.status == 204);
  CHECK(options.Header("Allow").value_or("") == "GET, HEAD, OPTIONS");
  options = f.Send("OPTIONS", "/accounts");
  CHECK(options.status == 204);
  CHECK(options.Header("Allow").value_or("") == "GET, HEAD, OPTIONS, POST");
  CHECK(f.Send("OPTIONS", "/nowhere").status == 404);
}

TEST_CASE("GET /stats sums the accounts", "[bank][queries][pg]") {
  ServiceFixture f;
  Open(f, "s-1", "Ann", "EUR");
  Open(f, "s-2", "Bob", "EUR");
  Open(f, "s-3", "Cid", "USD");
  Deposit(f, "s-1", 100);
  Deposit(f, "s-2", 250);
  Deposit(f, "s-3", 7);
  auto closed = f.Post("/accounts/s-3/withdraw", R"({"amount":7})");
  REQUIRE(closed.status == 200);
  closed = f.Post("/accounts/s-3/close", "{}");
  REQUIRE(closed.status == 200);
  auto r = f.Get(absl::StrCat("/stats?min_position=",
                              Parse(closed.body)["position"].GetString()));
  REQUIRE(r.status == 200);
  CHECK(r.Header("X-Projection-Position").has_value());
  rapidjson::Document doc = Parse(r.body);
  CHECK(doc["accounts"].GetInt64() == 3);
  CHECK(doc["open_accounts"].GetInt64() == 2);
  CHECK(doc["total_balance"]["EUR"].GetInt64() == 350);
  CHECK(doc["total_balance"]["USD"].GetInt64() == 0);
  CHECK(doc["transfers"]["pending"].GetInt64() == 0);
  CHECK(doc["transfers"]["completed"].GetInt64() == 0);
  CHECK(doc["transfers"]["failed"].GetInt64() == 0);
}

TEST_CASE(
    "read-your-writes: a read with the position of a deposit sees it, "
    "200 times in a row",
    "[bank][queries][pg]") {
  ServiceFixture f;
  Open(f, "ryw");
  for (int i = 1; i <= 200; ++i) {
    Moved moved = Deposit(f, "ryw", i);
    auto r = f.Get("/accounts/ryw", AtLeast(moved.position));
    INFO("round " << i);
    REQUIRE(r.status == 200);
    REQUIRE(Parse(r.body)["balance"].GetInt64() == moved.balance);
  }
  // The query parameter works as the header does.
  Moved moved = Deposit(f, "ryw", 1);
  auto r = f.Get(absl::StrCat("/accounts/ryw?min_position=", moved.position));
  REQUIRE(r.status == 200);
  CHECK(Parse(r.body)["balance"].GetInt64() == moved.balance);
}

TEST_CASE(
    "read-your-writes: malformed positions and waits are "
    "invalid_request",
    "[bank][queries][pg]") {
  ServiceFixture f;
  const std::string at = Open(f, "m-1");
  for (const char* token : {"", "abc", "1", "1.", ".1", "-1.2", "1.2.3",
                            "99999999999999999999999.1", "1. 2"}) {
    INFO("token '" << token << "'");
    auto r = f.Get("/accounts/m-1", {{"X-Min-Position", token}});
    CHECK(r.status == 400);
    CHECK(ErrorCode(r) == "invalid_request");
    CHECK(r.Header("X-Projection-Position").has_value());
  }
  CHECK(f.Get("/accounts/m-1?min_position=x.y").status == 400);
  for (const char* wait : {"-1", "30001", "abc", "", "1.5", "+5"}) {
    INFO("wait '" << wait << "'");
    auto r = f.Get("/accounts/m-1",
                   {{"X-Min-Position", at}, {"X-Max-Wait-Ms", wait}});
    CHECK(r.status == 400);
    CHECK(ErrorCode(r) == "invalid_request");
  }
  CHECK(f.Get("/accounts/m-1",
              {{"X-Min-Position", at}, {"X-Max-Wait-Ms", "30000"}})
            .status == 200);
  CHECK(f.Get("/accounts/m-1", {{"X-Min-Position", at}, {"X-Max-Wait-Ms", "0"}})
            .status == 200);
}

TEST_CASE(
    "read-your-writes: without projections running the read is "
    "503 projection_lagging after the wait",
    "[bank][queries][pg]") {
  ServiceFixture f(Projections::kNowhere);
  const std::string at = Open(f, "lag-1");
  const absl::Time start = absl::Now();
  auto r = f.Get("/accounts/lag-1",
                 {{"X-Min-Position", at}, {"X-Max-Wait-Ms", "300"}});
  const absl::Duration took = absl::Now() - start;
  CHECK(r.status == 503);
  CHECK(ErrorCode(r) == "projection_lagging");
  CHECK(r.Header("X-Projection-Position").has_value());
  CHECK(took >= absl::Milliseconds(300));
  // Without a position the read answers at once, from what is there.
  auto now = f.Get("/accounts/lag-1");
  CHECK(now.status == 404);
  // A position far ahead also times out, on every query route.
  for (const char* route :
       {"/accounts/lag-1/transactions", "/accounts", "/stats"}) {
    auto lagging = f.Get(route, {{"X-Min-Position", FuturePosition(at)},
                                 {"X-Max-Wait-Ms", "50"}});
    INFO(route);
    CHECK(lagging.status == 503);
    CHECK(ErrorCode(lagging) == "projection_lagging");
  }
}

TEST_CASE("read-your-writes follows projections run by another process",
          "[bank][queries][pg]") {
  ServiceFixture f(Projections::kNowhere);
  // The "other process": a runner that does not tell this service anything
  // directly; its progress arrives through NOTIFY.
  auto store = f.schema().NewEventStore([&] {
    cqrs::eventstore::PostgresEventStoreOptions o;
    o.schema = f.schema().name();
    return o;
  }());
  cqrs::projections::ProjectionRunnerOptions options;
  options.schema = f.schema().name();
  auto runner = cqrs::projections::ProjectionRunner::Create(
      &f.schema().pool(), store.get(), BankProjections(), options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  Open(f, "far");
  for (int i = 1; i <= 30; ++i) {
    Moved moved = Deposit(f, "far", 5);
    auto r = f.Get("/accounts/far", AtLeast(moved.position));
    INFO("round " << i);
    REQUIRE(r.status == 200);
    REQUIRE(Parse(r.body)["balance"].GetInt64() == moved.balance);
  }
  // The listening session dies: the periodic re-read still moves on.
  f.schema().Exec(absl::StrCat(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
      "application_name = 'cqrs progress ",
      f.schema().name(), "'"));
  Moved moved = Deposit(f, "far", 5);
  auto r = f.Get("/accounts/far", AtLeast(moved.position));
  REQUIRE(r.status == 200);
  CHECK(Parse(r.body)["balance"].GetInt64() == moved.balance);
  (*runner)->Stop();
}

// The value of the sample `name` with `labels`, or 0 when absent.
double Sample(const cqrs::testing::ParsedMetrics& m, const std::string& name,
              const std::map<std::string, std::string>& labels = {}) {
  return m.Value(name, labels).value_or(0);
}

cqrs::testing::ParsedMetrics Scrape(ServiceFixture& f) {
  auto r = f.Get("/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.Header("Content-Type").value_or("").find("text/plain") == 0);
  auto parsed = cqrs::testing::ParsePrometheusText(r.body);
  INFO(parsed.status().ToString());
  REQUIRE(parsed.ok());
  return *std::move(parsed);
}

TEST_CASE("GET /metrics is Prometheus text and its counters move",
          "[bank][queries][pg]") {
  ServiceFixture f;
  const std::string at = Open(f, "met-1");
  REQUIRE(f.Get("/accounts/met-1", AtLeast(at)).status == 200);
  cqrs::testing::ParsedMetrics before = Scrape(f);
  CHECK(before.types.at("cqrs_http_requests_total") == "counter");
  CHECK(before.types.at("cqrs_http_request_duration_seconds") == "histogram");
  CHECK(before.types.at("cqrs_commands_total") == "counter");
  CHECK(before.types.at("cqrs_events_appended_total") == "counter");
  CHECK(before.types.at("cqrs_projection_lag_events") == "gauge");
  CHECK(before.types.at("cqrs_db_pool_connections") == "gauge");

  const std::map<std::string, std::string> get_account = {
      {"method", "GET"}, {"route", "/accounts/{id}"}, {"status", "200"}};
  const std::map<std::string, std::string> deposit_ok = {{"command", "deposit"},
                                                         {"outcome", "ok"}};
  const std::map<std::string, std::string> insufficient = {
      {"command", "withdraw"}, {"outcome", "insufficient_funds"}};
  std::string last;
  for (int i = 0; i < 5; ++i) last = Deposit(f, "met-1", 10).position;
  for (int i = 0; i < 3; ++i) {
    REQUIRE(f.Get("/accounts/met-1", AtLeast(last)).status == 200);
  }
  REQUIRE(f.Post("/accounts/met-1/withdraw", R"({"amount":999})").status ==
          422);
  REQUIRE(f.Get("/no/such/route").status == 404);
  cqrs::testing::ParsedMetrics after = Scrape(f);

  CHECK(Sample(after, "cqrs_http_requests_total", get_account) -
            Sample(before, "cqrs_http_requests_total", get_account) ==
        3);
  CHECK(Sample(after, "cqrs_commands_total", deposit_ok) -
            Sample(before, "cqrs_commands_total", deposit_ok) ==
        5);
  CHECK(Sample(after, "cqrs_commands_total", insufficient) == 1);
  CHECK(Sample(after, "cqrs_events_appended_total") -
            Sample(before, "cqrs_events_appended_total") ==
        5);
  CHECK(
      Sample(after, "cqrs_http_requests_total",
             {{"method", "GET"}, {"route", "unmatched"}, {"status", "404"}}) ==
      1);
  CHECK(Sample(after, "cqrs_http_request_duration_seconds_count",
               {{"method", "GET"}, {"route", "/accounts/{id}"}}) >= 4);
  CHECK(Sample(after, "cqrs_projection_state",
               {{"projection", "account_balances"}, {"state", "running"}}) ==
        1);
  CHECK(Sample(after, "cqrs_projection_position",
               {{"projection", "account_balances"}}) > 0);
  CHECK(after
            .Value("cqrs_db_pool_connections",
                   {{"pool", "queries"}, {"state", "in_use"}})
            .has_value());
  CHECK(
      after.Value("cqrs_db_pool_waiting", {{"pool", "commands"}}).has_value());
  CHECK(Sample(after, "cqrs_projections_scrape_ok") == 1);
}

TEST_CASE("cqrs_events_appended_total counts the process manager's appends",
          "[bank][queries][pg]") {
  ServiceFixture f;
  Open(f, "cnt-a");
  Open(f, "cnt-b");
  Deposit(f, "cnt-a", 100);
  auto stored = [&] {
    return f.schema().QueryInt(
        absl::StrCat("SELECT count(*) FROM ", f.schema().name(), ".events"));
  };
  const double before = Sample(Scrape(f), "cqrs_events_appended_total");
  const long long stored_before = stored();
  // A completed transfer: TransferRequested from the command, then the
  // process manager's debit, credit and transfer events.
  REQUIRE(
      f.Post(
           "/transfers",
           R"({"from":"cnt-a","to":"cnt-b","amount":40,"transfer_id":"cnt-t"})")
          .status == 202);
  REQUIRE(cqrs::testing::Eventually(
      [&] {
        return f.Get("/transfers/cnt-t").body.find("completed") !=
               std::string::npos;
      },
      absl::Seconds(30)));
  // Before: only the request (1 of the 6 events) was counted.
  CHECK(stored() - stored_before == 6);
  CHECK(Sample(Scrape(f), "cqrs_events_appended_total") - before ==
        stored() - stored_before);
}

TEST_CASE("GET /projections reports every projection", "[bank][queries][pg]") {
  ServiceFixture f;
  const std::string at = Open(f, "p-1");
  REQUIRE(f.Get("/stats", AtLeast(at)).status == 200);
  auto r = f.Get("/projections");
  REQUIRE(r.status == 200);
  rapidjson::Document doc = Parse(r.body);
  REQUIRE(doc.IsArray());
  std::set<std::string> names;
  for (const auto& p : doc.GetArray()) {
    names.insert(p["name"].GetString());
    // This build's version, and the stored one is the same.
    const std::map<std::string, int> versions = {{"bank_stats", 2},
                                                 {"account_transactions", 2}};
    auto v = versions.find(p["name"].GetString());
    CHECK(p["version"].GetInt() == (v == versions.end() ? 1 : v->second));
    CHECK(p["code_version"].GetInt() == p["version"].GetInt());
    const std::string state = p["state"].GetString();
    CHECK((state == "running" || state == "catching_up"));
    CHECK(
        cqrs::eventstore::Position::FromToken(p["position"].GetString()).ok());
    CHECK(p["lag_events"].IsInt64());
    CHECK(p["lag_seconds"].IsNumber());
    CHECK(p["parked"].GetInt64() == 0);
    CHECK(!p.HasMember("last_error"));
  }
  CHECK(names == std::set<std::string>{"account_balances",
                                       "account_transactions", "bank_stats",
                                       "transfers", "transfer_process"});
}

TEST_CASE("GET /openapi.json documents every registered route",
          "[bank][queries][pg]") {
  ServiceFixture f;
  auto r = f.Get("/openapi.json");
  REQUIRE(r.status == 200);
  rapidjson::Document doc = Parse(r.body);
  REQUIRE(doc.IsObject());
  CHECK(std::string(doc["openapi"].GetString()).rfind("3.", 0) == 0);
  const auto& paths = doc["paths"];
  std::set<std::pair<std::string, std::string>> documented;
  for (const auto& path : paths.GetObject()) {
    for (const auto& op : path.value.GetObject()) {
      std::string method = op.name.GetString();
      if (method == "parameters") continue;
      for (char& c : method) c = static_cast<char>(std::toupper(c));
      documented.emplace(method, path.name.GetString());
    }
  }
  std::set<std::pair<std::string, std::string>> registered;
  for (const auto& [method, pattern] : f.router().Routes()) {
    registered.emplace(method, pattern);
  }
  for (const auto& route : registered) {
    INFO(route.first << " " << route.second);
    CHECK(documented.count(route) == 1);
  }
  for (const auto& route : documented) {
    INFO(route.first << " " << route.second << " documented, not served");
    CHECK(registered.count(route) == 1);
  }
}

}  // namespace
}  // namespace bank

namespace bank {
namespace {

TEST_CASE("per-currency totals past 64 bits stay exact, also after a rebuild",
          "[bank][queries][pg]") {
  ServiceFixture f;
  Open(f, "big-1");
  Open(f, "big-2");
  // Each account ends at 4,613 * 10^15 (a legal balance); together they
  // hold 9,226 * 10^15, more than 2^63 - 1. Appended through the store: a
  // deposit is at most 10^15, and 9,226 HTTP deposits would only be slow.
  cqrs::eventstore::PostgresEventStore& store = f.server().store();
  std::string last;
  for (const char* account : {"account-big-1", "account-big-2"}) {
    for (int left = 4613; left > 0; left -= 100) {
      std::vector<cqrs::eventstore::NewEvent> events(std::min(left, 100));
      for (auto& e : events) {
        e.event_type = "MoneyDeposited";
        e.data = R"({"amount":1000000000000000})";
      }
      auto r = store.Append(account, cqrs::eventstore::ExpectedVersion::Any(),
                            std::move(events));
      REQUIRE(r.ok());
      last = r->position.ToToken();
    }
  }
  auto total = [&] {
    auto r = f.Get("/stats", AtLeast(last));
    REQUIRE(r.status == 200);
    return r.body;
  };
  // Before: bank_stats failed ("bigint out of range") and /stats lagged.
  CHECK(absl::StrContains(total(), R"("EUR":9226000000000000000)"));
  absl::Status rebuilt = cqrs::projections::RebuildProjection(
      &f.schema().pool(), &store, BankStatsProjection(), f.schema().name(), {});
  INFO(rebuilt.ToString());
  REQUIRE(rebuilt.ok());
  // Before: the rebuild "succeeded" with a wrapped, negative total.
  CHECK(absl::StrContains(total(), R"("EUR":9226000000000000000)"));
}

}  // namespace
}  // namespace bank

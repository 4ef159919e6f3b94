// Authentication and scopes over every route the bank registers (issue 14):
// each route answers a request without a token, with a malformed header, an
// unknown token, a token revoked by another process (`bank keys revoke`),
// an expired token and a token without the route's scope with the error
// shape, and appends nothing; with the right scope it runs. Tokens never
// appear in logs, metrics or error messages; the OpenAPI document declares
// each route's scope.
#include <map>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "framework/auth/api_keys.h"
#include "framework/auth/scopes.h"
#include "framework/http/router.h"
#include "tests/example_app/service_fixture.h"
#include "tests/framework/http/log_capture.h"
#include "tests/support/api_key.h"
#include "tests/support/child_process.h"
#include "tests/support/wait.h"

namespace bank {
namespace {

namespace http = cqrs::http;
using cqrs::http_test::ClientResponse;
using cqrs::testing::Eventually;

// A request for `route` that would change something if it ran: valid
// bodies, an account and a projection that exist.
struct Call {
  std::string method;
  std::string target;
  std::string body;
};

Call CallFor(const http::Route& route) {
  static const std::map<std::string, std::string> kBodies = {
      {"/accounts",
       R"({"owner":"Matrix","currency":"EUR","account_id":"m-new"})"},
      {"/accounts/{id}/deposit", R"({"amount":5})"},
      {"/accounts/{id}/withdraw", R"({"amount":1})"},
      {"/accounts/{id}/close", "{}"},
      {"/transfers",
       R"({"transfer_id":"t-m","from":"m-1","to":"m-2","amount":1})"},
      {"/keys", R"({"name":"made-by-matrix","scopes":["queries"]})"},
      {"/webhooks", R"({"url":"https://203.0.113.5/matrix"})"},
      {"/webhooks/{id}/replay", R"({"from_position":"0.0"})"},
  };
  Call call;
  call.method = route.method;
  call.target = absl::StrReplaceAll(
      route.pattern,
      {{"{id}", route.pattern.rfind("/transfers", 0) == 0 ? "t-none" : "m-1"},
       {"{name}", "account_balances"}});
  auto body = kBodies.find(route.pattern);
  if (body != kBodies.end()) call.body = body->second;
  return call;
}

struct Matrix {
  Matrix()
      : f(Projections::kHere, nullptr, [](cqrs::ServeOptions& options) {
          // Every refusal below is a failed attempt from 127.0.0.1.
          options.auth_max_failures = 1000000;
        }) {
    Open(f, "m-1");
    Open(f, "m-2");
    written = Deposit(f, "m-1", 100).position;
  }

  // Events appended for requests whose X-Correlation-Id starts with
  // `prefix` (commands stamp it into their events' metadata).
  long long EventsFor(const std::string& prefix) {
    return f.schema().QueryInt(absl::StrCat(
        "SELECT count(*) FROM ", f.schema().name(),
        ".events WHERE metadata->>'correlation_id' LIKE '", prefix, "-%'"));
  }

  // Sends `call` with `auth` on a fresh connection, as request
  // `<prefix>-<n>`.
  ClientResponse Send(const Call& call, const http::HeaderList& auth,
                      const std::string& prefix = "other") {
    http::HeaderList headers = auth;
    headers.push_back(
        {"X-Correlation-Id", absl::StrCat(prefix, "-", ++requests)});
    if (!call.body.empty())
      headers.push_back({"Content-Type", "application/json"});
    // A fresh connection without the fixture's default token.
    auto client = cqrs::http_test::TestClient::Connect(f.server().port());
    REQUIRE(client.ok());
    // An accepted stream's response does not end: its head is the answer.
    auto r =
        call.target == "/events/stream" && prefix == "allowed"
            ? (*client)->OpenStream(call.target, headers)
            : (*client)->Send(call.method, call.target, call.body, headers);
    REQUIRE(r.ok());
    return *std::move(r);
  }

  ServiceFixture f;
  std::string written;  // the position of the setup's last command
  int requests = 0;
};

std::string Message(const ClientResponse& r) {
  rapidjson::Document doc = Parse(r.body);
  REQUIRE(doc.IsObject());
  REQUIRE(doc.HasMember("error"));
  return doc["error"]["message"].GetString();
}

TEST_CASE("every bank route refuses callers without the right key",
          "[bank][auth][pg]") {
  Matrix m;
  cqrs::http_test::LogCapture capture;
  cqrs::testing::TestSchema& schema = m.f.schema();
  auto keys = cqrs::auth::ApiKeyStore::Create(&schema.pool(), schema.name());
  REQUIRE(keys.ok());

  // Revoked by another process: `bank keys revoke`.
  const std::string revoked =
      cqrs::testing::CreateToken(schema.pool(), schema.name(), {}, "revoked");
  {
    http::HeaderList headers = cqrs::testing::BearerHeader(revoked);
    headers.push_back({"X-Min-Position", m.written});
    ClientResponse before = m.Send({"GET", "/accounts/m-1", ""}, headers);
    REQUIRE(before.status == 200);  // cached as valid in the server
    const cqrs::testing::ShellResult revoke = cqrs::testing::RunShell(
        absl::StrCat(BANK_BINARY, " keys revoke ", revoked.substr(5, 12),
                     " --database-url '", schema.url(), "' --schema ",
                     schema.name(), " 2>&1"));
    INFO(revoke.output);
    REQUIRE(revoke.exit_code == 0);
    REQUIRE(Eventually([&] {
      return m.Send({"GET", "/accounts/m-1", ""},
                    cqrs::testing::BearerHeader(revoked))
                 .status == 401;
    }));
  }
  auto expiring = (*keys)->CreateKey(
      "expiring", {"commands", "queries", "admin", "metrics", "events"},
      absl::Seconds(1));
  REQUIRE(expiring.ok());
  REQUIRE(Eventually([&] { return absl::Now() > *expiring->key.expires_at; }));

  const std::vector<std::pair<std::string, http::HeaderList>> refused = {
      {"no token", {}},
      {"basic scheme", {{"Authorization", "Basic Zm9vOmJhcg=="}}},
      {"empty bearer", {{"Authorization", "Bearer"}}},
      {"not a token", {{"Authorization", "Bearer not-a-token"}}},
      {"unknown key",
       cqrs::testing::BearerHeader(
           "cqrs_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")},
      {"wrong secret", cqrs::testing::BearerHeader(
                           revoked.substr(0, 18) +
                           "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB")},
      {"revoked", cqrs::testing::BearerHeader(revoked)},
      {"expired", cqrs::testing::BearerHeader(expiring->token)},
  };
  std::vector<std::string> secrets = {revoked, expiring->token};
  std::string unauthenticated_body;
  int routes_with_scope = 0;
  for (const http::Route* route : m.f.router().RouteList()) {
    const Call call = CallFor(*route);
    INFO(call.method << " " << call.target);
    if (route->options.access.kind == http::RouteAccess::Kind::kOpen) {
      CHECK(m.Send(call, {}).status == 200);
      continue;
    }
    REQUIRE(route->options.access.kind == http::RouteAccess::Kind::kScope);
    ++routes_with_scope;
    const std::string& scope = route->options.access.scope;
    for (const auto& [why, headers] : refused) {
      INFO(why);
      ClientResponse r = m.Send(call, headers, "refused");
      CHECK(r.status == 401);
      CHECK(ErrorCode(r) == "unauthenticated");
      CHECK(r.Header("WWW-Authenticate").value_or("") == "Bearer");
      if (unauthenticated_body.empty()) unauthenticated_body = r.body;
      CHECK(r.body == unauthenticated_body);  // one message for all
    }
    // Every scope but the route's.
    std::vector<std::string> others;
    for (absl::string_view s : cqrs::auth::kAllScopes) {
      if (s != scope) others.emplace_back(s);
    }
    const std::string wrong = cqrs::testing::CreateToken(
        schema.pool(), schema.name(), others, "wrong");
    const std::string right = cqrs::testing::CreateToken(
        schema.pool(), schema.name(), {scope}, "right");
    secrets.push_back(wrong);
    secrets.push_back(right);
    ClientResponse forbidden =
        m.Send(call, cqrs::testing::BearerHeader(wrong), "refused");
    CHECK(forbidden.status == 403);
    CHECK(ErrorCode(forbidden) == "forbidden");
    CHECK(absl::StrContains(Message(forbidden), absl::StrCat("'", scope, "'")));

    ClientResponse allowed =
        m.Send(call, cqrs::testing::BearerHeader(right), "allowed");
    INFO(allowed.body);
    CHECK(allowed.status != 401);
    CHECK(allowed.status != 403);
    CHECK(allowed.status < 500);
  }
  CHECK(routes_with_scope >= 12);
  // Refused requests appended nothing; the same requests with the right
  // key did (so the count would see it).
  CHECK(m.EventsFor("refused") == 0);
  CHECK(m.EventsFor("allowed") >= 4);

  // No token, nor its secret, in the logs, the metrics or any answer.
  ClientResponse metrics = m.f.Get("/metrics");
  REQUIRE(metrics.status == 200);
  const std::vector<std::string> lines = capture.Lines();
  CHECK(lines.size() > 100);
  for (const std::string& token : secrets) {
    const std::string secret = token.substr(18);
    CHECK_FALSE(absl::StrContains(metrics.body, secret));
    for (const std::string& line : lines) {
      INFO(line);
      CHECK_FALSE(absl::StrContains(line, secret));
    }
  }
  // The access log names the key by its id.
  const std::string wrong_id = secrets[secrets.size() - 2].substr(5, 12);
  CHECK(capture.WaitForLine({"status=403", absl::StrCat("actor=", wrong_id)})
            .has_value());
}

TEST_CASE("keys are managed over HTTP with the admin scope",
          "[bank][auth][pg]") {
  ServiceFixture f(Projections::kNowhere);
  ClientResponse created =
      f.Post("/keys",
             R"({"name":"dashboard","scopes":["queries"],"expires_in":"30d"})");
  REQUIRE(created.status == 201);
  rapidjson::Document key = Parse(created.body);
  const std::string token = key["token"].GetString();
  const std::string id = key["id"].GetString();
  CHECK(token.substr(5, 12) == id);
  CHECK(key["expires_at"].IsString());
  CHECK(key["revoked_at"].IsNull());

  const http::HeaderList as_dashboard = cqrs::testing::BearerHeader(token);
  CHECK(f.Get("/stats", as_dashboard).status == 200);
  CHECK(f.Get("/keys", as_dashboard).status == 403);  // not admin

  ClientResponse listed = f.Get("/keys");
  REQUIRE(listed.status == 200);
  CHECK(absl::StrContains(listed.body, absl::StrCat("\"id\":\"", id, "\"")));
  CHECK_FALSE(absl::StrContains(listed.body, token.substr(18)));

  for (const char* bad :
       {R"({"name":"x","scopes":["root"]})",
        R"({"name":"","scopes":["queries"]})", R"({"name":"x","scopes":[]})",
        R"({"name":"x","scopes":["queries"],"expires_in":"soon"})",
        R"({"name":"x","scopes":["queries"],"extra":1})", "{"}) {
    INFO(bad);
    ClientResponse refused = f.Post("/keys", bad);
    CHECK(refused.status == 400);
  }

  ClientResponse revoked = f.Post(absl::StrCat("/keys/", id, "/revoke"), "");
  REQUIRE(revoked.status == 200);
  CHECK(Parse(revoked.body)["revoked_at"].IsString());
  CHECK(f.Get("/stats", as_dashboard).status == 401);
  ClientResponse missing = f.Post("/keys/000000000000/revoke", "");
  CHECK(missing.status == 404);
  CHECK(ErrorCode(missing) == "key_not_found");
}

TEST_CASE("repeated failures from one address get 429 and append nothing",
          "[bank][auth][pg]") {
  ServiceFixture f(
      Projections::kNowhere, nullptr,
      [](cqrs::ServeOptions& options) { options.auth_max_failures = 5; });
  const std::string bad =
      "cqrs_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
  const std::string body =
      R"({"owner":"Ann","currency":"EUR","account_id":"x-1"})";
  http::HeaderList headers = cqrs::testing::BearerHeader(bad);
  headers.push_back({"Content-Type", "application/json"});
  for (int i = 0; i < 5; ++i) {
    CHECK(f.Send("POST", "/accounts", body, headers).status == 401);
  }
  ClientResponse limited = f.Send("POST", "/accounts", body, headers);
  CHECK(limited.status == 429);
  CHECK(ErrorCode(limited) == "too_many_requests");
  CHECK(!limited.Header("Retry-After").value_or("").empty());
  // Even a valid key waits out the window from this address.
  CHECK(f.Post("/accounts", body).status == 429);
  CHECK(f.Get("/healthz").status == 200);
  CHECK(f.schema().QueryInt(absl::StrCat("SELECT count(*) FROM ",
                                         f.schema().name(), ".events")) == 0);
}

TEST_CASE("the OpenAPI document declares each route's scope",
          "[bank][auth][pg]") {
  ServiceFixture f(Projections::kNowhere);
  ClientResponse r = f.Get("/openapi.json");
  REQUIRE(r.status == 200);
  rapidjson::Document doc = Parse(r.body);
  REQUIRE(doc["components"]["securitySchemes"].HasMember("bearerAuth"));
  CHECK(std::string(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"]
                        .GetString()) == "bearer");
  for (const http::Route* route : f.router().RouteList()) {
    std::string method = route->method;
    for (char& c : method) c = static_cast<char>(std::tolower(c));
    INFO(route->method << " " << route->pattern);
    const auto& op = doc["paths"][route->pattern.c_str()][method.c_str()];
    if (route->options.access.kind == http::RouteAccess::Kind::kOpen) {
      REQUIRE(op.HasMember("security"));
      CHECK(op["security"].Size() == 0);
      continue;
    }
    REQUIRE(op.HasMember("x-required-scopes"));
    REQUIRE(op["x-required-scopes"].Size() == 1);
    CHECK(op["x-required-scopes"][0].GetString() ==
          route->options.access.scope);
    CHECK(op["responses"].HasMember("401"));
    CHECK(op["responses"].HasMember("403"));
  }
}

}  // namespace
}  // namespace bank

namespace bank {
namespace {

// Who did it (issue 14 item 4), end to end through the server's
// authentication: commands record the caller's key id as actor, the
// transfer process acts on its behalf, and admin callers see both in the
// account's transactions.
TEST_CASE("events name the key that caused them; admins see it",
          "[bank][auth][pg]") {
  ServiceFixture f;
  cqrs::testing::TestSchema& schema = f.schema();
  const std::string writer = cqrs::testing::CreateToken(
      schema.pool(), schema.name(), {"commands"}, "writer");
  const std::string reader = cqrs::testing::CreateToken(
      schema.pool(), schema.name(), {"queries"}, "reader");
  const std::string admin = cqrs::testing::CreateToken(
      schema.pool(), schema.name(), {"queries", "admin"}, "admin");
  const std::string writer_id = writer.substr(5, 12);
  const auto as = [](const std::string& token) {
    http::HeaderList headers = cqrs::testing::BearerHeader(token);
    headers.push_back({"Content-Type", "application/json"});
    return headers;
  };

  for (const char* body :
       {R"({"owner":"Ann","currency":"EUR","account_id":"who-1"})",
        R"({"owner":"Ann","currency":"EUR","account_id":"who-2"})"}) {
    CHECK(f.Send("POST", "/accounts", body, as(writer)).status == 201);
  }
  CHECK(
      f.Send("POST", "/accounts/who-1/deposit", R"({"amount":50})", as(writer))
          .status == 200);
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                     ".events WHERE metadata->>'actor' = '",
                                     writer_id, "'")) == 3);
  CHECK(
      f.Send(
           "POST", "/transfers",
           R"({"from":"who-1","to":"who-2","amount":20,"transfer_id":"who-t"})",
           as(writer))
          .status == 202);
  REQUIRE(Eventually([&] {
    ClientResponse r = f.Get("/transfers/who-t");
    return r.status == 200 && absl::StrContains(r.body, "\"completed\"");
  }));
  // Quiet now: the log's head is past the transfer's movements.
  const http::HeaderList after = {{"X-Min-Position", f.schema().LogHead()}};

  http::HeaderList reader_headers = cqrs::testing::BearerHeader(reader);
  reader_headers.insert(reader_headers.end(), after.begin(), after.end());
  ClientResponse plain = f.Get("/accounts/who-1/transactions", reader_headers);
  REQUIRE(plain.status == 200);
  CHECK_FALSE(absl::StrContains(plain.body, "\"actor\""));
  CHECK_FALSE(absl::StrContains(plain.body, "on_behalf_of"));

  http::HeaderList admin_headers = cqrs::testing::BearerHeader(admin);
  admin_headers.insert(admin_headers.end(), after.begin(), after.end());
  ClientResponse audited = f.Get("/accounts/who-1/transactions", admin_headers);
  REQUIRE(audited.status == 200);
  INFO(audited.body);
  rapidjson::Document doc = Parse(audited.body);
  const auto& items = doc["items"];
  REQUIRE(items.Size() == 3);  // opened, deposit, transfer_out
  for (const auto& item : items.GetArray()) {
    const std::string type = item["type"].GetString();
    INFO(type);
    if (type == "transfer_out") {
      CHECK(std::string(item["actor"].GetString()) ==
            "process:transfer_process");
      CHECK(std::string(item["on_behalf_of"].GetString()) == writer_id);
    } else {
      CHECK(std::string(item["actor"].GetString()) == writer_id);
      CHECK_FALSE(item.HasMember("on_behalf_of"));
    }
  }
}

}  // namespace
}  // namespace bank

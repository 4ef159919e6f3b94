// The /webhooks routes of an app that publishes events, through the real
// AppServer over HTTP: every route's status and shape, authentication and
// the admin scope, unknown ids, and bad input refused with nothing stored.
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "app/app.h"
#include "app/app_server.h"
#include "framework/http/message.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/test_database.h"

namespace {

namespace json = cqrs::json;
namespace http = cqrs::http;
using cqrs::http_test::ClientResponse;

struct Noted {
  static constexpr char kName[] = "Noted";
  int64_t n = 0;
  static auto Json() { return json::Shape<Noted>().Field("n", &Noted::n); }
};

class Served {
 public:
  Served() {
    app_.Event<Noted>(Noted::kName).Publish<Noted>("notes.noted");
    REQUIRE(cqrs::MigrateApp(schema_.pool(), schema_.name()).ok());
    cqrs::ServeOptions options;
    options.schema = schema_.name();
    // The tests' endpoints are on the loopback; other internal addresses
    // stay refused.
    options.webhooks.allow_networks = {"127.0.0.0/8"};
    auto server = cqrs::AppServer::Start(app_, &schema_.pool(), options);
    INFO(server.status().ToString());
    REQUIRE(server.ok());
    server_ = *std::move(server);
    admin_ =
        cqrs::testing::CreateToken(schema_.pool(), schema_.name(), {"admin"});
  }

  ClientResponse Send(const std::string& method, const std::string& target,
                      const std::string& body = "",
                      const std::string& token = "") {
    auto client = cqrs::http_test::TestClient::Connect(server_->port());
    REQUIRE(client.ok());
    http::HeaderList headers;
    if (token != "none") {
      headers = cqrs::testing::BearerHeader(token.empty() ? admin_ : token);
    }
    if (!body.empty()) headers.push_back({"Content-Type", "application/json"});
    auto r = (*client)->Send(method, target, body, headers);
    REQUIRE(r.ok());
    return *std::move(r);
  }

  long long Count(const std::string& table) {
    return schema_.QueryInt(
        absl::StrCat("SELECT count(*) FROM ", schema_.name(), ".", table));
  }

  cqrs::testing::TestSchema& schema() { return schema_; }
  cqrs::AppServer& server() { return *server_; }

 private:
  cqrs::testing::TestSchema schema_;
  cqrs::App app_{"notes"};
  std::unique_ptr<cqrs::AppServer> server_;
  std::string admin_;
};

rapidjson::Document Parse(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.c_str());
  REQUIRE(!doc.HasParseError());
  return doc;
}

std::string ErrorCode(const ClientResponse& r) {
  rapidjson::Document doc = Parse(r.body);
  REQUIRE(doc.IsObject());
  REQUIRE(doc.HasMember("error"));
  return doc["error"]["code"].GetString();
}

TEST_CASE("webhook endpoints are managed over HTTP", "[app][webhooks][pg]") {
  Served s;
  ClientResponse created =
      s.Send("POST", "/webhooks",
             R"({"url":"https://127.0.0.1/in","types":["notes.noted.v1"],)"
             R"("categories":["note"],"description":"audit"})");
  INFO(created.body);
  REQUIRE(created.status == 201);
  rapidjson::Document doc = Parse(created.body);
  const std::string id = doc["id"].GetString();
  const std::string secret = doc["secret"].GetString();
  CHECK(absl::StartsWith(id, "wh_"));
  CHECK(absl::StartsWith(secret, "whsec_"));
  CHECK(std::string(doc["url"].GetString()) == "https://127.0.0.1/in");
  CHECK(std::string(doc["types"][0].GetString()) == "notes.noted.v1");
  CHECK(std::string(doc["categories"][0].GetString()) == "note");
  CHECK(std::string(doc["description"].GetString()) == "audit");
  CHECK(std::string(doc["state"].GetString()) == "enabled");
  CHECK(doc["disabled_reason"].IsNull());
  CHECK(doc["cursor"].IsString());
  CHECK(doc["created_at"].IsString());
  CHECK(doc["previous_secret_expires_at"].IsNull());

  ClientResponse listed = s.Send("GET", "/webhooks");
  REQUIRE(listed.status == 200);
  doc = Parse(listed.body);
  REQUIRE(doc["items"].Size() == 1);
  CHECK(std::string(doc["items"][0]["id"].GetString()) == id);
  CHECK_FALSE(absl::StrContains(listed.body, secret));
  CHECK_FALSE(doc["items"][0].HasMember("secret"));

  ClientResponse shown = s.Send("GET", absl::StrCat("/webhooks/", id));
  REQUIRE(shown.status == 200);
  doc = Parse(shown.body);
  CHECK(doc["stats"]["pending"].GetInt64() == 0);
  CHECK(doc["stats"]["parked"].GetInt64() == 0);
  CHECK(doc["stats"]["delivered"].GetInt64() == 0);
  CHECK(doc["stats"]["oldest_pending_at"].IsNull());
  CHECK_FALSE(absl::StrContains(shown.body, secret));

  ClientResponse patched =
      s.Send("PATCH", absl::StrCat("/webhooks/", id),
             R"({"url":"http://127.0.0.1:8080/v2","types":[]})");
  INFO(patched.body);
  REQUIRE(patched.status == 200);
  doc = Parse(patched.body);
  CHECK(std::string(doc["url"].GetString()) == "http://127.0.0.1:8080/v2");
  CHECK(doc["types"].Empty());
  CHECK(std::string(doc["categories"][0].GetString()) == "note");
  CHECK(std::string(doc["description"].GetString()) == "audit");

  ClientResponse disabled =
      s.Send("POST", absl::StrCat("/webhooks/", id, "/disable"));
  REQUIRE(disabled.status == 200);
  doc = Parse(disabled.body);
  CHECK(std::string(doc["state"].GetString()) == "disabled");
  CHECK(std::string(doc["disabled_reason"].GetString()) == "manual");
  CHECK(doc["disabled_at"].IsString());
  ClientResponse enabled =
      s.Send("POST", absl::StrCat("/webhooks/", id, "/enable"));
  REQUIRE(enabled.status == 200);
  CHECK(std::string(Parse(enabled.body)["state"].GetString()) == "enabled");

  ClientResponse rotated =
      s.Send("POST", absl::StrCat("/webhooks/", id, "/rotate-secret"));
  REQUIRE(rotated.status == 200);
  doc = Parse(rotated.body);
  const std::string new_secret = doc["secret"].GetString();
  CHECK(absl::StartsWith(new_secret, "whsec_"));
  CHECK(new_secret != secret);
  CHECK(doc["previous_secret_expires_at"].IsString());

  // Deliveries as the deliverer would leave them.
  s.schema().Exec(absl::StrCat(
      "INSERT INTO ", s.schema().name(),
      ".webhook_deliveries (endpoint_id, event_id, position, stream_id, "
      "stream_version, event_type, recorded_at, body, state, attempts, "
      "last_status, last_error, parked_at) VALUES ('",
      id,
      "', '00000000-0000-0000-0000-000000000001', '1.1', 'note-1', 1, "
      "'notes.noted.v1', now(), '{}', 'parked', 8, 500, 'boom', now()), ('",
      id,
      "', '00000000-0000-0000-0000-000000000002', '1.2', 'note-1', 2, "
      "'notes.noted.v1', now(), '{}', 'pending', 0, NULL, NULL, NULL)"));
  s.schema().Exec(absl::StrCat(
      "INSERT INTO ", s.schema().name(),
      ".webhook_attempts (endpoint_id, event_id, attempt, attempted_at, "
      "duration_ms, status, outcome, error) SELECT '",
      id,
      "', '00000000-0000-0000-0000-000000000001', n, now(), 12, 500, "
      "'http_error', 'HTTP 500' FROM generate_series(1, 3) n"));

  ClientResponse attempts =
      s.Send("GET", absl::StrCat("/webhooks/", id, "/attempts?limit=2"));
  REQUIRE(attempts.status == 200);
  doc = Parse(attempts.body);
  REQUIRE(doc["items"].Size() == 2);
  CHECK(doc["items"][0]["attempt"].GetInt() == 3);
  CHECK(doc["items"][0]["status"].GetInt() == 500);
  CHECK(std::string(doc["items"][0]["outcome"].GetString()) == "http_error");
  CHECK(doc["items"][0]["duration_ms"].GetInt64() == 12);
  CHECK(Parse(s.Send("GET", absl::StrCat("/webhooks/", id, "/attempts"))
                  .body)["items"]
            .Size() == 3);

  ClientResponse parked =
      s.Send("GET", absl::StrCat("/webhooks/", id, "/parked"));
  REQUIRE(parked.status == 200);
  doc = Parse(parked.body);
  REQUIRE(doc["items"].Size() == 1);
  CHECK(std::string(doc["items"][0]["stream_id"].GetString()) == "note-1");
  CHECK(std::string(doc["items"][0]["last_error"].GetString()) == "boom");
  doc = Parse(s.Send("GET", absl::StrCat("/webhooks/", id)).body);
  CHECK(doc["stats"]["parked"].GetInt64() == 1);
  CHECK(doc["stats"]["pending"].GetInt64() == 1);
  CHECK(doc["stats"]["oldest_pending_at"].IsString());

  ClientResponse replayed_parked =
      s.Send("POST", absl::StrCat("/webhooks/", id, "/parked/replay"));
  REQUIRE(replayed_parked.status == 200);
  CHECK(replayed_parked.body == R"({"replayed":1})");
  ClientResponse skipped =
      s.Send("POST", absl::StrCat("/webhooks/", id, "/parked/skip"));
  REQUIRE(skipped.status == 200);
  CHECK(skipped.body == R"({"skipped":0})");

  ClientResponse replayed =
      s.Send("POST", absl::StrCat("/webhooks/", id, "/replay"),
             R"({"from_position":"0.0"})");
  INFO(replayed.body);
  REQUIRE(replayed.status == 200);
  CHECK(std::string(Parse(replayed.body)["cursor"].GetString()) == "0.0");
  ClientResponse from_time =
      s.Send("POST", absl::StrCat("/webhooks/", id, "/replay"),
             R"({"from_time":"2020-01-01T00:00:00Z"})");
  REQUIRE(from_time.status == 200);

  ClientResponse deleted = s.Send("DELETE", absl::StrCat("/webhooks/", id));
  CHECK(deleted.status == 204);
  CHECK(deleted.body.empty());
  CHECK(s.Send("GET", absl::StrCat("/webhooks/", id)).status == 404);
  CHECK(s.Count("webhook_deliveries") == 0);
}

TEST_CASE("webhook routes need the admin scope and known ids",
          "[app][webhooks][pg]") {
  Served s;
  const std::string reader = cqrs::testing::CreateToken(
      s.schema().pool(), s.schema().name(),
      {"commands", "queries", "events", "metrics"}, "not-admin");
  const std::string id = "wh_0123456789abcdef";
  struct Route {
    const char* method;
    std::string target;
    const char* body;
  };
  const std::vector<Route> routes = {
      {"GET", "/webhooks", ""},
      {"POST", "/webhooks", R"({"url":"https://127.0.0.1/"})"},
      {"GET", "/webhooks/" + id, ""},
      {"PATCH", "/webhooks/" + id, R"({"description":"x"})"},
      {"DELETE", "/webhooks/" + id, ""},
      {"POST", "/webhooks/" + id + "/disable", ""},
      {"POST", "/webhooks/" + id + "/enable", ""},
      {"POST", "/webhooks/" + id + "/rotate-secret", ""},
      {"GET", "/webhooks/" + id + "/attempts", ""},
      {"POST", "/webhooks/" + id + "/replay", R"({"from_position":"0.0"})"},
      {"GET", "/webhooks/" + id + "/parked", ""},
      {"POST", "/webhooks/" + id + "/parked/replay", ""},
      {"POST", "/webhooks/" + id + "/parked/skip", ""},
  };
  for (const Route& r : routes) {
    INFO(r.method << " " << r.target);
    ClientResponse anonymous = s.Send(r.method, r.target, r.body, "none");
    CHECK(anonymous.status == 401);
    CHECK(ErrorCode(anonymous) == "unauthenticated");
    ClientResponse forbidden = s.Send(r.method, r.target, r.body, reader);
    CHECK(forbidden.status == 403);
    CHECK(ErrorCode(forbidden) == "forbidden");
    if (r.target == "/webhooks") continue;
    ClientResponse missing = s.Send(r.method, r.target, r.body);
    CHECK(missing.status == 404);
    CHECK(ErrorCode(missing) == "webhook_not_found");
  }
  CHECK(s.Count("webhook_endpoints") == 0);
  // An endpoint list is only the admin's.
  CHECK(s.Send("GET", "/webhooks").status == 200);
}

// {"url": url} with "description" when it is not empty, through
// RapidJSON's writer.
std::string EndpointBody(const std::string& url,
                         const std::string& description = "") {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("url");
  w.String(url.data(), static_cast<rapidjson::SizeType>(url.size()));
  if (!description.empty()) {
    w.Key("description");
    w.String(description.data(),
             static_cast<rapidjson::SizeType>(description.size()));
  }
  w.EndObject();
  return buffer.GetString();
}

TEST_CASE("bad webhook input is 400 invalid_request and stores nothing",
          "[app][webhooks][pg]") {
  Served s;
  const std::string long_url =
      EndpointBody(absl::StrCat("https://127.0.0.1/", std::string(2048, 'a')));
  const std::string long_description =
      EndpointBody("https://127.0.0.1/", std::string(1001, 'd'));
  std::string many_types = R"({"url":"https://127.0.0.1/","types":[)";
  for (int i = 0; i < 101; ++i) {
    absl::StrAppend(&many_types, i > 0 ? "," : "", R"("notes.noted.v1")");
  }
  absl::StrAppend(&many_types, "]}");
  for (const std::string& bad : std::vector<std::string>{
           R"({"url":"ftp://127.0.0.1/"})", R"({"url":"https://"})",
           R"({"url":"http:///x"})",
           R"({"url":"https://user:pass@127.0.0.1/"})",
           R"({"url":"https://127.0.0.1/a b"})", R"({"url":""})", R"({})",
           R"({"url":"https://127.0.0.1/","types":["notes.other.v1"]})",
           R"({"url":"https://127.0.0.1/","types":["notes.noted.v2"]})",
           R"({"url":"https://127.0.0.1/","categories":["Note"]})",
           R"({"url":"https://127.0.0.1/","categories":["a.b"]})",
           R"({"url":"https://127.0.0.1/","colour":"red"})",
           R"({"url":"https://127.0.0.1/","types":"notes.noted.v1"})",
           // Internal addresses (SSRF) and a host that does not resolve.
           R"({"url":"http://10.0.0.1/x"})",
           R"({"url":"http://192.168.1.10/"})",
           R"({"url":"http://169.254.169.254/latest/meta-data"})",
           R"({"url":"http://[::1]:8080/x"})", R"({"url":"http://[fd00::1]/"})",
           R"({"url":"http://0.0.0.0/"})",
           R"({"url":"http://no-such-host.invalid/"})", long_url,
           long_description, many_types}) {
    INFO(bad.substr(0, 120));
    ClientResponse refused = s.Send("POST", "/webhooks", bad);
    CHECK(refused.status == 400);
    CHECK(ErrorCode(refused) == "invalid_request");
  }
  ClientResponse not_json = s.Send("POST", "/webhooks", "{");
  CHECK(not_json.status == 400);
  CHECK(ErrorCode(not_json) == "invalid_json");
  CHECK(s.Count("webhook_endpoints") == 0);

  // The public type alone names every version.
  ClientResponse made =
      s.Send("POST", "/webhooks",
             R"({"url":"https://127.0.0.1/","types":["notes.noted"]})");
  REQUIRE(made.status == 201);
  const std::string id = Parse(made.body)["id"].GetString();
  const std::string path = absl::StrCat("/webhooks/", id);
  for (const char* bad : {R"({"url":"ftp://127.0.0.1/"})",
                          R"({"types":["nope.v1"]})", R"({"categories":[""]})",
                          R"({"secret":"whsec_x"})", R"({"description":1})"}) {
    INFO(bad);
    ClientResponse refused = s.Send("PATCH", path, bad);
    CHECK(refused.status == 400);
    CHECK(ErrorCode(refused) == "invalid_request");
  }
  for (const char* bad :
       {R"({})",
        R"({"from_position":"0.0","from_time":"2020-01-01T00:00:00Z"})",
        R"({"from_position":"nope"})", R"({"from_position":"99999999.1"})",
        R"({"from_time":"yesterday"})"}) {
    INFO(bad);
    ClientResponse refused = s.Send("POST", absl::StrCat(path, "/replay"), bad);
    CHECK(refused.status == 400);
    CHECK(ErrorCode(refused) == "invalid_request");
  }
  for (const char* limit : {"0", "1001", "x", ""}) {
    INFO(limit);
    CHECK(s.Send("GET", absl::StrCat(path, "/attempts?limit=", limit)).status ==
          400);
    CHECK(s.Send("GET", absl::StrCat(path, "/parked?limit=", limit)).status ==
          400);
  }
  rapidjson::Document doc = Parse(s.Send("GET", path).body);
  CHECK(std::string(doc["url"].GetString()) == "https://127.0.0.1/");
  CHECK(std::string(doc["types"][0].GetString()) == "notes.noted");
  CHECK(s.schema().QueryInt(absl::StrCat("SELECT revision FROM ",
                                         s.schema().name(),
                                         ".webhook_endpoints")) == 1);
  CHECK(s.Count("webhook_endpoints") == 1);
}

TEST_CASE("the server runs a webhook deliverer where the projections run",
          "[app][webhooks][pg]") {
  Served s;
  CHECK(s.server().webhook_deliverer() != nullptr);
  // The generated OpenAPI document has every route with the admin scope.
  ClientResponse openapi = s.Send("GET", "/openapi.json");
  REQUIRE(openapi.status == 200);
  rapidjson::Document api = Parse(openapi.body);
  int operations = 0;
  for (const http::Route* route : s.server().router().RouteList()) {
    if (route->pattern.rfind("/webhooks", 0) != 0) continue;
    ++operations;
    std::string method = route->method;
    for (char& c : method) c = static_cast<char>(std::tolower(c));
    INFO(route->method << " " << route->pattern);
    REQUIRE(api["paths"].HasMember(route->pattern.c_str()));
    const auto& op = api["paths"][route->pattern.c_str()][method.c_str()];
    REQUIRE(op.IsObject());
    CHECK(std::string(op["x-required-scopes"][0].GetString()) == "admin");
    CHECK(op["responses"].HasMember("401"));
  }
  CHECK(operations == 13);
  CHECK(api["components"]["schemas"]["CreateWebhook"]["properties"].HasMember(
      "url"));
  CHECK(api["paths"]["/webhooks"]["post"]["responses"]["201"]["content"]
           ["application/json"]["schema"]
               .HasMember("$ref"));
}

}  // namespace

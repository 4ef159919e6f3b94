// An app served in-process (cqrs::AppServer) over real HTTP against the
// test PostgreSQL: the command options an app uses beyond the defaults
// (CheckId, RequireBody, a command on an aggregate type built outside the
// app), plain routes (App::AddRoute), and the actor the command runner
// stamps into a declared command's events. The bank (tests/example_app) runs
// on the same machinery with every route of its contract.
#include "app/app_server.h"

#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/types/optional.h"
#include "app/app.h"
#include "framework/error_code.h"
#include "framework/http/message.h"
#include "framework/http/router.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/test_database.h"

namespace {

namespace json = cqrs::json;
namespace http = cqrs::http;

struct Added {
  static constexpr char kName[] = "Added";
  int64_t n = 0;
  static auto Json() {
    return json::Shape<Added>().Field("n", &Added::n, json::Range(1, 100));
  }
};
struct Tally {
  int64_t total = 0;
};
using TallyEvent = std::variant<Added>;
using TallyType = cqrs::commands::AggregateType<Tally, TallyEvent>;

// An aggregate type built by hand, as an app that keeps its own does.
const TallyType& HandMadeTallies() {
  static const auto* registry = [] {
    auto* r = new cqrs::EventRegistry<TallyEvent>();
    cqrs::EventCodec<Added> codec;
    codec.name = Added::kName;
    codec.to_json = [](const Added& e) { return json::Encode(e); };
    codec.from_json = [](absl::string_view j) {
      return json::Decode<Added>(j);
    };
    REQUIRE(r->Register(std::move(codec)).ok());
    return r;
  }();
  static const auto* type = [] {
    TallyType::Options o;
    o.category = "tally";
    o.registry = registry;
    o.apply = [](Tally& t, const TallyEvent& e) {
      t.total += std::get<Added>(e).n;
    };
    return new TallyType(std::move(o));
  }();
  return *type;
}

absl::Status Digits(absl::string_view id) {
  for (char c : id) {
    if (c < '0' || c > '9') return cqrs::InvalidRequest("id must be digits");
  }
  return absl::OkStatus();
}

struct Total {
  int64_t total = 0;
  static auto Json() {
    return json::Shape<Total>().Field("total", &Total::total);
  }
};

class Served {
 public:
  Served() {
    app_.Event<Added>(Added::kName).Publish<Added>("tally.added");
    app_.Command<Added>("POST", "/tallies/{id}/add", HandMadeTallies(),
                        [](const Tally&, const Added& a) {
                          return std::vector<TallyEvent>{a};
                        })
        .CheckId(Digits)
        .RequireBody()
        .Respond([](const cqrs::CommandResult<Tally>& r) {
          return Total{r.state.total};
        });
    app_.Command<cqrs::NoBody>("POST", "/tallies/{id}/touch", HandMadeTallies(),
                               [](const Tally&, const cqrs::NoBody&) {
                                 return std::vector<TallyEvent>{Added{1}};
                               });
    http::RouteOptions inline_route;
    inline_route.execution = http::Execution::kNetworkThread;
    app_.AddRoute(
        "GET", "/constant",
        [](const http::Request&) {
          return http::JsonResponse(200, R"({"constant":true})");
        },
        inline_route);
    REQUIRE(cqrs::MigrateApp(schema_.pool(), schema_.name()).ok());
    cqrs::ServeOptions options;
    options.schema = schema_.name();
    auto server = cqrs::AppServer::Start(app_, &schema_.pool(), options);
    INFO(server.status().ToString());
    REQUIRE(server.ok());
    server_ = *std::move(server);
    token_ = cqrs::testing::CreateToken(schema_.pool(), schema_.name());
  }

  // The id of the key Send() authenticates with.
  std::string KeyId() const { return token_.substr(5, 12); }

  cqrs::http_test::ClientResponse Send(const std::string& method,
                                       const std::string& target,
                                       const std::string& body) {
    auto client = cqrs::http_test::TestClient::Connect(server_->port());
    REQUIRE(client.ok());
    (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(token_));
    auto r = (*client)->Send(method, target, body,
                             {{"Content-Type", "application/json"}});
    REQUIRE(r.ok());
    return *std::move(r);
  }

  // Runs the route `method` `target` is routed to, in this thread, on
  // `request` as given: a principal set on it reaches the handler as the
  // server's authentication would set it.
  http::Response Dispatch(const std::string& method, const std::string& target,
                          const std::string& body,
                          absl::optional<http::Principal> principal) {
    auto request = http::Request::Create(
        method, target, {{"Content-Type", "application/json"}}, body);
    REQUIRE(request.ok());
    http::RouteMatch match =
        server_->router().Match(method, request->raw_path());
    REQUIRE(match.result == http::RouteMatch::Result::kFound);
    REQUIRE(match.route->handler);
    request->set_path_params(match.params);
    request->set_route_pattern(match.route->pattern);
    if (principal.has_value()) request->set_principal(*std::move(principal));
    return match.route->handler(*request);
  }

  // The "actor" of each event of `stream`'s metadata, oldest first.
  std::vector<std::string> Actors(const std::string& stream) {
    auto events = server_->store().ReadStream(
        stream, cqrs::eventstore::Direction::kForward, 1, 100);
    REQUIRE(events.ok());
    std::vector<std::string> out;
    for (const auto& e : *events) {
      rapidjson::Document doc;
      doc.Parse(e.metadata.c_str());
      REQUIRE(doc.IsObject());
      REQUIRE(doc.HasMember("actor"));
      out.push_back(doc["actor"].GetString());
    }
    return out;
  }

 private:
  cqrs::testing::TestSchema schema_{8};
  cqrs::App app_{"tally"};
  std::unique_ptr<cqrs::AppServer> server_;
  std::string token_;
};

std::string Code(const cqrs::http_test::ClientResponse& r) {
  rapidjson::Document doc;
  doc.Parse(r.body.c_str());
  REQUIRE(doc.IsObject());
  REQUIRE(doc.HasMember("error"));
  return doc["error"]["code"].GetString();
}

TEST_CASE("commands on an aggregate type of the app's own", "[app][pg]") {
  Served s;
  auto first = s.Send("POST", "/tallies/7/add", R"({"n":5})");
  CHECK(first.status == 200);
  CHECK(first.body == R"({"total":5})");
  auto second = s.Send("POST", "/tallies/7/add", R"({"n":2})");
  CHECK(second.body == R"({"total":7})");

  // CheckId refuses before anything is loaded; RequireBody makes an empty
  // body invalid JSON rather than {}.
  auto bad_id = s.Send("POST", "/tallies/x7/add", R"({"n":5})");
  CHECK(bad_id.status == 400);
  CHECK(Code(bad_id) == "invalid_request");
  auto empty = s.Send("POST", "/tallies/7/add", "");
  CHECK(empty.status == 400);
  CHECK(Code(empty) == "invalid_json");
  auto out_of_range = s.Send("POST", "/tallies/7/add", R"({"n":0})");
  CHECK(Code(out_of_range) == "invalid_request");

  // Without RequireBody an empty body is {}.
  auto touched = s.Send("POST", "/tallies/7/touch", "");
  CHECK(touched.status == 200);
  rapidjson::Document doc;
  doc.Parse(touched.body.c_str());
  REQUIRE(doc.IsObject());
  CHECK(doc["version"].GetInt64() == 3);
}

TEST_CASE("a declared command's events name who sent it", "[app][pg]") {
  Served s;
  // Over HTTP with the test's key.
  REQUIRE(s.Send("POST", "/tallies/9/add", R"({"n":5})").status == 200);
  http::Principal key;
  key.id = "0123456789ab";
  key.scopes = {"commands"};
  REQUIRE(s.Dispatch("POST", "/tallies/9/add", R"({"n":2})", key).status ==
          200);
  REQUIRE(s.Dispatch("POST", "/tallies/9/touch", "", key).status == 200);
  CHECK(s.Actors("tally-9") ==
        std::vector<std::string>{s.KeyId(), "0123456789ab", "0123456789ab"});
}

TEST_CASE("published events are served as CloudEvents at GET /events",
          "[app][pg]") {
  Served s;
  REQUIRE(s.Send("POST", "/tallies/9/add", R"({"n":5})").status == 200);
  REQUIRE(s.Send("POST", "/tallies/10/add", R"({"n":2})").status == 200);
  auto page = s.Send("GET", "/events?limit=1", "");
  REQUIRE(page.status == 200);
  rapidjson::Document doc;
  doc.Parse(page.body.c_str());
  REQUIRE(doc.IsObject());
  REQUIRE(doc["items"].Size() == 1);
  const auto& ce = doc["items"][0];
  CHECK(std::string(ce["specversion"].GetString()) == "1.0");
  CHECK(std::string(ce["type"].GetString()) == "tally.added.v1");
  CHECK(std::string(ce["source"].GetString()) == "/tally");
  CHECK(std::string(ce["subject"].GetString()) == "9");
  CHECK(ce["data"]["n"].GetInt64() == 5);
  const std::string next = doc["next"].GetString();
  CHECK(next == ce["position"].GetString());

  auto rest = s.Send("GET", absl::StrCat("/events?after=", next), "");
  REQUIRE(rest.status == 200);
  doc.Parse(rest.body.c_str());
  REQUIRE(doc["items"].Size() == 1);
  CHECK(std::string(doc["items"][0]["subject"].GetString()) == "10");
  auto filtered = s.Send("GET", "/events?subject=10&type=tally.added.v1", "");
  doc.Parse(filtered.body.c_str());
  REQUIRE(doc["items"].Size() == 1);
  CHECK(std::string(doc["items"][0]["subject"].GetString()) == "10");

  // The generated OpenAPI document has the route, with its scope.
  auto openapi = s.Send("GET", "/openapi.json", "");
  rapidjson::Document api;
  api.Parse(openapi.body.c_str());
  REQUIRE(api.IsObject());
  CHECK(std::string(api["paths"]["/events"]["get"]["x-required-scopes"][0]
                        .GetString()) == "events");

  // Bad cursors, limits and types: 400 with the contract's error shape.
  for (const char* bad : {"/events?after=nope",
                          "/events?after=",
                          "/events?after=12",
                          "/events?after=12.",
                          "/events?after=.5",
                          "/events?after=1.2.3",
                          "/events?after=-1.5",
                          "/events?after=1.-5",
                          "/events?after=99999999999999999999.1",
                          "/events?limit=0",
                          "/events?limit=1001",
                          "/events?limit=x",
                          "/events?limit=",
                          "/events?limit=-1",
                          "/events?limit=1.5",
                          "/events?type=tally.other.v1",
                          "/events?type=tally.added",
                          "/events?type=",
                          "/events?type=tally.added.v1,tally.other.v1",
                          "/events?type=tally.added.v1&type=tally.added.v2"}) {
    INFO(bad);
    auto refused = s.Send("GET", bad, "");
    CHECK(refused.status == 400);
    rapidjson::Document error;
    error.Parse(refused.body.c_str());
    REQUIRE(error.IsObject());
    REQUIRE(error.MemberCount() == 1);
    REQUIRE(error.HasMember("error"));
    REQUIRE(error["error"].IsObject());
    CHECK(std::string(error["error"]["code"].GetString()) == "invalid_request");
    REQUIRE(error["error"].HasMember("message"));
    REQUIRE(error["error"]["message"].IsString());
    CHECK(error["error"]["message"].GetStringLength() > 0);
  }
}

TEST_CASE("plain routes are served as declared", "[app][pg]") {
  Served s;
  auto r = s.Send("GET", "/constant", "");
  CHECK(r.status == 200);
  CHECK(r.body == R"({"constant":true})");
}

}  // namespace

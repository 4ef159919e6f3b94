// An app served in-process (cqrs::AppServer) over real HTTP against the
// test PostgreSQL: the command options an app uses beyond the defaults
// (CheckId, RequireBody, a command on an aggregate type built outside the
// app), plain routes (App::AddRoute), the actor the command runner stamps
// into a declared command's events, and published events (GET /events, GET
// /asyncapi.json). The bank (tests/example_app) runs on the same machinery
// with every route of its contract.
#include "app/app_server.h"

#include <memory>
#include <set>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

  // A connection that authenticates with the test's key.
  std::unique_ptr<cqrs::http_test::TestClient> Connect() {
    auto client = cqrs::http_test::TestClient::Connect(server_->port());
    REQUIRE(client.ok());
    (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(token_));
    return *std::move(client);
  }

  cqrs::AppServer& server() { return *server_; }

  int port() const { return server_->port(); }

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
  // wait: the commits are readable once no older transaction of the
  // database (other tests run beside this one) is open.
  auto page = s.Send("GET", "/events?limit=1&wait=10000", "");
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

  auto rest =
      s.Send("GET", absl::StrCat("/events?wait=10000&after=", next), "");
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
                          "/events?type=tally.added.v1&type=tally.added.v2",
                          "/events?wait=-1",
                          "/events?wait=30001",
                          "/events?wait=soon",
                          "/events/stream?after=nope",
                          "/events/stream?type=tally.other.v1"}) {
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

// The items of a GET /events answer.
std::vector<std::string> Subjects(const cqrs::http_test::ClientResponse& r) {
  rapidjson::Document doc;
  doc.Parse(r.body.c_str());
  REQUIRE(doc.IsObject());
  std::vector<std::string> out;
  for (const auto& item : doc["items"].GetArray()) {
    out.push_back(item["subject"].GetString());
  }
  return out;
}

std::string Next(const cqrs::http_test::ClientResponse& r) {
  rapidjson::Document doc;
  doc.Parse(r.body.c_str());
  REQUIRE(doc.IsObject());
  return doc["next"].GetString();
}

TEST_CASE(
    "a long-poll on GET /events answers when an event commits, or "
    "empty at its deadline",
    "[app][pg]") {
  Served s;
  REQUIRE(s.Send("POST", "/tallies/1/add", R"({"n":1})").status == 200);
  auto first = s.Send("GET", "/events?wait=10000", "");
  REQUIRE(Subjects(first) == std::vector<std::string>{"1"});
  const std::string head = Next(first);

  // Nothing new: an empty page at its deadline, the cursor where it was.
  auto empty = s.Send("GET", absl::StrCat("/events?wait=50&after=", head), "");
  REQUIRE(empty.status == 200);
  CHECK(Subjects(empty).empty());
  CHECK(Next(empty) == head);

  // A long-poll in flight gets the event committed while it waits. (The
  // poller thread makes no Catch2 assertion: they are not thread-safe.)
  auto poll_client = s.Connect();
  absl::StatusOr<cqrs::http_test::ClientResponse> polled;
  std::thread poller([&] {
    polled = poll_client->Send("GET",
                               absl::StrCat("/events?wait=20000&after=", head));
  });
  REQUIRE(s.Send("POST", "/tallies/2/add", R"({"n":2})").status == 200);
  poller.join();
  REQUIRE(polled.ok());
  REQUIRE(polled->status == 200);
  CHECK(Subjects(*polled) == std::vector<std::string>{"2"});

  // Filtered: a long-poll for subject 4 passes over subject 3's event.
  const std::string after_two = Next(*polled);
  std::thread filtered_poller([&] {
    polled = poll_client->Send(
        "GET", absl::StrCat("/events?wait=20000&subject=4&after=", after_two));
  });
  REQUIRE(s.Send("POST", "/tallies/3/add", R"({"n":3})").status == 200);
  REQUIRE(s.Send("POST", "/tallies/4/add", R"({"n":4})").status == 200);
  filtered_poller.join();
  REQUIRE(polled.ok());
  CHECK(Subjects(*polled) == std::vector<std::string>{"4"});
}

// The frames of a Server-Sent Events body: (id, event, data) each.
struct SseEvent {
  std::string id;
  std::string type;
  std::string data;
};

std::vector<SseEvent> ParseSse(absl::string_view text) {
  std::vector<SseEvent> events;
  // Complete blocks only: the last one may still be arriving.
  const size_t end = text.rfind("\n\n");
  text = end == absl::string_view::npos ? "" : text.substr(0, end);
  for (absl::string_view block : absl::StrSplit(text, "\n\n")) {
    SseEvent e;
    for (absl::string_view line : absl::StrSplit(block, '\n')) {
      if (absl::ConsumePrefix(&line, "id: ")) e.id = std::string(line);
      if (absl::ConsumePrefix(&line, "event: ")) e.type = std::string(line);
      if (absl::ConsumePrefix(&line, "data: ")) e.data = std::string(line);
    }
    if (!e.data.empty()) events.push_back(std::move(e));
  }
  return events;
}

// Reads `client`'s stream until it holds `n` events (the text so far in
// `*text`).
std::vector<SseEvent> ReadEvents(cqrs::http_test::TestClient& client, size_t n,
                                 std::string* text) {
  while (ParseSse(*text).size() < n) {
    auto part = client.ReadStream(absl::Seconds(20));
    REQUIRE(part.ok());
    *text += *part;
  }
  return ParseSse(*text);
}

TEST_CASE(
    "GET /events/stream sends each published event as a Server-Sent "
    "Event and resumes after Last-Event-ID",
    "[app][pg]") {
  Served s;
  for (int i = 1; i <= 3; ++i) {
    REQUIRE(s.Send("POST", absl::StrCat("/tallies/", i, "/add"),
                   json::Encode(Added{i}))
                .status == 200);
  }
  auto client = s.Connect();
  auto head = client->OpenStream("/events/stream");
  REQUIRE(head.ok());
  REQUIRE(head->status == 200);
  CHECK(head->Header("Content-Type") == "text/event-stream");
  std::string text;
  std::vector<SseEvent> events = ReadEvents(*client, 3, &text);
  CHECK(absl::StartsWith(text, "retry: 2000\n\n"));
  for (size_t i = 0; i < 3; ++i) {
    rapidjson::Document ce;
    ce.Parse(events[i].data.c_str());
    REQUIRE(ce.IsObject());
    CHECK(events[i].type == "tally.added.v1");
    CHECK(std::string(ce["type"].GetString()) == "tally.added.v1");
    CHECK(events[i].id == ce["position"].GetString());
    CHECK(std::string(ce["subject"].GetString()) == std::to_string(i + 1));
  }
  // Live.
  REQUIRE(s.Send("POST", "/tallies/4/add", R"({"n":4})").status == 200);
  events = ReadEvents(*client, 4, &text);
  CHECK(absl::StrContains(events[3].data, R"("subject":"4")"));
  client.reset();  // The client goes away...
  REQUIRE(s.Send("POST", "/tallies/5/add", R"({"n":5})").status == 200);
  REQUIRE(s.Send("POST", "/tallies/6/add", R"({"n":6})").status == 200);

  // ... and comes back with the id of the last event it had.
  auto again = s.Connect();
  REQUIRE(again
              ->OpenStream("/events/stream?after=0.0",
                           {{"Last-Event-ID", events[3].id}})
              .ok());
  std::string more;
  std::vector<SseEvent> resumed = ReadEvents(*again, 2, &more);
  CHECK(absl::StrContains(resumed[0].data, R"("subject":"5")"));
  CHECK(absl::StrContains(resumed[1].data, R"("subject":"6")"));

  // Filters apply; a bad Last-Event-ID is refused.
  auto filtered = s.Connect();
  REQUIRE(filtered->OpenStream("/events/stream?subject=2").ok());
  std::string only;
  std::vector<SseEvent> two = ReadEvents(*filtered, 1, &only);
  CHECK(absl::StrContains(two[0].data, R"("subject":"2")"));
  auto bad = s.Connect();
  auto refused = bad->Send("GET", "/events/stream", "",
                           {{"Last-Event-ID", "not-a-position"}});
  REQUIRE(refused.ok());
  CHECK(refused->status == 400);
  CHECK(Code(*refused) == "invalid_request");
  auto anonymous = cqrs::http_test::TestClient::Connect(s.server().port());
  REQUIRE(anonymous.ok());
  auto unauthenticated = (*anonymous)->Send("GET", "/events/stream");
  REQUIRE(unauthenticated.ok());
  CHECK(unauthenticated->status == 401);
}

TEST_CASE("GET /asyncapi.json describes the published events, unauthenticated",
          "[app][pg]") {
  Served s;
  auto client = cqrs::http_test::TestClient::Connect(s.port());
  REQUIRE(client.ok());
  auto r = (*client)->Send("GET", "/asyncapi.json");  // no token
  REQUIRE(r.ok());
  REQUIRE(r->status == 200);
  rapidjson::Document doc;
  doc.Parse(r->body.c_str());
  REQUIRE(doc.IsObject());
  CHECK(std::string(doc["asyncapi"].GetString()) == "3.0.0");
  CHECK(std::string(doc["info"]["title"].GetString()) == "tally");

  // One message, the CloudEvent of tally.added.v1, whose data is the JSON
  // Schema of Added's shape (bounds included) without "$schema".
  const auto& messages = doc["components"]["messages"];
  REQUIRE(messages.MemberCount() == 1);
  REQUIRE(messages.HasMember("tally.added.v1"));
  const auto& payload = messages["tally.added.v1"]["payload"];
  const auto& properties = payload["properties"];
  CHECK(std::string(properties["type"]["const"].GetString()) ==
        "tally.added.v1");
  CHECK(std::string(properties["source"]["const"].GetString()) == "/tally");
  rapidjson::Document data;
  data.Parse(json::SchemaOf<Added>().c_str());
  data.RemoveMember("$schema");
  CHECK(properties["data"] == data);
  CHECK(properties["data"]["properties"]["n"]["maximum"].GetInt() == 100);
  std::set<std::string> required;
  for (const auto& name : payload["required"].GetArray()) {
    required.insert(name.GetString());
  }
  CHECK(required == std::set<std::string>{"specversion", "id", "source", "type",
                                          "subject", "time", "datacontenttype",
                                          "position", "streamversion",
                                          "category", "data"});
  for (const char* extension : {"position", "streamversion", "category",
                                "correlationid", "causationid"}) {
    INFO(extension);
    CHECK(properties.HasMember(extension));
  }
  CHECK(std::string(messages["tally.added.v1"]["correlationId"]["location"]
                        .GetString()) == "$message.payload#/correlationid");

  // Both channels carry it, and each has a receive operation with the scope.
  CHECK(std::string(doc["channels"]["events"]["address"].GetString()) ==
        "/events");
  CHECK(std::string(doc["channels"]["eventStream"]["address"].GetString()) ==
        "/events/stream");
  for (const char* op : {"readEvents", "streamEvents"}) {
    INFO(op);
    const auto& operation = doc["operations"][op];
    CHECK(std::string(operation["action"].GetString()) == "receive");
    CHECK(std::string(operation["x-required-scopes"][0].GetString()) ==
          "events");
    CHECK(operation["messages"].Size() == 1);
  }
  const auto& scheme = doc["components"]["securitySchemes"]["bearerAuth"];
  CHECK(std::string(scheme["type"].GetString()) == "http");
  CHECK(std::string(scheme["scheme"].GetString()) == "bearer");

  // The generated OpenAPI document lists it as open.
  auto openapi = s.Send("GET", "/openapi.json", "");
  rapidjson::Document api;
  api.Parse(openapi.body.c_str());
  REQUIRE(api.IsObject());
  REQUIRE(api["paths"].HasMember("/asyncapi.json"));
  CHECK(api["paths"]["/asyncapi.json"]["get"]["security"].Empty());
}

TEST_CASE("plain routes are served as declared", "[app][pg]") {
  Served s;
  auto r = s.Send("GET", "/constant", "");
  CHECK(r.status == 200);
  CHECK(r.body == R"({"constant":true})");
}

}  // namespace

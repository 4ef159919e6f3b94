// The example apps of docs/ (counter_app, inventory_app), built against the
// installed package by tests/packaging/find_package_test.sh, driven from
// outside through their HTTP API and their command line: the application
// object and the CLI every app gets (issue 13), on apps that are not the
// bank.
#include <signal.h>

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/child_process.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace {

using cqrs::http_test::ClientResponse;
using cqrs::http_test::TestClient;
using cqrs::testing::ChildProcess;
using cqrs::testing::RunShell;
using cqrs::testing::ShellResult;
using cqrs::testing::TestSchema;

// `app <args> --database-url <test db> --schema <test schema>`, stdout and
// stderr together.
ShellResult Cli(const std::string& app, TestSchema& schema,
                const std::string& args) {
  return RunShell(absl::StrCat(app, " ", args, " --database-url '",
                               schema.url(), "' --schema ", schema.name(),
                               " 2>&1"));
}

// A key with every scope, made by `app keys create`: its token.
std::string CreateKey(const std::string& app, TestSchema& schema) {
  ShellResult created = Cli(app, schema,
                            "keys create --name tests --scopes "
                            "commands,queries,events,admin,metrics");
  INFO(created.output);
  REQUIRE(created.exit_code == 0);
  return created.LastLine();
}

// `app serve` on a port it picks until destroyed (SIGTERM, then the exit code
// is checked); requests send a key with every scope.
class Server {
 public:
  Server(const std::string& app, TestSchema& schema,
         std::vector<std::string> extra = {})
      : token_(CreateKey(app, schema)),
        process_(app, Args(schema, std::move(extra)),
                 ChildProcess::Output::kCapture),
        port_(process_.WaitForListeningPort()) {
    const bool up = cqrs::testing::Eventually([&] {
      auto client = TestClient::Connect(port_, absl::Seconds(2));
      if (!client.ok()) return false;
      auto r = (*client)->Send("GET", "/healthz");
      return r.ok() && r->status == 200;
    });
    if (!up) FAIL("the app did not answer /healthz within 60 s");
  }
  ~Server() {
    if (!stopped_) Stop();
  }
  int Stop() {
    stopped_ = true;
    return process_.Kill(SIGTERM);
  }

  ClientResponse Send(const std::string& method, const std::string& target,
                      const std::string& body = "",
                      const cqrs::http::HeaderList& headers = {}) {
    auto client = TestClient::Connect(port_);
    REQUIRE(client.ok());
    (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(token_));
    cqrs::http::HeaderList all = headers;
    if (method == "POST") all.push_back({"Content-Type", "application/json"});
    auto r = (*client)->Send(method, target, body, all);
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    return *r;
  }

 private:
  static std::vector<std::string> Args(TestSchema& schema,
                                       std::vector<std::string> extra) {
    std::vector<std::string> args = {
        "serve",      "--listen", "127.0.0.1:0", "--database-url",
        schema.url(), "--schema", schema.name()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  std::string token_;
  ChildProcess process_;
  int port_;
  bool stopped_ = false;
};

rapidjson::Document Json(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.c_str(), body.size());
  INFO(body);
  REQUIRE(!doc.HasParseError());
  return doc;
}

std::string ErrorCode(const ClientResponse& r) {
  rapidjson::Document doc = Json(r.body);
  REQUIRE(doc.HasMember("error"));
  return doc["error"]["code"].GetString();
}

// The position a command answered, for X-Min-Position.
cqrs::http::HeaderList After(const ClientResponse& command) {
  rapidjson::Document doc = Json(command.body);
  return {{"X-Min-Position", doc["position"].GetString()}};
}

TEST_CASE("counter_app: commands, queries, strict JSON and the CLI",
          "[examples][pg]") {
  TestSchema schema;
  const std::string app = COUNTER_APP;
  ShellResult migrated = Cli(app, schema, "migrate");
  INFO(migrated.output);
  CHECK(migrated.exit_code == 0);

  Server server(app, schema);
  ClientResponse r =
      server.Send("POST", "/counters/c1/increment", R"({"by":5})");
  INFO(r.body);
  CHECK(r.status == 200);
  rapidjson::Document done = Json(r.body);
  CHECK(std::string(done["id"].GetString()) == "c1");
  CHECK(done["version"].GetInt64() == 1);
  ClientResponse read = server.Send("GET", "/counters/c1", "", After(r));
  CHECK(read.status == 200);
  CHECK(read.body == R"({"id":"c1","value":5})");

  // An id that needs escaping in JSON: quotes, a backslash, non-ASCII.
  r = server.Send("POST", "/counters/a%22b%5Cc%C3%A9%F0%9F%98%80/increment",
                  R"({"by":2})");
  CHECK(r.status == 200);
  CHECK(std::string(Json(r.body)["id"].GetString()) ==
        "a\"b\\c\xC3\xA9\xF0\x9F\x98\x80");
  read =
      server.Send("GET", "/counters/a%22b%5Cc%C3%A9%F0%9F%98%80", "", After(r));
  CHECK(read.status == 200);
  CHECK(std::string(Json(read.body)["id"].GetString()) ==
        "a\"b\\c\xC3\xA9\xF0\x9F\x98\x80");

  // Strict bodies: 400 invalid_request naming the field; nothing appended.
  for (const char* body : {R"({"by":0})", R"({"by":1.5})", R"({"by":"1"})",
                           R"({"by":1,"by":2})", R"({"by":1,"bx":2})", "{}"}) {
    INFO(body);
    ClientResponse bad = server.Send("POST", "/counters/c1/increment", body);
    CHECK(bad.status == 400);
    CHECK(ErrorCode(bad) == "invalid_request");
  }
  CHECK(server.Send("POST", "/counters/c1/increment", "{").status == 400);
  r = server.Send("POST", "/counters/c1/increment", R"({"by":1})");
  CHECK(Json(r.body)["version"].GetInt64() == 2);

  ClientResponse missing = server.Send("GET", "/counters/nope");
  CHECK(missing.status == 404);
  CHECK(ErrorCode(missing) == "counter_not_found");

  ClientResponse openapi = server.Send("GET", "/openapi.json");
  CHECK(openapi.status == 200);
  rapidjson::Document doc = Json(openapi.body);
  CHECK(doc["paths"].HasMember("/counters/{id}/increment"));
  CHECK(doc["paths"].HasMember("/counters/{id}"));
  const auto& schema_of_body =
      doc["paths"]["/counters/{id}/increment"]["post"]["requestBody"]["content"]
         ["application/json"]["schema"];
  CHECK(schema_of_body["properties"]["by"]["minimum"].GetInt() == 1);
  CHECK(server.Send("GET", "/metrics").status == 200);
  CHECK(server.Send("GET", "/readyz").status == 200);

  // The CLI of every app: status, rebuild (the query answers the same).
  ShellResult status = Cli(app, schema, "projections status --json");
  INFO(status.output);
  CHECK(status.exit_code == 0);
  CHECK(absl::StrContains(status.output, "\"name\":\"counter_values\""));
  ShellResult rebuild = Cli(app, schema, "projections rebuild --all");
  INFO(rebuild.output);
  CHECK(rebuild.exit_code == 0);
  CHECK(absl::StrContains(rebuild.output, "swapped"));
  read = server.Send("GET", "/counters/c1", "", After(r));
  CHECK(read.body == R"({"id":"c1","value":6})");
  CHECK(schema.QueryInt(absl::StrCat("SELECT generation FROM ", schema.name(),
                                     ".projections WHERE name = "
                                     "'counter_values'")) == 2);
  CHECK(server.Stop() == 0);
}

TEST_CASE("counter_app: help, usage errors and definition checks",
          "[examples]") {
  const std::string app = COUNTER_APP;
  for (const char* args : {"--help", "serve --help", "projections --help",
                           "projections rebuild --help"}) {
    INFO(args);
    ShellResult r = RunShell(absl::StrCat(app, " ", args, " 2>&1"));
    CHECK(r.exit_code == 0);
    CHECK(absl::StrContains(r.output, "counter_app"));
  }
  for (const char* args :
       {"", "frobnicate", "serve --bogus", "serve --threads 0",
        "serve --log-format xml", "serve --schema 'a b'", "projections",
        "projections frobnicate", "projections replay-parked",
        "serve --max-connections 10 --max-queued-requests 10",
        "serve --start-timeout soon", "serve --start-timeout -1s",
        "project --start-timeout 2h"}) {
    INFO(args);
    ShellResult r =
        RunShell(absl::StrCat("env -u DATABASE_URL ", app, " ", args, " 2>&1"));
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(absl::StrContains(r.output, "counter_app: "));
    CHECK(absl::StrContains(r.output, "--help"));
  }
  ShellResult list = RunShell(absl::StrCat(app, " projections list 2>&1"));
  CHECK(list.exit_code == 0);
  CHECK(absl::StrContains(list.output, "counter_values"));
  CHECK(absl::StrContains(list.output, "Incremented"));
  // A database that is not there: migrate fails at once; serve and project
  // wait --start-timeout for it, retrying (0s: they fail at once too).
  const auto unreachable = [&](const std::string& command) {
    return RunShell(
        absl::StrCat(app, " ", command,
                     " --database-url 'host=/nonexistent-socket-dir "
                     "port=1 connect_timeout=1' 2>&1"));
  };
  ShellResult down = unreachable("migrate");
  CHECK(down.exit_code == 1);
  for (const char* command : {"serve", "project"}) {
    INFO(command);
    ShellResult waited =
        unreachable(absl::StrCat(command, " --start-timeout 1500ms"));
    INFO(waited.output);
    CHECK(waited.exit_code == 1);
    CHECK(absl::StrContains(waited.output,
                            "database not ready at start, retrying"));
    ShellResult at_once =
        unreachable(absl::StrCat(command, " --start-timeout 0s"));
    INFO(at_once.output);
    CHECK(at_once.exit_code == 1);
    CHECK_FALSE(absl::StrContains(at_once.output, "retrying"));
  }
}

TEST_CASE("counter_app: API keys from the CLI", "[examples][pg]") {
  TestSchema schema;
  const std::string app = COUNTER_APP;
  ShellResult created = Cli(app, schema,
                            "keys create --name ci --scopes commands,queries "
                            "--expires-in 30d");
  INFO(created.output);
  REQUIRE(created.exit_code == 0);
  // The token alone on the last line, for scripts.
  const std::string token = created.LastLine();
  CHECK(absl::StartsWith(token, "cqrs_"));
  CHECK(token.size() == 5 + 12 + 1 + 43);
  const std::string id = token.substr(5, 12);

  ShellResult list = Cli(app, schema, "keys list --json");
  INFO(list.output);
  CHECK(list.exit_code == 0);
  CHECK(absl::StrContains(list.output, absl::StrCat("\"id\":\"", id, "\"")));
  CHECK(
      absl::StrContains(list.output, "\"scopes\":[\"commands\",\"queries\"]"));
  CHECK(absl::StrContains(list.output, "\"revoked_at\":null"));
  CHECK_FALSE(absl::StrContains(list.output, token.substr(18)));  // no secret

  CHECK(Cli(app, schema, absl::StrCat("keys revoke ", id)).exit_code == 0);
  list = Cli(app, schema, "keys list --json");
  CHECK_FALSE(absl::StrContains(list.output, "\"revoked_at\":null"));
  CHECK(Cli(app, schema, "keys revoke 000000000000").exit_code == 1);
  for (const char* bad : {"keys create --name x", "keys create --scopes a",
                          "keys create --name x --scopes 'A B'",
                          "keys create --name x --scopes a --expires-in soon",
                          "keys revoke", "keys"}) {
    INFO(bad);
    CHECK(Cli(app, schema, bad).exit_code == 2);
  }
}

TEST_CASE("inventory_app: business rules, two read models, worker process",
          "[examples][pg]") {
  TestSchema schema;
  const std::string app = INVENTORY_APP;
  // The API without projections, and a worker beside it.
  Server server(app, schema, {"--no-projections"});
  ChildProcess worker(app, {"project", "--database-url", schema.url(),
                            "--schema", schema.name()});

  CHECK(server.Send("POST", "/items/i1/receive", R"({"quantity":10})").status ==
        200);
  CHECK(
      server.Send("POST", "/items/i1/reserve", R"({"order":"o1","quantity":3})")
          .status == 200);
  ClientResponse r = server.Send("POST", "/items/i1/reserve",
                                 R"({"order":"o2","quantity":5})");
  CHECK(r.status == 200);
  ClientResponse refused = server.Send("POST", "/items/i1/reserve",
                                       R"({"order":"o3","quantity":5})");
  CHECK(refused.status == 422);
  CHECK(ErrorCode(refused) == "insufficient_stock");
  r = server.Send("POST", "/items/i1/release", R"({"order":"o1"})");
  CHECK(r.status == 200);
  ClientResponse again =
      server.Send("POST", "/items/i1/release", R"({"order":"o1"})");
  CHECK(again.status == 404);
  CHECK(ErrorCode(again) == "reservation_not_found");
  CHECK(server.Send("POST", "/items/i2/receive", R"({"quantity":4})").status ==
        200);
  r = server.Send("POST", "/items/i2/reserve",
                  R"({"order":"o2","quantity":4})");
  CHECK(r.status == 200);

  const std::string item =
      R"({"id":"i1","on_hand":10,"reserved":5,"available":5})";
  const std::string order =
      R"([{"item":"i1","quantity":5},{"item":"i2","quantity":4}])";
  ClientResponse read = server.Send("GET", "/items/i1", "", After(r));
  CHECK(read.status == 200);
  CHECK(read.body == item);
  read = server.Send("GET", "/orders/o2/reservations", "", After(r));
  CHECK(read.status == 200);
  CHECK(read.body == order);
  CHECK(server.Send("GET", "/items/nope").status == 404);

  ShellResult rebuild = Cli(app, schema, "projections rebuild --all --fast");
  INFO(rebuild.output);
  CHECK(rebuild.exit_code == 0);
  CHECK(server.Send("GET", "/items/i1").body == item);
  CHECK(server.Send("GET", "/orders/o2/reservations").body == order);
  CHECK(worker.Kill(SIGTERM) == 0);
  CHECK(server.Stop() == 0);
}

}  // namespace

// `bank serve` at its limits, driven from outside: SIGTERM with
// read-your-writes queries parked (each is answered 503 with Retry-After at
// once, not cut off after the drain), and a connection table filled by
// parked queries (a newcomer gets 503 overloaded, /healthz still answers);
// the flags that set those limits.
#include <signal.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/support/child_process.h"
#include "tests/support/prometheus_text.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace bank {
namespace {

using cqrs::http_test::ClientResponse;
using cqrs::http_test::TestClient;
using cqrs::testing::TestSchema;

// A position no projection reaches, and the longest wait for it.
const cqrs::http::HeaderList kParkForLong = {
    {"X-Min-Position", "99999999999.1"}, {"X-Max-Wait-Ms", "30000"}};

using ::cqrs::testing::Eventually;

std::string ErrorCode(const ClientResponse& response) {
  rapidjson::Document doc;
  doc.Parse(response.body.c_str());
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("error") ||
      !doc["error"].IsObject() || !doc["error"].HasMember("code") ||
      !doc["error"]["code"].IsString()) {
    return "<not an error body: " + response.body + ">";
  }
  return doc["error"]["code"].GetString();
}

// `bank serve` on a port it picks, with the test's database and schema and
// `extra` flags, and one kept-alive connection to watch it (it counts in the
// connection table; polling keeps it from idling out).
class Serve {
 public:
  explicit Serve(TestSchema& schema, std::vector<std::string> extra = {})
      : process_(BANK_BINARY, Args(schema, std::move(extra)),
                 cqrs::testing::ChildProcess::Output::kCapture),
        port_(process_.WaitForListeningPort()) {
    REQUIRE(Eventually([&] {
      if (monitor_ == nullptr) {
        auto client = TestClient::Connect(port_, absl::Seconds(10));
        if (!client.ok()) return false;
        monitor_ = *std::move(client);
      }
      auto r = monitor_->Send("GET", "/readyz");
      if (!r.ok()) monitor_.reset();
      return r.ok() && r->status == 200;
    }));
  }

  // Read-your-writes queries parked in the server (cqrs_queries_waiting).
  int Waiting() {
    auto r = monitor_->Send("GET", "/metrics");
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    REQUIRE(r->status == 200);
    auto parsed = cqrs::testing::ParsePrometheusText(r->body);
    REQUIRE(parsed.ok());
    return static_cast<int>(parsed->Value("cqrs_queries_waiting").value_or(-1));
  }

  int port() const { return port_; }

  // SIGTERM; returns the exit code.
  int Terminate() { return process_.Kill(SIGTERM); }

 private:
  static std::vector<std::string> Args(TestSchema& schema,
                                       std::vector<std::string> extra) {
    // Without authentication (allowed on a loopback address): these tests
    // are about overload and shutdown; bank_auth_test covers tokens.
    std::vector<std::string> args = {
        "serve",      "--listen", "127.0.0.1:0", "--database-url",
        schema.url(), "--schema", schema.name(), "--no-auth"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  cqrs::testing::ChildProcess process_;
  const int port_;
  std::unique_ptr<TestClient> monitor_;
};

// Clients that each send one query parked for 30 s, on threads.
class ParkedQueries {
 public:
  struct Result {
    absl::StatusOr<ClientResponse> response =
        absl::UnavailableError("not sent");
    absl::Time answered;
  };

  ParkedQueries(int port, int n) : results_(static_cast<size_t>(n)) {
    for (Result& result : results_) {
      threads_.emplace_back([port, &result] {
        // The client's own timeout is beyond the parked wait.
        auto client = TestClient::Connect(port, absl::Seconds(60));
        if (client.ok()) {
          result.response =
              (*client)->Send("GET", "/accounts/nobody", "", kParkForLong);
        } else {
          result.response = client.status();
        }
        result.answered = absl::Now();
      });
    }
  }
  ~ParkedQueries() { Join(); }

  // Waits for every client; the results are then readable.
  const std::vector<Result>& Join() {
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
    return results_;
  }

 private:
  std::vector<Result> results_;
  std::vector<std::thread> threads_;
};

TEST_CASE(
    "SIGTERM answers every parked read-your-writes query 503 with "
    "Retry-After at once",
    "[bank][pg]") {
  TestSchema schema;
  Serve server(schema);
  const int port = server.port();
  constexpr int kParked = 5;
  ParkedQueries parked(port, kParked);
  REQUIRE(Eventually([&] { return server.Waiting() == kParked; }));

  const absl::Time terminated = absl::Now();
  const int exit_code = server.Terminate();
  const auto& results = parked.Join();
  CHECK(exit_code == 0);
  for (const auto& result : results) {
    // An answer, not a closed connection (on the code before this test,
    // the connections were closed after the 10 s drain), and the shutdown's
    // 503, not the end of the wait.
    INFO(result.response.status().ToString());
    REQUIRE(result.response.ok());
    CHECK(result.response->status == 503);
    CHECK(ErrorCode(*result.response) == "unavailable");
    CHECK(result.response->Header("Retry-After").value_or("") == "1");
    CHECK(result.answered >= terminated);
  }
}

TEST_CASE(
    "bank serve --max-connections: parked queries fill the table, a "
    "newcomer gets 503 overloaded, /healthz and /metrics still answer",
    "[bank][pg]") {
  TestSchema schema;
  // The monitor connection and seven parked queries fill the table.
  Serve server(schema,
               {"--max-connections", "8", "--max-queued-requests", "2"});
  const int port = server.port();
  constexpr int kParked = 7;
  ParkedQueries parked(port, kParked);
  REQUIRE(Eventually([&] { return server.Waiting() == kParked; }));

  auto newcomer = TestClient::Connect(port);
  REQUIRE(newcomer.ok());
  auto refused = (*newcomer)->Send("GET", "/stats");
  INFO(refused.status().ToString());
  REQUIRE(refused.ok());
  CHECK(refused->status == 503);
  CHECK(ErrorCode(*refused) == "overloaded");
  CHECK(refused->Header("Retry-After").value_or("") == "1");

  for (const char* path : {"/healthz", "/metrics"}) {
    INFO(path);
    auto ops = TestClient::Connect(port);
    REQUIRE(ops.ok());
    auto answered = (*ops)->Send("GET", path);
    INFO(answered.status().ToString());
    REQUIRE(answered.ok());
    CHECK(answered->status == 200);
  }

  CHECK(server.Terminate() == 0);
  for (const auto& result : parked.Join()) {
    INFO(result.response.status().ToString());
    REQUIRE(result.response.ok());
    CHECK(result.response->status == 503);
  }
}

TEST_CASE("bank serve refuses connection limits that cannot work", "[bank]") {
  const auto serve = [](const std::string& flags) {
    return cqrs::testing::RunShell(absl::StrCat(
        "env -u DATABASE_URL ", BANK_BINARY, " serve ", flags, " 2>&1"));
  };
  for (const char* flags :
       {"--max-connections 1", "--max-connections x",
        "--max-connections 100 --max-queued-requests 100",
        "--max-queued-requests 0", "--max-queued-requests=2000000"}) {
    INFO(flags);
    const cqrs::testing::ShellResult run = serve(flags);
    CHECK(run.exit_code == 2);
    CHECK(absl::StrContains(run.output, "--max-"));
  }
  const cqrs::testing::ShellResult help = serve("--help");
  CHECK(help.exit_code == 0);
  CHECK(absl::StrContains(help.output, "--max-connections INT"));
  CHECK(absl::StrContains(help.output, "--max-queued-requests INT"));
}

}  // namespace
}  // namespace bank

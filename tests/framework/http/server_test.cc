#include "framework/http/server.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "framework/http/status_mapping.h"
#include "framework/uuid.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/framework/http/log_capture.h"
#include "tests/support/wait.h"

namespace cqrs {
namespace http {
namespace {

// Route options spelled out, rather than as bare positional values.
RouteOptions OnNetworkThread() {
  RouteOptions options;
  options.execution = Execution::kNetworkThread;
  return options;
}

// An operations route: on its own lane, served beyond the connection table.
RouteOptions Operations(Execution execution) {
  RouteOptions options;
  options.execution = execution;
  options.operations = true;
  return options;
}

RouteOptions JsonBodyRequired() {
  RouteOptions options;
  options.require_json_body = true;
  return options;
}

using http_test::ClientResponse;
using http_test::LogCapture;
using http_test::TestClient;

constexpr absl::Duration kGenerous = absl::Seconds(10);

// Handlers shared by the tests; slow ones wait for the test's signal.
struct Hooks {
  absl::Notification slow_started;
  absl::Notification release_slow;
  std::atomic<int> slow_calls{0};
  absl::Mutex mu;
  std::vector<Responder> parked ABSL_GUARDED_BY(mu);
  // /block: handlers that hold their worker until released.
  std::atomic<int> block_calls{0};
  absl::Notification release_block;
};

void AddRoutes(Router& router, Hooks& hooks) {
  router.Add("GET", "/hello", [](const Request&) {
    return JsonResponse(200, R"({"hello":"world"})");
  });
  router.Add("POST", "/hello", [](const Request&) {
    return JsonResponse(201, R"({"posted":true})");
  });
  router.Add("GET", "/accounts/{id}", [](const Request& request) {
    return JsonResponse(
        200,
        absl::StrCat(R"({"id":")", request.PathParam("id"), R"(","limit":")",
                     request.Query("limit").value_or("none"), R"("})"));
  });
  router.Add("GET", "/accounts/stats", [](const Request&) {
    return JsonResponse(200, R"({"stats":true})");
  });
  router.Add(
      "POST", "/echo",
      [](const Request& request) { return JsonResponse(200, request.body()); },
      JsonBodyRequired());
  router.Add(
      "GET", "/healthz", [](const Request&) { return TextResponse(200, "ok"); },
      Operations(Execution::kNetworkThread));
  router.Add("GET", "/correlation", [](const Request& request) {
    return TextResponse(200, request.correlation_id());
  });
  router.Add("GET", "/status/notfound", [](const Request&) {
    return ResponseFromStatus(WithErrorCode(
        absl::NotFoundError("account a1 not found"), "account_not_found"));
  });
  router.Add("GET", "/status/internal", [](const Request&) {
    return ResponseFromStatus(absl::InternalError("password=hunter2 leaked"));
  });
  router.Add("GET", "/throws", [](const Request&) -> Response {
    throw std::runtime_error("boom");
  });
  router.Add("GET", "/no-content", [](const Request&) {
    Response response;
    response.status = 204;
    response.body = "ignored";
    response.headers.emplace_back("X-Custom", "yes");
    response.headers.emplace_back("X-Evil", "a\r\nInjected: 1");
    return response;
  });
  router.AddAsync(
      "GET", "/async",
      [](const Request& request, Responder respond) {
        const std::string id = request.correlation_id();
        std::thread([respond, id] {
          // Stands for slow work finishing later on another thread (the
          // route's point); nothing waits on this sleep.
          absl::SleepFor(absl::Milliseconds(20));
          respond(TextResponse(200, absl::StrCat("async ", id)));
        }).detach();
      },
      OnNetworkThread());
  router.AddAsync("GET", "/dropped", [](const Request&, Responder) {});
  router.AddAsync(
      "GET", "/parked",
      [&hooks](const Request&, Responder respond) {
        absl::MutexLock lock(&hooks.mu);
        hooks.parked.push_back(std::move(respond));
      },
      OnNetworkThread());
  router.Add("GET", "/block", [&hooks](const Request&) {
    ++hooks.block_calls;
    hooks.release_block.WaitForNotificationWithTimeout(absl::Seconds(60));
    return JsonResponse(200, R"({"blocked":"done"})");
  });
  // On the worker pool like a real /metrics (which reads the database), and
  // an operations route.
  router.Add(
      "GET", "/metrics",
      [](const Request&) { return TextResponse(200, "up 1\n"); },
      Operations(Execution::kWorkerPool));
  router.Add("GET", "/slow", [&hooks](const Request&) {
    ++hooks.slow_calls;
    if (!hooks.slow_started.HasBeenNotified()) hooks.slow_started.Notify();
    hooks.release_slow.WaitForNotificationWithTimeout(kGenerous);
    return JsonResponse(200, R"({"slow":"done"})");
  });
}

// A server on 127.0.0.1 with an ephemeral port and the routes above.
class TestServer {
 public:
  explicit TestServer(ServerOptions options = ServerOptions()) {
    AddRoutes(router_, hooks_);
    REQUIRE(router_.status().ok());
    options.listen_address = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<Server>> server =
        Server::Create(std::move(options), &router_);
    REQUIRE(server.ok());
    server_ = *std::move(server);
    REQUIRE(server_->Start().ok());
  }

  Server& server() { return *server_; }
  Hooks& hooks() { return hooks_; }
  int port() const { return server_->port(); }

  std::unique_ptr<TestClient> Connect() {
    absl::StatusOr<std::unique_ptr<TestClient>> client =
        TestClient::Connect(port());
    REQUIRE(client.ok());
    return *std::move(client);
  }

 private:
  // The router and hooks outlive the server (declared first).
  Hooks hooks_;
  Router router_;
  std::unique_ptr<Server> server_;
};

ClientResponse MustSend(TestClient& client, absl::string_view method,
                        absl::string_view target, absl::string_view body = "",
                        const HeaderList& headers = {}) {
  absl::StatusOr<ClientResponse> response =
      client.Send(method, target, body, headers);
  INFO(response.status().ToString());
  REQUIRE(response.ok());
  return *std::move(response);
}

ClientResponse MustRead(TestClient& client) {
  absl::StatusOr<ClientResponse> response = client.ReadResponse();
  INFO(response.status().ToString());
  REQUIRE(response.ok());
  return *std::move(response);
}

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

TEST_CASE("one connection serves several requests", "[http]") {
  TestServer server;
  auto client = server.Connect();
  for (int i = 0; i < 5; ++i) {
    const ClientResponse response = MustSend(*client, "GET", "/hello");
    CHECK(response.status == 200);
    CHECK(response.body == R"({"hello":"world"})");
    CHECK(response.Header("Content-Type").value_or("") == "application/json");
    CHECK(response.keep_alive);
  }
  const ClientResponse posted = MustSend(*client, "POST", "/hello");
  CHECK(posted.status == 201);
}

TEST_CASE("path parameters and query reach the handler", "[http]") {
  TestServer server;
  auto client = server.Connect();
  ClientResponse response =
      MustSend(*client, "GET", "/accounts/a%20b?limit=5&x=1");
  CHECK(response.status == 200);
  CHECK(response.body == R"({"id":"a b","limit":"5"})");
  response = MustSend(*client, "GET", "/accounts/stats");
  CHECK(response.body == R"({"stats":true})");
}

TEST_CASE("unknown path is 404 not_found", "[http]") {
  TestServer server;
  auto client = server.Connect();
  const ClientResponse response = MustSend(*client, "GET", "/nope");
  CHECK(response.status == 404);
  CHECK(response.body ==
        R"({"error":{"code":"not_found","message":"no route for /nope"}})");
  CHECK(response.Header("Content-Type").value_or("") == "application/json");
  CHECK(response.keep_alive);
}

TEST_CASE("wrong method is 405 with Allow", "[http]") {
  TestServer server;
  auto client = server.Connect();
  ClientResponse response = MustSend(*client, "DELETE", "/hello");
  CHECK(response.status == 405);
  CHECK(ErrorCode(response) == "method_not_allowed");
  CHECK(response.Header("Allow").value_or("") == "GET, HEAD, OPTIONS, POST");
  response = MustSend(*client, "GET", "/echo");
  CHECK(response.status == 405);
  CHECK(response.Header("Allow").value_or("") == "OPTIONS, POST");
  // HEAD where only POST is served.
  response = MustSend(*client, "HEAD", "/echo");
  CHECK(response.status == 405);
  CHECK(response.Header("Allow").value_or("") == "OPTIONS, POST");
  CHECK(response.body.empty());
  CHECK(response.keep_alive);
}

TEST_CASE("HEAD answers as GET without the body", "[http]") {
  TestServer server;
  auto client = server.Connect();
  for (const char* target :
       {"/hello", "/accounts/a%20b?limit=5", "/accounts/stats", "/healthz",
        "/async", "/status/notfound"}) {
    INFO(target);
    const ClientResponse get = MustSend(*client, "GET", target);
    const ClientResponse head = MustSend(*client, "HEAD", target);
    CHECK(head.status == get.status);
    CHECK(head.body.empty());
    CHECK_FALSE(get.body.empty());
    CHECK(head.Header("Content-Length").value_or("") ==
          std::to_string(get.body.size()));
    CHECK(head.Header("Content-Type") == get.Header("Content-Type"));
    CHECK(head.keep_alive);
  }
  // The connection is still in step: a GET after the HEADs reads its body.
  const ClientResponse after = MustSend(*client, "GET", "/hello");
  CHECK(after.body == R"({"hello":"world"})");
}

TEST_CASE("OPTIONS is 204 with Allow on an existing path, else 404", "[http]") {
  TestServer server;
  auto client = server.Connect();
  ClientResponse response = MustSend(*client, "OPTIONS", "/hello");
  CHECK(response.status == 204);
  CHECK(response.body.empty());
  CHECK(response.Header("Allow").value_or("") == "GET, HEAD, OPTIONS, POST");
  response = MustSend(*client, "OPTIONS", "/accounts/a1");
  CHECK(response.status == 204);
  CHECK(response.Header("Allow").value_or("") == "GET, HEAD, OPTIONS");
  response = MustSend(*client, "OPTIONS", "/echo");
  CHECK(response.status == 204);
  CHECK(response.Header("Allow").value_or("") == "OPTIONS, POST");
  CHECK(response.keep_alive);
  response = MustSend(*client, "OPTIONS", "/nope");
  CHECK(response.status == 404);
  CHECK(ErrorCode(response) == "not_found");
}

TEST_CASE("a NUL byte anywhere in a request is 400 invalid_request", "[http]") {
  using namespace std::string_literals;
  TestServer server;
  {
    // Percent-encoded in the query and in a path segment: the handler,
    // which echoes what it gets, never runs.
    auto client = server.Connect();
    for (const char* target : {"/accounts/a1?limit=5%00x", "/accounts/a%00b",
                               "/accounts/%00", "/hello?x%00=1"}) {
      INFO(target);
      const ClientResponse response = MustSend(*client, "GET", target);
      CHECK(response.status == 400);
      CHECK(ErrorCode(response) == "invalid_request");
      CHECK(absl::StrContains(response.body, "NUL byte"));
    }
    // In the body, also after a complete JSON value.
    for (const std::string& body :
         {"{\"amount\":5}\0{\"amount\":7}garbage"s, "{\"a\":\"x\0y\"}"s}) {
      const ClientResponse response =
          MustSend(*client, "POST", "/echo", body,
                   {{"Content-Type", "application/json"}});
      CHECK(response.status == 400);
      CHECK(ErrorCode(response) == "invalid_request");
    }
    // A header value: Beast's parser already refuses a NUL there (as a
    // malformed request, also 400 invalid_request, closing the connection);
    // Request::Create() checks again (message_test.cc).
    const ClientResponse response =
        MustSend(*client, "GET", "/hello", "", {{"X-Thing", "a\0b"s}});
    CHECK(response.status == 400);
    CHECK(ErrorCode(response) == "invalid_request");
  }
  // Raw in the target and in a header: written byte for byte.
  for (const std::string& raw :
       {"GET /accounts/a\0b HTTP/1.1\r\nHost: x\r\n\r\n"s,
        "GET /accounts/a1?limit=5\0x HTTP/1.1\r\nHost: x\r\n\r\n"s,
        "GET /hello HTTP/1.1\r\nHost: x\r\nX-Thing: a\0b\r\n\r\n"s}) {
    auto client = server.Connect();
    REQUIRE(client->WriteRaw(raw).ok());
    const ClientResponse response = MustRead(*client);
    CHECK(response.status == 400);
    CHECK(ErrorCode(response) == "invalid_request");
  }
}

TEST_CASE("a body over the limit is 413 and closes", "[http]") {
  ServerOptions options;
  options.body_limit = 1024;
  TestServer server(options);

  SECTION("just over the limit") {
    auto client = server.Connect();
    const ClientResponse response =
        MustSend(*client, "POST", "/echo", std::string(1025, 'x'),
                 {{"Content-Type", "application/json"}});
    CHECK(response.status == 413);
    CHECK(ErrorCode(response) == "payload_too_large");
    CHECK_FALSE(response.keep_alive);
    CHECK(client->WaitForClose().ok());
  }
  SECTION("far over the limit, sent in full") {
    auto client = server.Connect();
    const std::string body(2 << 20, 'x');
    // The server answers after the headers; the body may or may not be
    // accepted in full before it closes, so only the response counts.
    (void)client->WriteRaw(absl::StrCat(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: ",
        body.size(), "\r\n\r\n", body));
    const ClientResponse response = MustRead(*client);
    CHECK(response.status == 413);
  }
  SECTION("chunked body over the limit") {
    auto client = server.Connect();
    REQUIRE(client
                ->WriteRaw(absl::StrCat(
                    "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: "
                    "application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "800\r\n",
                    std::string(0x800, 'x'), "\r\n0\r\n\r\n"))
                .ok());
    const ClientResponse response = MustRead(*client);
    CHECK(response.status == 413);
  }
  SECTION("at the limit is fine") {
    auto client = server.Connect();
    const std::string body = "\"" + std::string(1022, 'x') + "\"";
    const ClientResponse response = MustSend(
        *client, "POST", "/echo", body, {{"Content-Type", "application/json"}});
    CHECK(response.status == 200);
    CHECK(response.body == body);
  }
}

TEST_CASE("a Content-Length over the limit is 413 before the body", "[http]") {
  ServerOptions options;
  options.body_limit = 1 << 20;
  TestServer server(options);
  auto client = server.Connect();
  REQUIRE(client
              ->WriteRaw("POST /echo HTTP/1.1\r\nHost: t\r\n"
                         "Content-Type: application/json\r\n"
                         "Content-Length: 10000000\r\n\r\n")
              .ok());
  const ClientResponse response = MustRead(*client);
  CHECK(response.status == 413);
  CHECK(ErrorCode(response) == "payload_too_large");
  CHECK(client->WaitForClose().ok());
}

TEST_CASE("oversized headers are 431", "[http]") {
  ServerOptions options;
  options.header_limit = 1024;
  TestServer server(options);
  auto client = server.Connect();
  REQUIRE(
      client
          ->WriteRaw(absl::StrCat("GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: ",
                                  std::string(4096, 'a'), "\r\n\r\n"))
          .ok());
  const ClientResponse response = MustRead(*client);
  CHECK(response.status == 431);
  CHECK(ErrorCode(response) == "request_header_fields_too_large");
  CHECK(client->WaitForClose().ok());
}

TEST_CASE("a non-JSON body on a JSON route is 415", "[http]") {
  TestServer server;
  auto client = server.Connect();
  ClientResponse response = MustSend(*client, "POST", "/echo", "{}",
                                     {{"Content-Type", "text/plain"}});
  CHECK(response.status == 415);
  CHECK(ErrorCode(response) == "unsupported_media_type");
  response = MustSend(*client, "POST", "/echo", "{}");  // No Content-Type.
  CHECK(response.status == 415);
  response = MustSend(*client, "POST", "/echo", R"({"a":1})",
                      {{"Content-Type", "Application/JSON; charset=utf-8"}});
  CHECK(response.status == 200);
  CHECK(response.body == R"({"a":1})");
  response = MustSend(*client, "POST", "/echo");  // Empty body passes.
  CHECK(response.status == 200);
}

TEST_CASE("malformed HTTP is 400 and closes", "[http]") {
  TestServer server;
  auto client = server.Connect();
  REQUIRE(client->WriteRaw("THIS IS NOT HTTP\r\n\r\n").ok());
  const ClientResponse response = MustRead(*client);
  CHECK(response.status == 400);
  CHECK(ErrorCode(response) == "invalid_request");
  CHECK_FALSE(response.keep_alive);
  CHECK(client->WaitForClose().ok());
}

TEST_CASE("a target that is not a path is 400", "[http]") {
  TestServer server;
  auto client = server.Connect();
  ClientResponse response = MustSend(*client, "GET", "/accounts/%zz");
  CHECK(response.status == 400);
  CHECK(ErrorCode(response) == "invalid_request");
  response = MustSend(*client, "GET", "*");
  CHECK(response.status == 400);
}

TEST_CASE("correlation id is echoed or generated", "[http]") {
  TestServer server;
  auto client = server.Connect();

  ClientResponse response = MustSend(*client, "GET", "/correlation", "",
                                     {{"X-Correlation-Id", "req-42 abc"}});
  CHECK(response.Header("X-Correlation-Id").value_or("") == "req-42 abc");
  CHECK(response.body == "req-42 abc");

  response = MustSend(*client, "GET", "/correlation");
  const std::string generated =
      response.Header("X-Correlation-Id").value_or("");
  CHECK(IsUuid(generated));
  CHECK(response.body == generated);

  response = MustSend(*client, "GET", "/correlation", "",
                      {{"X-Correlation-Id", std::string(201, 'a')}});
  CHECK(IsUuid(response.Header("X-Correlation-Id").value_or("")));

  // Errors produced by the server itself carry it too.
  response = MustSend(*client, "GET", "/nope", "",
                      {{"x-correlation-id", "lower-case-name"}});
  CHECK(response.Header("X-Correlation-Id").value_or("") == "lower-case-name");
}

TEST_CASE("handlers may answer from another thread later", "[http]") {
  TestServer server;
  auto client = server.Connect();
  const ClientResponse response =
      MustSend(*client, "GET", "/async", "", {{"X-Correlation-Id", "c-1"}});
  CHECK(response.status == 200);
  CHECK(response.body == "async c-1");
  // The connection is still usable afterwards.
  CHECK(MustSend(*client, "GET", "/healthz").body == "ok");
}

TEST_CASE("a dropped responder or a throwing handler is 500", "[http]") {
  LogCapture capture;
  TestServer server;
  auto client = server.Connect();
  ClientResponse response = MustSend(*client, "GET", "/dropped");
  CHECK(response.status == 500);
  CHECK(ErrorCode(response) == "internal");

  response = MustSend(*client, "GET", "/throws", "",
                      {{"X-Correlation-Id", "thrower"}});
  CHECK(response.status == 500);
  CHECK(response.body == ErrorBody("internal", "internal error"));
  CHECK(capture.WaitForLine({"correlation_id=thrower", "boom"}).has_value());

  response = MustSend(*client, "GET", "/status/internal", "",
                      {{"X-Correlation-Id", "hidden"}});
  CHECK(response.status == 500);
  CHECK(response.body.find("hunter2") == std::string::npos);
  CHECK(
      capture.WaitForLine({"correlation_id=hidden", "status=500"}).has_value());

  response = MustSend(*client, "GET", "/status/notfound");
  CHECK(response.status == 404);
  CHECK(ErrorCode(response) == "account_not_found");
}

TEST_CASE("no-content responses carry no body and unsafe headers are dropped",
          "[http]") {
  TestServer server;
  auto client = server.Connect();
  const ClientResponse response = MustSend(*client, "GET", "/no-content");
  CHECK(response.status == 204);
  CHECK(response.body.empty());
  CHECK(response.Header("X-Custom").value_or("") == "yes");
  CHECK_FALSE(response.Header("X-Evil").has_value());
  CHECK_FALSE(response.Header("Injected").has_value());
  CHECK(MustSend(*client, "GET", "/hello").status == 200);
}

TEST_CASE("HTTP/1.0 is served and closed", "[http]") {
  TestServer server;
  auto client = server.Connect();
  REQUIRE(client->WriteRaw("GET /hello HTTP/1.0\r\n\r\n").ok());
  const ClientResponse response = MustRead(*client);
  CHECK(response.status == 200);
  CHECK(response.body == R"({"hello":"world"})");
  CHECK_FALSE(response.keep_alive);
  CHECK(client->WaitForClose().ok());
}

TEST_CASE("Expect: 100-continue gets an interim response", "[http]") {
  TestServer server;
  auto client = server.Connect();
  REQUIRE(client
              ->WriteRaw("POST /echo HTTP/1.1\r\nHost: t\r\n"
                         "Content-Type: application/json\r\n"
                         "Expect: 100-continue\r\nContent-Length: 7\r\n\r\n")
              .ok());
  const ClientResponse interim = MustRead(*client);
  CHECK(interim.status == 100);
  REQUIRE(client->WriteRaw(R"({"a":1})").ok());
  const ClientResponse response = MustRead(*client);
  CHECK(response.status == 200);
  CHECK(response.body == R"({"a":1})");
}

TEST_CASE("pipelined requests are answered in order", "[http]") {
  TestServer server;
  auto client = server.Connect();
  REQUIRE(client
              ->WriteRaw("GET /accounts/p1 HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /accounts/p2 HTTP/1.1\r\nHost: t\r\n\r\n")
              .ok());
  CHECK(MustRead(*client).body == R"({"id":"p1","limit":"none"})");
  CHECK(MustRead(*client).body == R"({"id":"p2","limit":"none"})");
}

TEST_CASE("many clients at once", "[http]") {
  ServerOptions options;
  options.network_threads = 2;
  options.worker_threads = 4;
  TestServer server(options);
  constexpr int kThreads = 8;
  constexpr int kRequests = 25;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      absl::StatusOr<std::unique_ptr<TestClient>> client =
          TestClient::Connect(server.port());
      if (!client.ok()) return;
      for (int i = 0; i < kRequests; ++i) {
        const std::string id = absl::StrCat("t", t, "-", i);
        absl::StatusOr<ClientResponse> response =
            (*client)->Send("GET", absl::StrCat("/accounts/", id));
        if (response.ok() && response->status == 200 &&
            response->body ==
                absl::StrCat(R"({"id":")", id, R"(","limit":"none"})")) {
          ++ok;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(ok == kThreads * kRequests);
}

TEST_CASE("a full worker queue answers 503 overloaded", "[http]") {
  ServerOptions options;
  options.worker_threads = 1;
  options.max_queued_requests = 1;
  TestServer server(options);
  Hooks& hooks = server.hooks();

  auto busy = server.Connect();
  // No Catch2 assertions off the main thread: they are not thread-safe.
  std::thread busy_thread([&] { (void)busy->Send("GET", "/slow"); });
  REQUIRE(hooks.slow_started.WaitForNotificationWithTimeout(kGenerous));

  // The worker is busy; of the next two requests one waits in the queue and
  // the other finds it full.
  std::atomic<int> done{0};
  std::atomic<int> overloaded{0};
  std::atomic<int> succeeded{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&] {
      absl::StatusOr<std::unique_ptr<TestClient>> client =
          TestClient::Connect(server.port());
      if (client.ok()) {
        absl::StatusOr<ClientResponse> response =
            (*client)->Send("GET", "/hello");
        if (response.ok() && response->status == 503 &&
            ErrorCode(*response) == "overloaded") {
          ++overloaded;
        }
        if (response.ok() && response->status == 200) ++succeeded;
      }
      ++done;
    });
  }
  testing::Eventually([&] { return done.load() != 0; }, kGenerous);
  hooks.release_slow.Notify();
  for (std::thread& thread : threads) thread.join();
  busy_thread.join();
  CHECK(overloaded == 1);
  CHECK(succeeded == 1);
}

TEST_CASE("shutdown lets an in-flight request finish", "[http]") {
  TestServer server;
  Hooks& hooks = server.hooks();

  auto idle = server.Connect();
  CHECK(MustSend(*idle, "GET", "/hello").status == 200);

  auto busy = server.Connect();
  ClientResponse slow_response;
  absl::Status slow_status;
  std::thread slow_thread([&] {
    absl::StatusOr<ClientResponse> response = busy->Send("GET", "/slow");
    slow_status = response.status();
    if (response.ok()) slow_response = *response;
  });
  REQUIRE(hooks.slow_started.WaitForNotificationWithTimeout(kGenerous));

  std::thread shutdown_thread([&] { server.server().Shutdown(); });
  // The idle keep-alive connection is closed right away, while the slow
  // request is still running.
  CHECK(idle->WaitForClose().ok());
  // New connections are refused.
  CHECK(testing::Eventually(
      [&] {
        absl::StatusOr<std::unique_ptr<TestClient>> late =
            TestClient::Connect(server.port());
        return !late.ok() || !(*late)->Send("GET", "/hello").ok();
      },
      kGenerous, absl::Milliseconds(10)));

  hooks.release_slow.Notify();
  slow_thread.join();
  shutdown_thread.join();
  INFO(slow_status.ToString());
  REQUIRE(slow_status.ok());
  CHECK(slow_response.status == 200);
  CHECK(slow_response.body == R"({"slow":"done"})");
  CHECK_FALSE(slow_response.keep_alive);
  CHECK(hooks.slow_calls == 1);
}

TEST_CASE("shutdown gives up on a request after the drain timeout", "[http]") {
  ServerOptions options;
  options.drain_timeout = absl::Milliseconds(200);
  TestServer server(options);
  auto client = server.Connect();
  REQUIRE(client->WriteRaw("GET /parked HTTP/1.1\r\nHost: t\r\n\r\n").ok());
  // Wait until the handler holds the responder.
  REQUIRE(testing::Eventually(
      [&] {
        absl::MutexLock lock(&server.hooks().mu);
        return !server.hooks().parked.empty();
      },
      kGenerous));
  server.server().Shutdown();
  CHECK(client->WaitForClose().ok());
  // Answering after shutdown is harmless.
  absl::MutexLock lock(&server.hooks().mu);
  server.hooks().parked.front()(JsonResponse(200, "{}"));
}

using ::cqrs::testing::Eventually;

void CheckOverloaded(const ClientResponse& response) {
  CHECK(response.status == 503);
  CHECK(ErrorCode(response) == "overloaded");
  CHECK(response.Header("Retry-After").value_or("") == "1");
}

TEST_CASE(
    "a full connection table answers new clients 503 overloaded and still "
    "serves the operations routes",
    "[http]") {
  ServerOptions options;
  options.max_connections = 4;
  options.max_queued_requests = 2;
  // Long enough that the idle connections below stay for the whole test.
  options.pressure_timeout = absl::Seconds(60);
  TestServer server(options);
  // The table is full of idle connections: two kept alive after a request,
  // two that never sent anything.
  std::vector<std::unique_ptr<TestClient>> idle;
  for (int i = 0; i < 2; ++i) {
    idle.push_back(server.Connect());
    CHECK(MustSend(*idle.back(), "GET", "/hello").status == 200);
  }
  for (int i = 0; i < 2; ++i) idle.push_back(server.Connect());

  // A new client gets an answer, not a reset, and the connection closes.
  auto refused = server.Connect();
  const ClientResponse overloaded = MustSend(*refused, "GET", "/hello");
  CheckOverloaded(overloaded);
  CHECK_FALSE(overloaded.keep_alive);
  CHECK(refused->WaitForClose().ok());

  // The operations routes are served beyond the table: inline, and on the
  // operations lane.
  auto health = server.Connect();
  const ClientResponse healthz = MustSend(*health, "GET", "/healthz");
  CHECK(healthz.status == 200);
  CHECK_FALSE(healthz.keep_alive);
  auto scrape = server.Connect();
  CHECK(MustSend(*scrape, "GET", "/metrics").status == 200);

  // The connections in the table are untouched.
  CHECK(MustSend(*idle[0], "GET", "/hello").status == 200);
}

TEST_CASE(
    "under connection pressure idle connections are closed after "
    "pressure_timeout, not read_timeout",
    "[http]") {
  ServerOptions options;
  options.max_connections = 4;
  options.max_queued_requests = 2;
  options.read_timeout = absl::Seconds(120);
  options.idle_timeout = absl::Seconds(120);
  TestServer server(options);
  // Connections that send nothing fill the table, and one that is kept
  // alive idles in it.
  std::vector<std::unique_ptr<TestClient>> idle;
  idle.push_back(server.Connect());
  CHECK(MustSend(*idle.back(), "GET", "/hello").status == 200);
  for (int i = 0; i < 3; ++i) idle.push_back(server.Connect());
  // Each is closed long before read_timeout and idle_timeout (the default
  // pressure_timeout is 2 s; the deadline is generous).
  for (auto& client : idle) CHECK(client->WaitForClose(absl::Seconds(30)).ok());
  // Then a new client is served.
  auto next = server.Connect();
  CHECK(MustSend(*next, "GET", "/hello").status == 200);
}

TEST_CASE(
    "with the workers saturated, excess requests get 503 overloaded with "
    "Retry-After before the workers free up, and the operations routes "
    "answer",
    "[http]") {
  ServerOptions options;
  options.worker_threads = 2;
  options.max_queued_requests = 2;
  options.queue_timeout = absl::Milliseconds(300);
  options.max_connections = 64;
  TestServer server(options);
  Hooks& hooks = server.hooks();

  // No Catch2 assertions off the main thread: they are not thread-safe.
  absl::Mutex mu;
  std::vector<absl::StatusOr<ClientResponse>> blocked;
  std::vector<absl::StatusOr<ClientResponse>> excess;
  const auto send = [&](std::vector<absl::StatusOr<ClientResponse>>* out) {
    absl::StatusOr<ClientResponse> response =
        absl::UnavailableError("no connection");
    absl::StatusOr<std::unique_ptr<TestClient>> client =
        TestClient::Connect(server.port(), absl::Seconds(90));
    if (client.ok()) response = (*client)->Send("GET", "/block");
    absl::MutexLock lock(&mu);
    out->push_back(std::move(response));
  };
  std::vector<std::thread> threads;
  // Both workers block.
  for (int i = 0; i < 2; ++i) threads.emplace_back(send, &blocked);
  REQUIRE(Eventually([&] { return hooks.block_calls == 2; }));
  // Five more: two fit the queue and wait there for queue_timeout, three
  // find it full. All are answered while the workers are still blocked.
  for (int i = 0; i < 5; ++i) threads.emplace_back(send, &excess);
  const bool answered_while_blocked = Eventually([&] {
    absl::MutexLock lock(&mu);
    return excess.size() == 5;
  });
  const bool still_blocked = [&] {
    absl::MutexLock lock(&mu);
    return blocked.empty();
  }();
  // The operations routes answer meanwhile: inline, and on their own lane.
  auto ops = server.Connect();
  const ClientResponse healthz = MustSend(*ops, "GET", "/healthz");
  const ClientResponse metrics = MustSend(*ops, "GET", "/metrics");

  hooks.release_block.Notify();
  for (std::thread& thread : threads) thread.join();
  CHECK(answered_while_blocked);
  CHECK(still_blocked);
  CHECK(healthz.status == 200);
  CHECK(metrics.status == 200);
  for (const auto& response : excess) {
    INFO(response.status().ToString());
    REQUIRE(response.ok());
    CheckOverloaded(*response);
  }
  for (const auto& response : blocked) {
    INFO(response.status().ToString());
    REQUIRE(response.ok());
    CHECK(response->status == 200);
  }
  // Requests answered 503 never reach their handler: once the queue has
  // been worked off (a later request is served), still two calls.
  CHECK(Eventually([&] {
    auto after = server.Connect();
    absl::StatusOr<ClientResponse> response = after->Send("GET", "/hello");
    return response.ok() && response->status == 200;
  }));
  CHECK(hooks.block_calls == 2);
}

TEST_CASE(
    "shutdown calls on_shutdown before the drain, so parked requests are "
    "answered at once",
    "[http]") {
  std::function<void()> answer_parked;
  ServerOptions options;
  // Far beyond the test's deadlines: only on_shutdown can answer in time.
  options.drain_timeout = absl::Seconds(120);
  options.on_shutdown = [&answer_parked] { answer_parked(); };
  TestServer server(options);
  Hooks& hooks = server.hooks();
  answer_parked = [&hooks] {
    absl::MutexLock lock(&hooks.mu);
    for (Responder& respond : hooks.parked) {
      Response response =
          ErrorResponse(503, "unavailable", "the server is shutting down");
      response.SetHeader("Retry-After", "1");
      respond(std::move(response));
    }
  };
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(server.Connect());
    REQUIRE(clients.back()
                ->WriteRaw("GET /parked HTTP/1.1\r\nHost: t\r\n\r\n")
                .ok());
  }
  REQUIRE(Eventually([&] {
    absl::MutexLock lock(&hooks.mu);
    return hooks.parked.size() == 3;
  }));
  std::thread shutdown_thread([&] { server.server().Shutdown(); });
  for (auto& client : clients) {
    // The client's own timeout (10 s) is far below the drain timeout.
    const ClientResponse response = MustRead(*client);
    CHECK(response.status == 503);
    CHECK(response.Header("Retry-After").value_or("") == "1");
    CHECK_FALSE(response.keep_alive);
  }
  shutdown_thread.join();
}

TEST_CASE("an idle keep-alive connection is closed after idle_timeout",
          "[http]") {
  ServerOptions options;
  options.idle_timeout = absl::Milliseconds(200);
  TestServer server(options);
  auto client = server.Connect();
  CHECK(MustSend(*client, "GET", "/hello").status == 200);
  CHECK(client->WaitForClose().ok());
}

TEST_CASE("a connection that sends nothing is closed after read_timeout",
          "[http]") {
  ServerOptions options;
  options.read_timeout = absl::Milliseconds(200);
  TestServer server(options);
  auto client = server.Connect();
  CHECK(client->WaitForClose().ok());

  // A request that stalls half-way is cut off too.
  auto partial = server.Connect();
  REQUIRE(partial->WriteRaw("GET /hello HTTP/1.1\r\nHost:").ok());
  CHECK(partial->WaitForClose().ok());
}

TEST_CASE("idle timeout does not cut a slow handler", "[http]") {
  ServerOptions options;
  options.idle_timeout = absl::Milliseconds(50);
  options.read_timeout = absl::Milliseconds(50);
  TestServer server(options);
  auto client = server.Connect();
  std::thread releaser([&] {
    server.hooks().slow_started.WaitForNotificationWithTimeout(kGenerous);
    // The handler's slow work: it must outlast both timeouts.
    absl::SleepFor(absl::Milliseconds(300));
    server.hooks().release_slow.Notify();
  });
  const ClientResponse response = MustSend(*client, "GET", "/slow");
  releaser.join();
  CHECK(response.status == 200);
}

TEST_CASE("one access-log line per request", "[http]") {
  LogCapture capture;
  TestServer server;
  auto client = server.Connect();
  MustSend(*client, "GET", "/accounts/a1?secret=s3cr3t", "",
           {{"X-Correlation-Id", "log-1"}});
  const absl::optional<std::string> line =
      capture.WaitForLine({"correlation_id=log-1"});
  REQUIRE(line.has_value());
  INFO(*line);
  CHECK(absl::StrContains(
      *line,
      " INFO http request method=GET path=/accounts/a1 status=200 "
      "duration_ms="));
  CHECK(absl::StrContains(
      *line, " correlation_id=log-1 route=/accounts/{id} actor=-\n"));
  CHECK_FALSE(absl::StrContains(*line, "s3cr3t"));

  MustSend(*client, "GET", "/nope", "", {{"X-Correlation-Id", "log-2"}});
  const absl::optional<std::string> unmatched =
      capture.WaitForLine({"correlation_id=log-2"});
  REQUIRE(unmatched.has_value());
  CHECK(absl::StrContains(*unmatched, "status=404"));
  CHECK(absl::StrContains(*unmatched, "route=unmatched"));

  int count = 0;
  for (const std::string& l : capture.Lines()) {
    if (absl::StrContains(l, "correlation_id=log-1")) ++count;
  }
  CHECK(count == 1);
}

TEST_CASE("access log in JSON format", "[http]") {
  LogCapture capture;
  SetLogFormat(LogFormat::kJson);
  TestServer server;
  auto client = server.Connect();
  MustSend(*client, "POST", "/hello", "", {{"X-Correlation-Id", "json-1"}});
  const absl::optional<std::string> line =
      capture.WaitForLine({R"("correlation_id":"json-1")"});
  REQUIRE(line.has_value());
  rapidjson::Document doc;
  doc.Parse(line->c_str());
  REQUIRE_FALSE(doc.HasParseError());
  CHECK(std::string(doc["msg"].GetString()) == "http request");
  CHECK(std::string(doc["level"].GetString()) == "info");
  CHECK(std::string(doc["method"].GetString()) == "POST");
  CHECK(std::string(doc["route"].GetString()) == "/hello");
  REQUIRE(doc["status"].IsInt());
  CHECK(doc["status"].GetInt() == 201);
  REQUIRE(doc["duration_ms"].IsNumber());
  CHECK(doc["duration_ms"].GetDouble() >= 0);
}

TEST_CASE("on_request_done sees route status and duration", "[http]") {
  struct Seen {
    std::string method;
    std::string route;
    int status;
    absl::Duration duration;
  };
  absl::Mutex mu;
  std::vector<Seen> seen;
  ServerOptions options;
  options.on_request_done = [&](const RequestInfo& info) {
    absl::MutexLock lock(&mu);
    seen.push_back({std::string(info.method), std::string(info.route),
                    info.status, info.duration});
  };
  TestServer server(options);
  auto client = server.Connect();
  MustSend(*client, "GET", "/accounts/a1");
  MustSend(*client, "PUT", "/hello");
  absl::MutexLock lock(&mu);
  const auto two = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return seen.size() >= 2;
  };
  REQUIRE(mu.AwaitWithTimeout(absl::Condition(&two), kGenerous));
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].method == "GET");
  CHECK(seen[0].route == "/accounts/{id}");
  CHECK(seen[0].status == 200);
  CHECK(seen[0].duration >= absl::ZeroDuration());
  CHECK(seen[1].method == "PUT");
  CHECK(seen[1].route == "unmatched");
  CHECK(seen[1].status == 405);
}

TEST_CASE("Create rejects bad options and routers and busy ports", "[http]") {
  Router router;
  router.Add("GET", "/x",
             [](const Request&) { return JsonResponse(200, "{}"); });

  ServerOptions bad_address;
  bad_address.listen_address = "no-port";
  CHECK(Server::Create(bad_address, &router).status().code() ==
        absl::StatusCode::kInvalidArgument);
  bad_address.listen_address = "example.com:80";
  CHECK(Server::Create(bad_address, &router).status().code() ==
        absl::StatusCode::kInvalidArgument);

  ServerOptions bad_threads;
  bad_threads.listen_address = "127.0.0.1:0";
  bad_threads.worker_threads = 0;
  CHECK(Server::Create(bad_threads, &router).status().code() ==
        absl::StatusCode::kInvalidArgument);

  // A queue the connections could never fill.
  ServerOptions long_queue;
  long_queue.listen_address = "127.0.0.1:0";
  long_queue.max_connections = 100;
  long_queue.max_queued_requests = 100;
  CHECK(Server::Create(long_queue, &router).status().code() ==
        absl::StatusCode::kInvalidArgument);
  long_queue.max_queued_requests = 99;
  CHECK(Server::Create(long_queue, &router).ok());

  Router bad_router;
  bad_router.Add("GET", "no-slash",
                 [](const Request&) { return JsonResponse(200, "{}"); });
  ServerOptions ok_options;
  ok_options.listen_address = "127.0.0.1:0";
  CHECK(Server::Create(ok_options, &bad_router).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(Server::Create(ok_options, nullptr).status().code() ==
        absl::StatusCode::kInvalidArgument);

  absl::StatusOr<std::unique_ptr<Server>> first =
      Server::Create(ok_options, &router);
  REQUIRE(first.ok());
  CHECK((*first)->port() > 0);
  ServerOptions same_port;
  same_port.listen_address = absl::StrCat("127.0.0.1:", (*first)->port());
  CHECK(Server::Create(same_port, &router).status().code() ==
        absl::StatusCode::kUnavailable);
}

TEST_CASE("Start twice fails and Shutdown is idempotent", "[http]") {
  TestServer server;
  CHECK(server.server().Start().code() ==
        absl::StatusCode::kFailedPrecondition);
  server.server().Shutdown();
  server.server().Shutdown();
  CHECK(server.server().Run().code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("Run returns after Shutdown from another thread", "[http]") {
  Hooks hooks;
  Router router;
  AddRoutes(router, hooks);
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Create(options, &router);
  REQUIRE(server.ok());
  absl::Status run_status = absl::UnknownError("not returned");
  absl::Notification returned;
  std::thread runner([&] {
    run_status = (*server)->Run();
    returned.Notify();
  });
  // Serving proves Run() has started.
  REQUIRE(testing::Eventually(
      [&] {
        absl::StatusOr<std::unique_ptr<TestClient>> client =
            TestClient::Connect((*server)->port());
        return client.ok() && (*client)->Send("GET", "/hello").ok();
      },
      kGenerous, absl::Milliseconds(10)));
  CHECK_FALSE(returned.HasBeenNotified());
  (*server)->Shutdown();
  CHECK(returned.WaitForNotificationWithTimeout(kGenerous));
  runner.join();
  CHECK(run_status.ok());
}

TEST_CASE("Run returns on SIGTERM", "[http]") {
  Hooks hooks;
  Router router;
  AddRoutes(router, hooks);
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Create(options, &router);
  REQUIRE(server.ok());
  absl::Status run_status = absl::UnknownError("not returned");
  absl::Notification returned;
  std::thread runner([&] {
    run_status = (*server)->Run();
    returned.Notify();
  });
  // Run() installs its signal handler before it starts serving.
  REQUIRE(testing::Eventually(
      [&] {
        absl::StatusOr<std::unique_ptr<TestClient>> client =
            TestClient::Connect((*server)->port());
        return client.ok() && (*client)->Send("GET", "/hello").ok();
      },
      kGenerous, absl::Milliseconds(10)));
  REQUIRE(::kill(::getpid(), SIGTERM) == 0);
  CHECK(returned.WaitForNotificationWithTimeout(kGenerous));
  runner.join();
  CHECK(run_status.ok());
}

}  // namespace
}  // namespace http
}  // namespace cqrs

// Streamed responses (Response::stream): chunks as the producer writes
// them, the end on Close(), and every way a stream ends that the producer
// must learn about (client gone, client stalled, shutdown).
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "framework/http/server.h"
#include "tests/framework/http/client.h"
#include "tests/support/wait.h"

namespace cqrs {
namespace http {
namespace {

using http_test::ClientResponse;
using http_test::TestClient;

// The writers the /stream route handed out, for the test to drive.
struct Streams {
  absl::Mutex mu;
  std::vector<std::shared_ptr<StreamWriter>> writers ABSL_GUARDED_BY(mu);
  std::atomic<int> closed{0};

  std::shared_ptr<StreamWriter> Get(size_t i) {
    absl::MutexLock lock(&mu);
    return i < writers.size() ? writers[i] : nullptr;
  }
  size_t Count() {
    absl::MutexLock lock(&mu);
    return writers.size();
  }
};

void AddStreamRoute(Router& router, Streams& streams) {
  RouteOptions options;
  options.execution = Execution::kNetworkThread;
  router.Add(
      "GET", "/stream",
      [&streams](const Request&) {
        Response response;
        response.content_type = "text/event-stream";
        response.SetHeader("Cache-Control", "no-store");
        response.stream = [&streams](std::shared_ptr<StreamWriter> writer) {
          writer->Write("hello\n");
          writer->OnClose([&streams] { ++streams.closed; });
          absl::MutexLock lock(&streams.mu);
          streams.writers.push_back(std::move(writer));
        };
        return response;
      },
      options);
}

struct Fixture {
  explicit Fixture(ServerOptions options = {}) {
    AddStreamRoute(router, streams);
    options.listen_address = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<Server>> created =
        Server::Create(std::move(options), &router);
    REQUIRE(created.ok());
    server = *std::move(created);
    REQUIRE(server->Start().ok());
  }

  std::unique_ptr<TestClient> Connect() {
    absl::StatusOr<std::unique_ptr<TestClient>> client =
        TestClient::Connect(server->port());
    REQUIRE(client.ok());
    return *std::move(client);
  }

  // Reads from `client` until the body so far ends with `suffix`.
  static std::string ReadUntil(TestClient& client, absl::string_view suffix) {
    std::string body;
    while (!absl::EndsWith(body, suffix)) {
      absl::StatusOr<std::string> part = client.ReadStream();
      REQUIRE(part.ok());
      body += *part;
    }
    return body;
  }

  Router router;
  Streams streams;
  std::unique_ptr<Server> server;
};

TEST_CASE(
    "a streamed response delivers what the producer writes, as it "
    "writes it, and ends on Close()",
    "[http]") {
  Fixture f;
  auto client = f.Connect();
  absl::StatusOr<ClientResponse> head = client->OpenStream("/stream");
  REQUIRE(head.ok());
  CHECK(head->status == 200);
  CHECK(head->Header("Content-Type") == "text/event-stream");
  CHECK(head->Header("Cache-Control") == "no-store");
  CHECK(head->Header("Transfer-Encoding") == "chunked");
  CHECK(head->Header("X-Correlation-Id").has_value());
  CHECK_FALSE(head->keep_alive);

  CHECK(Fixture::ReadUntil(*client, "hello\n") == "hello\n");
  std::shared_ptr<StreamWriter> writer = f.streams.Get(0);
  REQUIRE(writer != nullptr);
  // Written from another thread than the server's, one part at a time.
  std::atomic<int> refused{0};  // checked after the join (no Catch2 there)
  std::thread producer([writer, &refused] {
    for (int i = 0; i < 100; ++i) {
      if (!writer->Write("data: " + std::to_string(i) + "\n\n")) ++refused;
    }
  });
  producer.join();
  REQUIRE(refused == 0);
  std::string expected;
  for (int i = 0; i < 100; ++i) {
    expected += "data: " + std::to_string(i) + "\n\n";
  }
  CHECK(Fixture::ReadUntil(*client, "data: 99\n\n") == expected);
  CHECK(testing::Eventually([&] { return writer->buffered() == 0; }));

  writer->Write("bye\n");
  writer->Close();
  CHECK_FALSE(writer->Write("too late\n"));
  CHECK(writer->closed());
  CHECK(Fixture::ReadUntil(*client, "bye\n") == "bye\n");
  CHECK(absl::IsOutOfRange(client->ReadStream().status()));
  CHECK(client->WaitForClose().ok());
  CHECK(testing::Eventually([&] { return f.streams.closed.load() == 1; }));
}

TEST_CASE("a stream's producer learns when the client goes away", "[http]") {
  Fixture f;
  {
    auto client = f.Connect();
    REQUIRE(client->OpenStream("/stream").ok());
    Fixture::ReadUntil(*client, "hello\n");
  }  // Closes the connection.
  REQUIRE(testing::Eventually([&] { return f.streams.closed.load() == 1; }));
  std::shared_ptr<StreamWriter> writer = f.streams.Get(0);
  CHECK(writer->closed());
  CHECK_FALSE(writer->Write("anyone?\n"));
  // A callback registered after the end runs at once.
  bool ran = false;
  writer->OnClose([&] { ran = true; });
  CHECK(ran);
}

TEST_CASE(
    "a client that stops reading is cut off after write_timeout, "
    "and buffered() shows what waits for it",
    "[http]") {
  ServerOptions options;
  options.write_timeout = absl::Milliseconds(500);
  Fixture f(options);
  auto client = f.Connect();
  REQUIRE(client->OpenStream("/stream").ok());
  REQUIRE(testing::Eventually([&] { return f.streams.Count() == 1; }));
  std::shared_ptr<StreamWriter> writer = f.streams.Get(0);
  // The client reads nothing: the socket buffers fill and the rest waits.
  const std::string block(1 << 20, 'x');
  for (int i = 0; i < 64 && writer->Write(block); ++i) {
  }
  std::atomic<bool> writable{false};
  writer->OnWritable(0, [&] { writable = true; });
  REQUIRE(testing::Eventually([&] { return f.streams.closed.load() == 1; }));
  CHECK(writer->closed());
  CHECK(writer->buffered() == 0);
  // Ending the stream releases a producer waiting to write.
  CHECK(writable.load());
}

TEST_CASE("OnWritable runs once the client has read what was queued",
          "[http]") {
  Fixture f;
  auto client = f.Connect();
  REQUIRE(client->OpenStream("/stream").ok());
  REQUIRE(testing::Eventually([&] { return f.streams.Count() == 1; }));
  std::shared_ptr<StreamWriter> writer = f.streams.Get(0);
  const std::string block(1 << 20, 'y');
  for (int i = 0; i < 8; ++i) REQUIRE(writer->Write(block));
  std::atomic<bool> writable{false};
  writer->OnWritable(1024, [&] { writable = true; });
  size_t received = 0;
  while (received < 8 * block.size() + 6) {
    absl::StatusOr<std::string> part = client->ReadStream();
    REQUIRE(part.ok());
    received += part->size();
  }
  CHECK(testing::Eventually([&] { return writable.load(); }));
  CHECK_FALSE(writer->closed());
}

TEST_CASE(
    "shutdown ends open streams after what is queued, and their "
    "producers learn it",
    "[http]") {
  Fixture f;
  auto client = f.Connect();
  REQUIRE(client->OpenStream("/stream").ok());
  Fixture::ReadUntil(*client, "hello\n");
  std::shared_ptr<StreamWriter> writer = f.streams.Get(0);
  REQUIRE(writer->Write("last words\n"));
  std::thread stopper([&] { f.server->Shutdown(); });
  CHECK(Fixture::ReadUntil(*client, "last words\n") == "last words\n");
  CHECK(absl::IsOutOfRange(client->ReadStream().status()));
  stopper.join();
  CHECK(f.streams.closed.load() == 1);
  CHECK_FALSE(writer->Write("after shutdown\n"));
}

TEST_CASE(
    "the test client's OpenStream reads the head of an answer that is not "
    "streamed: a refusal with a body",
    "[http]") {
  Router router;
  RouteOptions options;
  options.execution = Execution::kNetworkThread;
  router.Add(
      "GET", "/refused",
      [](const Request&) {
        Response response;
        response.status = 503;
        response.content_type = "application/json";
        response.body = R"({"error":{"code":"unavailable"}})";
        return response;
      },
      options);
  ServerOptions server_options;
  server_options.listen_address = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Create(server_options, &router);
  REQUIRE(server.ok());
  REQUIRE((*server)->Start().ok());
  absl::StatusOr<std::unique_ptr<TestClient>> client =
      TestClient::Connect((*server)->port());
  REQUIRE(client.ok());
  absl::StatusOr<ClientResponse> head = (*client)->OpenStream("/refused");
  INFO(head.status());
  REQUIRE(head.ok());
  CHECK(head->status == 503);
  CHECK(head->Header("Content-Type") == "application/json");
}

TEST_CASE("a HEAD request to a streamed route gets the head alone", "[http]") {
  Router router;
  Streams streams;
  AddStreamRoute(router, streams);
  RouteOptions options;
  options.execution = Execution::kNetworkThread;
  router.Add(
      "HEAD", "/stream",
      [&](const Request& request) {
        return router.Match("GET", "/stream").route->handler(request);
      },
      options);
  ServerOptions server_options;
  server_options.listen_address = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Create(server_options, &router);
  REQUIRE(server.ok());
  REQUIRE((*server)->Start().ok());
  absl::StatusOr<std::unique_ptr<TestClient>> client =
      TestClient::Connect((*server)->port());
  REQUIRE(client.ok());
  absl::StatusOr<ClientResponse> response = (*client)->Send("HEAD", "/stream");
  REQUIRE(response.ok());
  CHECK(response->status == 200);
  CHECK(response->Header("Content-Type") == "text/event-stream");
  CHECK(streams.Count() == 0);
}

}  // namespace
}  // namespace http
}  // namespace cqrs

// The outgoing HTTP client (framework/http/client.h) against the
// framework's own HTTP server, plain and over TLS with a throwaway CA.
#include "framework/http/client.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "framework/http/server.h"
#include "tests/support/child_process.h"
#include "tests/support/wait.h"

namespace cqrs {
namespace http {
namespace {

namespace fs = std::filesystem;
using Failure = ClientResponse::Failure;
using testing::Eventually;
using testing::RunShell;
using testing::ShellResult;

constexpr absl::Duration kGenerous = absl::Seconds(10);

// The client ports of established TCP connections to local port `port`
// (from /proc/net/tcp: the server's end of each connection).
std::set<int> ClientPortsConnectedTo(int port) {
  std::set<int> ports;
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);  // The heading.
  while (std::getline(table, line)) {
    // "sl local_address rem_address st ...", addresses as HEX_IP:HEX_PORT.
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() < 4 || fields[3] != "01") continue;  // ESTABLISHED
    const std::vector<absl::string_view> local = absl::StrSplit(fields[1], ':');
    const std::vector<absl::string_view> remote =
        absl::StrSplit(fields[2], ':');
    int local_port = 0;
    int remote_port = 0;
    if (local.size() == 2 && remote.size() == 2 &&
        absl::SimpleHexAtoi(local[1], &local_port) && local_port == port &&
        absl::SimpleHexAtoi(remote[1], &remote_port)) {
      ports.insert(remote_port);
    }
  }
  return ports;
}

// What the server's handlers saw.
struct Seen {
  absl::Mutex mu;
  std::vector<Request> hooks ABSL_GUARDED_BY(mu);
  // Client ports of the connections open while /conn requests ran.
  std::set<int> client_ports ABSL_GUARDED_BY(mu);
  std::atomic<int> requests_done{0};
  std::atomic<int> slow_calls{0};
  absl::Notification release_slow;
};

// A server on 127.0.0.1 with an ephemeral port, plain or TLS.
class HookServer {
 public:
  explicit HookServer(ServerOptions options = ServerOptions()) {
    router_.Add("POST", "/hook", [this](const Request& request) {
      absl::MutexLock lock(&seen_.mu);
      seen_.hooks.push_back(request);
      return TextResponse(200, absl::StrCat("got ", request.body()));
    });
    router_.Add("GET", "/status/{code}", [](const Request& request) {
      int code = 0;
      if (!absl::SimpleAtoi(request.PathParam("code"), &code)) code = 400;
      Response response = TextResponse(code, "status");
      if (code / 100 == 3) response.SetHeader("Location", "/hook");
      return response;
    });
    router_.Add("GET", "/retry/{value}", [](const Request& request) {
      Response response = TextResponse(503, "later");
      const std::string value(request.PathParam("value"));
      if (value == "date") {
        response.SetHeader("Retry-After",
                           absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT",
                                            absl::Now() + absl::Hours(1),
                                            absl::UTCTimeZone()));
      } else if (value != "none") {
        response.SetHeader("Retry-After", value);
      }
      return response;
    });
    router_.Add("GET", "/big", [](const Request&) {
      return TextResponse(200, std::string(100 << 10, 'x'));
    });
    router_.Add("GET", "/conn", [this](const Request&) {
      const std::set<int> ports = ClientPortsConnectedTo(port());
      absl::MutexLock lock(&seen_.mu);
      seen_.client_ports.insert(ports.begin(), ports.end());
      return TextResponse(200, "ok");
    });
    router_.Add("POST", "/slow", [this](const Request&) {
      ++seen_.slow_calls;
      seen_.release_slow.WaitForNotificationWithTimeout(kGenerous);
      return TextResponse(200, "slow");
    });
    REQUIRE(router_.status().ok());
    options.listen_address = "127.0.0.1:0";
    options.on_request_done = [this](const RequestInfo&) {
      ++seen_.requests_done;
    };
    absl::StatusOr<std::unique_ptr<Server>> server =
        Server::Create(std::move(options), &router_);
    INFO(server.status().ToString());
    REQUIRE(server.ok());
    server_ = *std::move(server);
    REQUIRE(server_->Start().ok());
  }
  ~HookServer() {
    // Lets /slow handlers return, so that shutdown need not wait for them.
    if (!seen_.release_slow.HasBeenNotified()) seen_.release_slow.Notify();
    server_->Shutdown();
  }

  int port() const { return server_->port(); }
  std::string Url(absl::string_view path, absl::string_view scheme = "http",
                  absl::string_view host = "127.0.0.1") const {
    return absl::StrCat(scheme, "://", host, ":", port(), path);
  }
  Seen& seen() { return seen_; }

 private:
  // Outlive the server (declared first).
  Seen seen_;
  Router router_;
  std::unique_ptr<Server> server_;
};

// A throwaway CA and a server certificate for 127.0.0.1 and localhost it
// signed; made once per test run.
class Pki {
 public:
  Pki() {
    std::string pattern =
        (fs::temp_directory_path() / "cqrs-client-test-XXXXXX").string();
    REQUIRE(::mkdtemp(&pattern[0]) != nullptr);
    dir_ = pattern;
    {
      std::ofstream ext(Path("server.ext"));
      ext << "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
             "basicConstraints=CA:FALSE\n"
             "keyUsage=critical,digitalSignature\n"
             "extendedKeyUsage=serverAuth\n";
    }
    const std::string ec =
        "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    MustRun(absl::StrCat(
        "openssl req -x509 ", ec, " -days 2 -subj '/CN=cqrs client test CA' ",
        "-addext basicConstraints=critical,CA:TRUE ",
        "-addext keyUsage=critical,keyCertSign,cRLSign -keyout ",
        Quoted("ca.key"), " -out ", Quoted("ca.pem")));
    MustRun(absl::StrCat("openssl req -new ", ec,
                         " -subj '/CN=cqrs client test server' -keyout ",
                         Quoted("server.key"), " -out ", Quoted("server.csr")));
    MustRun(absl::StrCat("openssl x509 -req -days 2 -set_serial 7 -in ",
                         Quoted("server.csr"), " -CA ", Quoted("ca.pem"),
                         " -CAkey ", Quoted("ca.key"), " -extfile ",
                         Quoted("server.ext"), " -out ", Quoted("server.pem")));
  }
  Pki(const Pki&) = delete;
  Pki& operator=(const Pki&) = delete;
  ~Pki() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  std::string Path(const std::string& name) const {
    return (dir_ / name).string();
  }

 private:
  std::string Quoted(const std::string& name) const {
    return absl::StrCat("'", Path(name), "'");
  }
  static void MustRun(const std::string& command) {
    const ShellResult result = RunShell(command + " 2>&1");
    INFO(command << "\n" << result.output);
    REQUIRE(result.exit_code == 0);
  }

  fs::path dir_;
};

const Pki& TestPki() {
  static const Pki pki;  // Removed at exit.
  return pki;
}

// Options for a client that may reach the test servers on the loopback.
HttpClientOptions LoopbackOptions() {
  HttpClientOptions options;
  REQUIRE(options.address_policy.Allow("127.0.0.0/8").ok());
  REQUIRE(options.address_policy.Allow("::1").ok());
  return options;
}

std::unique_ptr<HttpClient> MustCreate(HttpClientOptions options) {
  absl::StatusOr<std::unique_ptr<HttpClient>> client =
      HttpClient::Create(std::move(options));
  INFO(client.status().ToString());
  REQUIRE(client.ok());
  return *std::move(client);
}

ClientRequest MakeRequest(std::string method, std::string url,
                          std::string body = "") {
  ClientRequest request;
  request.method = std::move(method);
  request.url = std::move(url);
  request.body = std::move(body);
  return request;
}

// Sends `request` and waits for its callback.
ClientResponse SendAndWait(HttpClient& client, ClientRequest request) {
  struct Result {
    absl::Notification done;
    ClientResponse response;
  };
  auto result = std::make_shared<Result>();
  client.Send(std::move(request), [result](ClientResponse response) {
    result->response = std::move(response);
    result->done.Notify();
  });
  REQUIRE(result->done.WaitForNotificationWithTimeout(kGenerous));
  return result->response;
}

TEST_CASE("HttpClient delivers a POST and reports 2xx and other statuses",
          "[http]") {
  HookServer server;
  auto client = MustCreate(LoopbackOptions());

  ClientRequest hook = MakeRequest("POST", server.Url("/hook"), R"({"n":1})");
  hook.headers = {{"Content-Type", "application/json"}, {"X-Webhook-Id", "w1"}};
  ClientResponse ok = SendAndWait(*client, std::move(hook));
  INFO(ok.error);
  CHECK(ok.failure == Failure::kNone);
  CHECK(ok.status == 200);
  CHECK(ok.body == R"(got {"n":1})");
  CHECK(ok.elapsed > absl::ZeroDuration());
  {
    absl::MutexLock lock(&server.seen().mu);
    REQUIRE(server.seen().hooks.size() == 1);
    const http::Request& seen = server.seen().hooks[0];
    CHECK(seen.body() == R"({"n":1})");
    CHECK(seen.Header("Content-Type") == "application/json");
    CHECK(seen.Header("X-Webhook-Id") == "w1");
    CHECK(seen.Header("User-Agent") == "cqrs-webhooks/1");
    CHECK_FALSE(seen.Header("Expect").has_value());
  }

  for (int code : {201, 204, 400, 404, 410, 500, 503}) {
    ClientResponse response = SendAndWait(
        *client,
        MakeRequest("GET", server.Url(absl::StrCat("/status/", code))));
    INFO(code << " " << response.error);
    CHECK(response.failure == Failure::kNone);
    CHECK(response.status == code);
  }
  // Redirects are not followed: a 3xx is a status like another.
  ClientResponse redirect =
      SendAndWait(*client, MakeRequest("GET", server.Url("/status/302")));
  CHECK(redirect.status == 302);
  CHECK(redirect.body == "status");

  // A long body is cut to max_response_body; the response still counts.
  ClientResponse big =
      SendAndWait(*client, MakeRequest("GET", server.Url("/big")));
  CHECK(big.status == 200);
  CHECK(big.body == std::string(4096, 'x'));
  CHECK(client->CpuTime() > absl::ZeroDuration());
}

TEST_CASE("HttpClient reads Retry-After as seconds or an HTTP-date", "[http]") {
  HookServer server;
  auto client = MustCreate(LoopbackOptions());

  ClientResponse seconds =
      SendAndWait(*client, MakeRequest("GET", server.Url("/retry/120")));
  CHECK(seconds.status == 503);
  REQUIRE(seconds.retry_after.has_value());
  CHECK(*seconds.retry_after == absl::Seconds(120));

  ClientResponse date =
      SendAndWait(*client, MakeRequest("GET", server.Url("/retry/date")));
  CHECK(date.status == 503);
  REQUIRE(date.retry_after.has_value());
  CHECK(*date.retry_after > absl::Minutes(55));
  CHECK(*date.retry_after <= absl::Hours(1));

  for (const char* value : {"none", "soon", "-5", "1.5"}) {
    ClientResponse response = SendAndWait(
        *client,
        MakeRequest("GET", server.Url(absl::StrCat("/retry/", value))));
    INFO(value);
    CHECK(response.status == 503);
    CHECK_FALSE(response.retry_after.has_value());
  }
}

TEST_CASE("HttpClient gives up after the request's timeout", "[http]") {
  HookServer server;
  auto client = MustCreate(LoopbackOptions());
  ClientRequest request =
      MakeRequest("POST", server.Url("/slow"), "secret-body");
  request.timeout = absl::Milliseconds(300);
  ClientResponse response = SendAndWait(*client, std::move(request));
  server.seen().release_slow.Notify();
  CHECK(response.failure == Failure::kTimeout);
  CHECK(response.status == 0);
  CHECK_FALSE(response.error.empty());
  CHECK_FALSE(absl::StrContains(response.error, "secret-body"));
  // libcurl measures the timeout on its own clock, which may start a little
  // before ours.
  CHECK(response.elapsed >= absl::Milliseconds(250));
  CHECK(server.seen().slow_calls == 1);
}

// libcurl starts its own timeout only when it begins to connect.
TEST_CASE("HttpClient times out a request waiting for a connection", "[http]") {
  HookServer server;
  HttpClientOptions options = LoopbackOptions();
  options.max_connections_per_host = 1;
  auto client = MustCreate(options);
  absl::Notification first_done;
  client->Send(MakeRequest("POST", server.Url("/slow")),
               [&](ClientResponse) { first_done.Notify(); });
  REQUIRE(Eventually([&] { return server.seen().slow_calls == 1; }, kGenerous));
  ClientRequest waiting = MakeRequest("POST", server.Url("/hook"));
  waiting.timeout = absl::Milliseconds(300);
  ClientResponse response = SendAndWait(*client, std::move(waiting));
  INFO(response.error << " " << response.elapsed);
  CHECK(response.failure == Failure::kTimeout);
  CHECK(response.elapsed >= absl::Milliseconds(250));
  server.seen().release_slow.Notify();
  REQUIRE(first_done.WaitForNotificationWithTimeout(kGenerous));
  // Given up before it had a connection: never sent.
  absl::MutexLock lock(&server.seen().mu);
  CHECK(server.seen().hooks.empty());
}

TEST_CASE("HttpClient reports a refused connection", "[http]") {
  // Bound but not listening: connecting is refused, and the port stays
  // ours for the test.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
          0);
  socklen_t length = sizeof(address);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) ==
          0);
  auto client = MustCreate(LoopbackOptions());
  ClientResponse response = SendAndWait(
      *client,
      MakeRequest("POST", absl::StrCat("http://127.0.0.1:",
                                       ntohs(address.sin_port), "/x")));
  ::close(fd);
  INFO(response.error);
  CHECK(response.failure == Failure::kConnect);
  CHECK(response.status == 0);
  CHECK_FALSE(response.error.empty());
}

TEST_CASE("HttpClient never connects to an address the policy refuses",
          "[http]") {
  HookServer server;
  auto client = MustCreate(HttpClientOptions());  // No allow-list.
  for (const std::string& url :
       {server.Url("/hook"), server.Url("/hook", "http", "localhost")}) {
    ClientResponse response =
        SendAndWait(*client, MakeRequest("POST", url, "body"));
    INFO(url << ": " << response.error);
    CHECK(response.failure == Failure::kBlockedAddress);
    CHECK(response.status == 0);
    CHECK(absl::StrContains(response.error, "private, loopback, link-local"));
  }
  ClientResponse literal =
      SendAndWait(*client, MakeRequest("POST", server.Url("/hook"), "body"));
  CHECK(absl::StrContains(literal.error, "127.0.0.1"));
  CHECK(server.seen().requests_done == 0);
  CHECK(ClientPortsConnectedTo(server.port()).empty());
}

TEST_CASE("HttpClient reuses its connection for sequential requests",
          "[http]") {
  HookServer server;
  auto client = MustCreate(LoopbackOptions());
  for (int i = 0; i < 100; ++i) {
    ClientResponse response =
        SendAndWait(*client, MakeRequest("GET", server.Url("/conn")));
    REQUIRE(response.status == 200);
  }
  absl::MutexLock lock(&server.seen().mu);
  INFO("client ports seen: " << server.seen().client_ports.size());
  CHECK(!server.seen().client_ports.empty());
  CHECK(server.seen().client_ports.size() <= 2);
}

TEST_CASE("HttpClient completes 200 concurrent requests exactly once",
          "[http]") {
  HookServer server;
  auto client = MustCreate(LoopbackOptions());
  constexpr int kRequests = 200;
  std::vector<std::atomic<int>> calls(kRequests);
  std::atomic<int> ok{0};
  std::atomic<int> total{0};
  for (int i = 0; i < kRequests; ++i) {
    client->Send(MakeRequest("POST", server.Url("/hook"), absl::StrCat(i)),
                 [&, i](ClientResponse response) {
                   if (response.status == 200 &&
                       response.body == absl::StrCat("got ", i)) {
                     ++ok;
                   }
                   ++calls[i];
                   ++total;
                 });
  }
  REQUIRE(Eventually([&] { return total == kRequests; }, kGenerous));
  REQUIRE(Eventually([&] { return client->in_flight() == 0; }, kGenerous));
  client.reset();  // Nothing runs after this.
  CHECK(ok == kRequests);
  CHECK(total == kRequests);
  for (int i = 0; i < kRequests; ++i) {
    INFO(i);
    CHECK(calls[i] == 1);
  }
}

TEST_CASE("HttpClient verifies TLS certificates", "[http]") {
  ServerOptions options;
  options.tls_cert_file = TestPki().Path("server.pem");
  options.tls_key_file = TestPki().Path("server.key");
  HookServer server(options);

  HttpClientOptions trusting = LoopbackOptions();
  trusting.ca_file = TestPki().Path("ca.pem");
  auto client = MustCreate(trusting);
  for (absl::string_view host : {"127.0.0.1", "localhost"}) {
    ClientResponse response = SendAndWait(
        *client,
        MakeRequest("POST", server.Url("/hook", "https", host), "tls"));
    INFO(host << ": " << response.error);
    CHECK(response.failure == Failure::kNone);
    CHECK(response.status == 200);
    CHECK(response.body == "got tls");
  }

  // The system bundle does not know the throwaway CA.
  auto system_ca = MustCreate(LoopbackOptions());
  ClientResponse refused = SendAndWait(
      *system_ca, MakeRequest("POST", server.Url("/hook", "https"), "tls"));
  INFO(refused.error);
  CHECK(refused.failure == Failure::kTls);
  CHECK(refused.status == 0);
  absl::MutexLock lock(&server.seen().mu);
  CHECK(server.seen().hooks.size() == 2);
}

TEST_CASE("HttpClient's destructor completes requests in flight once",
          "[http]") {
  HookServer server;
  auto client = MustCreate(LoopbackOptions());
  constexpr int kRequests = 5;
  std::vector<std::atomic<int>> calls(kRequests);
  std::vector<ClientResponse> responses(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    client->Send(MakeRequest("POST", server.Url("/slow")),
                 [&, i](ClientResponse response) {
                   responses[i] = std::move(response);
                   ++calls[i];
                 });
  }
  REQUIRE(Eventually([&] { return server.seen().slow_calls == kRequests; },
                     kGenerous));
  CHECK(client->in_flight() == kRequests);
  client.reset();
  for (int i = 0; i < kRequests; ++i) {
    INFO(i);
    CHECK(calls[i] == 1);
    CHECK(responses[i].failure == Failure::kOther);
    CHECK(responses[i].error == "client stopped");
  }
}

TEST_CASE("HttpClient refuses invalid requests and options", "[http]") {
  HookServer server;
  auto client = MustCreate(LoopbackOptions());
  ClientRequest injected = MakeRequest("POST", server.Url("/hook"));
  injected.headers = {{"X-Evil", "a\r\nInjected: 1"}};
  ClientResponse header = SendAndWait(*client, std::move(injected));
  CHECK(header.failure == Failure::kOther);
  ClientRequest bad_name = MakeRequest("POST", server.Url("/hook"));
  bad_name.headers = {{"X Evil", "a"}};
  CHECK(SendAndWait(*client, std::move(bad_name)).failure == Failure::kOther);
  CHECK(
      SendAndWait(*client, MakeRequest("PO ST", server.Url("/hook"))).failure ==
      Failure::kOther);
  ClientResponse ftp = SendAndWait(
      *client,
      MakeRequest("GET", absl::StrCat("ftp://127.0.0.1:", server.port())));
  CHECK(ftp.failure == Failure::kOther);
  CHECK(server.seen().requests_done == 0);

  HttpClientOptions no_connections;
  no_connections.max_connections_per_host = 0;
  CHECK(HttpClient::Create(no_connections).status().code() ==
        absl::StatusCode::kInvalidArgument);
  HttpClientOptions missing_ca;
  missing_ca.ca_file = "/nonexistent/ca.pem";
  CHECK(HttpClient::Create(missing_ca).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace http
}  // namespace cqrs

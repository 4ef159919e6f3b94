// HTTPS in the HTTP server (framework/http/server.h): certificates made with
// the openssl command line, checked with curl, openssl s_client, the plain
// TestClient and a small Beast TLS client that keeps its connection open.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <catch2/catch.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "framework/http/server.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/framework/http/log_capture.h"
#include "tests/support/child_process.h"
#include "tests/support/wait.h"

namespace cqrs {
namespace http {
namespace {

namespace fs = std::filesystem;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;

using testing::Eventually;
using testing::RunShell;
using testing::ShellResult;

constexpr absl::Duration kGenerous = absl::Seconds(10);

// Runs `command` (with 2>&1 appended) and requires exit status 0.
std::string MustRun(const std::string& command) {
  const ShellResult result = RunShell(command + " 2>&1");
  INFO(command << "\n" << result.output);
  REQUIRE(result.exit_code == 0);
  return result.output;
}

std::string Quoted(const fs::path& path) {
  return absl::StrCat("'", path.string(), "'");
}

// Two throwaway certificate authorities, each with a server certificate
// for 127.0.0.1 and localhost; made once per test run.
class Pki {
 public:
  Pki() {
    std::string pattern =
        (fs::temp_directory_path() / "cqrs-tls-test-XXXXXX").string();
    REQUIRE(::mkdtemp(&pattern[0]) != nullptr);
    dir_ = pattern;
    {
      std::ofstream ext(dir_ / "server.ext");
      ext << "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
             "basicConstraints=CA:FALSE\n"
             "keyUsage=critical,digitalSignature\n"
             "extendedKeyUsage=serverAuth\n";
    }
    for (int n : {1, 2}) {
      const std::string ca = absl::StrCat("ca", n);
      const std::string server = absl::StrCat("server", n);
      MustRun(absl::StrCat(
          "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
          "-nodes -days 2 -subj '/CN=cqrs test CA ",
          n, "' -addext basicConstraints=critical,CA:TRUE ",
          "-addext keyUsage=critical,keyCertSign,cRLSign -keyout ",
          Quoted(Path(ca + ".key")), " -out ", Quoted(Path(ca + ".pem"))));
      MustRun(absl::StrCat(
          "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
          "-nodes -subj '/CN=cqrs test server ",
          n, "' -keyout ", Quoted(Path(server + ".key")), " -out ",
          Quoted(Path(server + ".csr"))));
      MustRun(absl::StrCat(
          "openssl x509 -req -days 2 -set_serial ", 1000 + n, " -in ",
          Quoted(Path(server + ".csr")), " -CA ", Quoted(Path(ca + ".pem")),
          " -CAkey ", Quoted(Path(ca + ".key")), " -extfile ",
          Quoted(Path("server.ext")), " -out ", Quoted(Path(server + ".pem"))));
    }
  }
  Pki(const Pki&) = delete;
  Pki& operator=(const Pki&) = delete;
  ~Pki() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  fs::path Path(const std::string& name) const { return dir_ / name; }

 private:
  fs::path dir_;
};

const Pki& TestPki() {
  static const Pki pki;  // Removed at exit.
  return pki;
}

// The live certificate and key files of one server, in a directory of its
// own, so that a test can replace them.
class TlsFiles {
 public:
  TlsFiles() {
    std::string pattern =
        (fs::temp_directory_path() / "cqrs-tls-live-XXXXXX").string();
    REQUIRE(::mkdtemp(&pattern[0]) != nullptr);
    dir_ = pattern;
    Install(1);
  }
  TlsFiles(const TlsFiles&) = delete;
  TlsFiles& operator=(const TlsFiles&) = delete;
  ~TlsFiles() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  // Puts server `n`'s certificate and key in place, as a deployment would:
  // written beside, then renamed over the live files.
  void Install(int n) const {
    const Pki& pki = TestPki();
    Replace(cert(), pki.Path(absl::StrCat("server", n, ".pem")));
    Replace(key(), pki.Path(absl::StrCat("server", n, ".key")));
  }

  void WriteKey(const std::string& text) const {
    std::ofstream(dir_ / "key.tmp") << text;
    fs::rename(dir_ / "key.tmp", key());
  }

  fs::path cert() const { return dir_ / "cert.pem"; }
  fs::path key() const { return dir_ / "key.pem"; }

 private:
  void Replace(const fs::path& live, const fs::path& from) const {
    const fs::path staged = live.string() + ".tmp";
    fs::copy_file(from, staged, fs::copy_options::overwrite_existing);
    fs::rename(staged, live);
  }

  fs::path dir_;
};

// /slow holds its worker until the test releases it.
struct SlowHooks {
  std::atomic<int> started{0};
  absl::Notification release;
};

void AddRoutes(Router& router, SlowHooks* slow) {
  router.Add("GET", "/x",
             [](const Request&) { return TextResponse(200, "tls ok"); });
  router.Add("POST", "/size", [](const Request& request) {
    return TextResponse(200, absl::StrCat("size=", request.body().size()));
  });
  router.Add("GET", "/slow", [slow](const Request&) {
    ++slow->started;
    slow->release.WaitForNotificationWithTimeout(kGenerous);
    return TextResponse(200, "slow done");
  });
}

int Count(absl::string_view text, absl::string_view part) {
  int n = 0;
  for (size_t at = text.find(part); at != absl::string_view::npos;
       at = text.find(part, at + part.size())) {
    ++n;
  }
  return n;
}

// A TLS server on 127.0.0.1 with an ephemeral port serving server1's
// certificate from `files()`.
class TlsServer {
 public:
  explicit TlsServer(ServerOptions options = ServerOptions()) {
    AddRoutes(router_, &slow_);
    options.listen_address = "127.0.0.1:0";
    options.tls_cert_file = files_.cert().string();
    options.tls_key_file = files_.key().string();
    absl::StatusOr<std::unique_ptr<Server>> server =
        Server::Create(std::move(options), &router_);
    INFO(server.status().ToString());
    REQUIRE(server.ok());
    server_ = *std::move(server);
  }

  void Start() { REQUIRE(server_->Start().ok()); }

  Server& server() { return *server_; }
  const TlsFiles& files() const { return files_; }
  int port() const { return server_->port(); }
  SlowHooks& slow() { return slow_; }

  std::string Url(absl::string_view target = "/x") const {
    return absl::StrCat("https://127.0.0.1:", port(), target);
  }

 private:
  TlsFiles files_;
  SlowHooks slow_;
  Router router_;
  std::unique_ptr<Server> server_;
};

// curl with `arguments`, never through a proxy; stdout and stderr together.
ShellResult Curl(const std::string& arguments) {
  return RunShell(
      absl::StrCat("curl --silent --show-error --noproxy '*' --max-time 10 ",
                   arguments, " 2>&1"));
}

std::string CaFile(int n) {
  return Quoted(TestPki().Path(absl::StrCat("ca", n, ".pem")));
}

std::string ErrorCode(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.c_str());
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("error") ||
      !doc["error"].IsObject() || !doc["error"].HasMember("code") ||
      !doc["error"]["code"].IsString()) {
    return "<not an error body: " + body + ">";
  }
  return doc["error"]["code"].GetString();
}

// A synchronous TLS client on one connection that stays open between
// requests. Every operation is bounded by a timeout.
class TlsClient {
 public:
  // Connects to 127.0.0.1:`port` and completes a handshake that trusts only
  // `ca_file`. Fails the test when either fails.
  TlsClient(int port, const fs::path& ca_file)
      : context_(ssl::context::tls_client), stream_(ioc_, context_) {
    context_.set_verify_mode(ssl::verify_peer);
    context_.load_verify_file(ca_file.string());
    const net::ip::tcp::endpoint endpoint(net::ip::make_address("127.0.0.1"),
                                          static_cast<unsigned short>(port));
    beast::error_code ec = Await([&](auto done) {
      beast::get_lowest_layer(stream_).async_connect(endpoint, done);
    });
    INFO("connect: " << ec.message());
    REQUIRE(!ec);
    ec = Await([&](auto done) {
      stream_.async_handshake(ssl::stream_base::client, done);
    });
    INFO("handshake: " << ec.message());
    REQUIRE(!ec);
  }

  // The common name of the certificate the server presented.
  std::string PeerCommonName() {
    X509* cert = SSL_get1_peer_certificate(stream_.native_handle());
    REQUIRE(cert != nullptr);
    char name[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, name,
                              sizeof(name));
    X509_free(cert);
    return name;
  }

  beast::error_code WriteRaw(const std::string& bytes) {
    return Await([&](auto done) {
      net::async_write(stream_, net::buffer(bytes), done);
    });
  }

  beast::error_code Read(bhttp::response<bhttp::string_body>* response) {
    *response = {};
    return Await([&](auto done) {
      bhttp::async_read(stream_, buffer_, *response, done);
    });
  }

  // Sends a request and reads its response; fails the test on error.
  bhttp::response<bhttp::string_body> Send(const std::string& method,
                                           const std::string& target,
                                           const std::string& body = "") {
    bhttp::request<bhttp::string_body> request(bhttp::string_to_verb(method),
                                               target, 11);
    request.set(bhttp::field::host, "127.0.0.1");
    request.body() = body;
    request.prepare_payload();
    beast::error_code ec =
        Await([&](auto done) { bhttp::async_write(stream_, request, done); });
    INFO("write: " << ec.message());
    REQUIRE(!ec);
    bhttp::response<bhttp::string_body> response;
    ec = Read(&response);
    INFO("read: " << ec.message());
    REQUIRE(!ec);
    return response;
  }

  // What the next read gets once the server has nothing more to say: eof
  // after the server's close_notify.
  beast::error_code ReadUntilClosed() {
    char byte;
    return Await([&](auto done) {
      stream_.async_read_some(net::buffer(&byte, 1), done);
    });
  }

 private:
  // Runs one asynchronous operation started by `start(done)` to completion.
  template <typename Start>
  beast::error_code Await(Start start) {
    beast::error_code result;
    bool finished = false;
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(10));
    start([&](beast::error_code ec, auto&&...) {
      result = ec;
      finished = true;
    });
    ioc_.restart();
    ioc_.run();
    REQUIRE(finished);
    return result;
  }

  net::io_context ioc_;
  ssl::context context_;
  beast::ssl_stream<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
};

// The server closed the connection (with or without close_notify) before
// the client's own timeout.
bool ClosedByServer(beast::error_code ec) {
  INFO(ec.message());
  return ec && ec != beast::error::timeout;
}

TEST_CASE("HTTPS serves a client that trusts the certificate's CA",
          "[http][tls]") {
  TlsServer server;
  server.Start();

  const ShellResult trusted =
      Curl(absl::StrCat("--cacert ", CaFile(1), " ", server.Url()));
  INFO(trusted.output);
  CHECK(trusted.exit_code == 0);
  CHECK(trusted.output == "tls ok");

  // The certificate names localhost too.
  const ShellResult by_name = Curl(absl::StrCat(
      "--cacert ", CaFile(1), " --resolve localhost:", server.port(),
      ":127.0.0.1 https://localhost:", server.port(), "/x"));
  INFO(by_name.output);
  CHECK(by_name.exit_code == 0);

  // 60: the peer certificate cannot be authenticated.
  const ShellResult untrusted = Curl(server.Url());
  INFO(untrusted.output);
  CHECK(untrusted.exit_code == 60);
  const ShellResult other_ca =
      Curl(absl::StrCat("--cacert ", CaFile(2), " ", server.Url()));
  CHECK(other_ca.exit_code == 60);
}

TEST_CASE("TLS below 1.2 and TLS 1.2 without ECDHE and AEAD are refused",
          "[http][tls]") {
  TlsServer server;
  server.Start();
  // s_client exits 0 once a handshake completed (it does not require the
  // certificate to be trusted) and 1 when it failed.
  const auto s_client = [&](const std::string& flags) {
    return RunShell(
        absl::StrCat("openssl s_client -connect 127.0.0.1:", server.port(), " ",
                     flags, " </dev/null 2>&1"));
  };
  const ShellResult tls12 = s_client("-tls1_2");
  INFO(tls12.output);
  CHECK(tls12.exit_code == 0);
  CHECK(absl::StrContains(tls12.output, "Protocol  : TLSv1.2"));
  const ShellResult tls13 = s_client("-tls1_3");
  CHECK(tls13.exit_code == 0);

  // The client is allowed TLS 1.1 (security level 0); the server refuses.
  const ShellResult tls11 = s_client("-tls1_1 -cipher DEFAULT@SECLEVEL=0");
  INFO(tls11.output);
  CHECK(tls11.exit_code != 0);
  CHECK(absl::StrContains(tls11.output, "alert protocol version"));
  const ShellResult tls10 = s_client("-tls1 -cipher DEFAULT@SECLEVEL=0");
  CHECK(tls10.exit_code != 0);

  // ECDHE with CBC is not on the list.
  CHECK(s_client("-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA").exit_code != 0);
  CHECK(s_client("-tls1_2 -cipher ECDHE-ECDSA-AES256-SHA384").exit_code != 0);
  // TLS 1.2 with ECDHE and ChaCha20-Poly1305 is.
  CHECK(s_client("-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305").exit_code ==
        0);

  // The way curl says it.
  const ShellResult curl =
      Curl(absl::StrCat("--tls-max 1.1 --ciphers DEFAULT@SECLEVEL=0 --cacert ",
                        CaFile(1), " ", server.Url()));
  INFO(curl.output);
  CHECK(curl.exit_code != 0);
  CHECK(curl.output != "tls ok");
}

TEST_CASE("plain HTTP on the TLS port gets 400 and the connection closes",
          "[http][tls]") {
  http_test::LogCapture logs;
  TlsServer server;
  server.Start();
  absl::StatusOr<std::unique_ptr<http_test::TestClient>> client =
      http_test::TestClient::Connect(server.port());
  REQUIRE(client.ok());
  absl::StatusOr<http_test::ClientResponse> response =
      (*client)->Send("GET", "/x");
  INFO(response.status().ToString());
  REQUIRE(response.ok());
  CHECK(response->status == 400);
  CHECK(ErrorCode(response->body) == "invalid_request");
  CHECK(absl::StrContains(response->body,
                          "this port serves HTTPS: use https://"));
  CHECK(response->Header("Connection").value_or("") == "close");
  CHECK_FALSE(response->keep_alive);
  CHECK((*client)->WaitForClose().ok());
  // One access-log line says what happened.
  CHECK(logs.WaitForLine({"plain HTTP on the TLS port"}).has_value());
}

TEST_CASE("keep-alive, pipelining and 100-continue work over TLS",
          "[http][tls]") {
  TlsServer server;
  server.Start();

  // curl reuses its connection for the second URL.
  const ShellResult two = Curl(absl::StrCat("-v --cacert ", CaFile(1), " ",
                                            server.Url(), " ", server.Url()));
  INFO(two.output);
  CHECK(two.exit_code == 0);
  CHECK(absl::StrContains(two.output, "Re-using existing connection"));
  CHECK(Count(two.output, "tls ok") == 2);

  TlsClient client(server.port(), TestPki().Path("ca1.pem"));
  for (int i = 0; i < 3; ++i) {
    const auto response = client.Send("GET", "/x");
    CHECK(response.result_int() == 200);
    CHECK(response.body() == "tls ok");
    CHECK(response.keep_alive());
  }

  // Two requests in one write: answered in order on the same connection.
  REQUIRE(
      !client.WriteRaw("GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
                       "POST /size HTTP/1.1\r\nHost: a\r\n"
                       "Content-Length: 3\r\n\r\nabc"));
  bhttp::response<bhttp::string_body> first;
  REQUIRE(!client.Read(&first));
  CHECK(first.body() == "tls ok");
  bhttp::response<bhttp::string_body> second;
  REQUIRE(!client.Read(&second));
  CHECK(second.body() == "size=3");

  // curl sends Expect: 100-continue for a large body.
  const std::string body_file = TestPki().Path("body.bin").string();
  // Not NUL bytes: the server refuses a body holding one (message.h).
  MustRun(absl::StrCat("head -c 200000 /dev/zero | tr '\\0' a > '", body_file,
                       "'"));
  const ShellResult upload = Curl(absl::StrCat(
      "-v --cacert ", CaFile(1), " -H 'Expect: 100-continue' --data-binary @'",
      body_file, "' ", server.Url("/size")));
  INFO(upload.output);
  CHECK(upload.exit_code == 0);
  CHECK(absl::StrContains(upload.output, "HTTP/1.1 100 Continue"));
  CHECK(absl::StrContains(upload.output, "size=200000"));
}

TEST_CASE("limits answer 413 and 431 over TLS", "[http][tls]") {
  ServerOptions options;
  options.body_limit = 1000;
  options.header_limit = 2000;
  TlsServer server(options);
  server.Start();

  TlsClient client(server.port(), TestPki().Path("ca1.pem"));
  const auto too_large = client.Send("POST", "/size", std::string(5000, 'a'));
  CHECK(too_large.result_int() == 413);
  CHECK(ErrorCode(too_large.body()) == "payload_too_large");
  CHECK_FALSE(too_large.keep_alive());
  // The server closes with close_notify.
  CHECK(client.ReadUntilClosed() == net::error::eof);

  // A body streamed without waiting for 100 Continue: the 413 still
  // arrives while the server discards the rest.
  const std::string body_file = TestPki().Path("large.bin").string();
  MustRun(absl::StrCat("head -c 3000000 /dev/zero > '", body_file, "'"));
  const ShellResult streamed = Curl(
      absl::StrCat("--cacert ", CaFile(1), " -H 'Expect:' --data-binary @'",
                   body_file, "' ", server.Url("/size")));
  INFO(streamed.output);
  CHECK(absl::StrContains(streamed.output, "payload_too_large"));

  const ShellResult headers = Curl(
      absl::StrCat("--cacert ", CaFile(1),
                   " -H 'X-Big: ", std::string(3000, 'h'), "' ", server.Url()));
  INFO(headers.output);
  CHECK(ErrorCode(headers.output) == "request_header_fields_too_large");
}

TEST_CASE("the handshake and the first request share read_timeout",
          "[http][tls]") {
  http_test::LogCapture logs;
  ServerOptions options;
  options.read_timeout = absl::Milliseconds(300);
  options.idle_timeout = absl::Milliseconds(300);
  TlsServer server(options);
  server.Start();

  // A handshake that starts and stalls.
  absl::StatusOr<std::unique_ptr<http_test::TestClient>> stalled =
      http_test::TestClient::Connect(server.port());
  REQUIRE(stalled.ok());
  REQUIRE((*stalled)->WriteRaw("\x16\x03\x01").ok());
  CHECK((*stalled)->WaitForClose(kGenerous).ok());

  // A handshake that completes, then no request.
  TlsClient quiet(server.port(), TestPki().Path("ca1.pem"));
  CHECK(ClosedByServer(quiet.ReadUntilClosed()));

  // A kept-alive connection that goes idle.
  TlsClient idle(server.port(), TestPki().Path("ca1.pem"));
  CHECK(idle.Send("GET", "/x").result_int() == 200);
  CHECK(ClosedByServer(idle.ReadUntilClosed()));

  // Failed handshakes are not worth more than a debug line.
  CHECK(Curl(server.Url()).exit_code == 60);
  for (const std::string& line : logs.Lines()) {
    CHECK_FALSE(absl::StrContains(line, "handshake"));
  }
}

TEST_CASE("ReloadTls serves the new certificate to new connections only",
          "[http][tls]") {
  TlsServer server;
  server.Start();
  TlsClient before(server.port(), TestPki().Path("ca1.pem"));
  CHECK(before.PeerCommonName() == "cqrs test server 1");
  CHECK(before.Send("GET", "/x").body() == "tls ok");

  server.files().Install(2);
  const absl::Status reloaded = server.server().ReloadTls();
  INFO(reloaded.ToString());
  REQUIRE(reloaded.ok());

  const ShellResult new_ca =
      Curl(absl::StrCat("--cacert ", CaFile(2), " ", server.Url()));
  INFO(new_ca.output);
  CHECK(new_ca.exit_code == 0);
  CHECK(new_ca.output == "tls ok");
  CHECK(
      Curl(absl::StrCat("--cacert ", CaFile(1), " ", server.Url())).exit_code ==
      60);
  TlsClient after(server.port(), TestPki().Path("ca2.pem"));
  CHECK(after.PeerCommonName() == "cqrs test server 2");

  // The connection from before the reload goes on, on its certificate.
  for (int i = 0; i < 2; ++i) {
    const auto response = before.Send("GET", "/x");
    CHECK(response.result_int() == 200);
    CHECK(response.keep_alive());
  }
  CHECK(before.PeerCommonName() == "cqrs test server 1");
}

TEST_CASE("a failed ReloadTls keeps the certificate in use", "[http][tls]") {
  http_test::LogCapture logs;
  TlsServer server;
  server.Start();
  const Pki& pki = TestPki();

  server.files().WriteKey("not a key\n");
  absl::Status reloaded = server.server().ReloadTls();
  CHECK(reloaded.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(reloaded.message(), server.files().key().string()));
  CHECK(
      absl::StrContains(reloaded.message(), "no unencrypted PEM private key"));

  // The second server's key with the first server's certificate.
  std::ifstream other_key(pki.Path("server2.key"));
  std::string key_text((std::istreambuf_iterator<char>(other_key)),
                       std::istreambuf_iterator<char>());
  server.files().WriteKey(key_text);
  reloaded = server.server().ReloadTls();
  CHECK(reloaded.code() == absl::StatusCode::kInvalidArgument);
  CHECK(
      absl::StrContains(reloaded.message(), "does not match the certificate"));

  const ShellResult still =
      Curl(absl::StrCat("--cacert ", CaFile(1), " ", server.Url()));
  INFO(still.output);
  CHECK(still.exit_code == 0);
  CHECK(still.output == "tls ok");

  // A warning, without the key.
  CHECK(logs.WaitForLine({"http TLS reload failed"}).has_value());
  for (const std::string& line : logs.Lines()) {
    CHECK_FALSE(absl::StrContains(line, "PRIVATE KEY"));
  }
}

TEST_CASE("SIGHUP during Run reloads the TLS files", "[http][tls]") {
  TlsServer server;
  absl::Status run_status = absl::UnknownError("not returned");
  std::thread runner([&] { run_status = server.server().Run(); });
  // Run() installs its signal handlers before it starts serving.
  REQUIRE(Eventually([&] {
    return Curl(absl::StrCat("--cacert ", CaFile(1), " ", server.Url()))
               .exit_code == 0;
  }));
  server.files().Install(2);
  REQUIRE(::kill(::getpid(), SIGHUP) == 0);
  CHECK(Eventually([&] {
    return Curl(absl::StrCat("--cacert ", CaFile(2), " ", server.Url()))
               .exit_code == 0;
  }));
  // A second SIGHUP is handled too (the wait is re-armed).
  server.files().Install(1);
  REQUIRE(::kill(::getpid(), SIGHUP) == 0);
  CHECK(Eventually([&] {
    return Curl(absl::StrCat("--cacert ", CaFile(1), " ", server.Url()))
               .exit_code == 0;
  }));
  server.server().Shutdown();
  runner.join();
  CHECK(run_status.ok());
}

TEST_CASE("shutdown lets a TLS request in flight finish", "[http][tls]") {
  TlsServer server;
  server.Start();
  TlsClient client(server.port(), TestPki().Path("ca1.pem"));
  CHECK(client.Send("GET", "/x").result_int() == 200);
  REQUIRE(!client.WriteRaw("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"));
  REQUIRE(Eventually([&] { return server.slow().started.load() == 1; }));
  std::thread stopper([&] { server.server().Shutdown(); });
  // Shutdown has begun once the server stops accepting.
  REQUIRE(Eventually(
      [&] { return !http_test::TestClient::Connect(server.port()).ok(); }));
  server.slow().release.Notify();
  bhttp::response<bhttp::string_body> response;
  REQUIRE(!client.Read(&response));
  CHECK(response.body() == "slow done");
  CHECK_FALSE(response.keep_alive());
  CHECK(client.ReadUntilClosed() == net::error::eof);
  stopper.join();
}

TEST_CASE("pressure and overflow connections work over TLS", "[http][tls]") {
  ServerOptions options;
  options.max_connections = 4;
  options.max_queued_requests = 1;
  options.overflow_connections = 1;
  // Long enough for a busy machine to finish a handshake and a request on
  // each connection below, far below the clients' 10 s and read_timeout.
  options.pressure_timeout = absl::Seconds(2);
  options.read_timeout = absl::Seconds(60);
  options.idle_timeout = absl::Seconds(60);
  TlsServer server(options);
  server.Start();
  const fs::path ca = TestPki().Path("ca1.pem");

  // Two connections wait for a request; the third brings the table to 3/4
  // and under pressure: all three are closed after pressure_timeout
  // instead of read_timeout.
  std::vector<std::unique_ptr<TlsClient>> waiting;
  for (int i = 0; i < 3; ++i) {
    waiting.push_back(std::make_unique<TlsClient>(server.port(), ca));
  }
  for (auto& client : waiting) CHECK(ClosedByServer(client->ReadUntilClosed()));
  waiting.clear();
  // The client sees the close before the server has let the connection go:
  // wait until it has, or the busy connections below would find the table
  // fuller than they expect and be refused.
  REQUIRE(Eventually([&] { return server.server().open_connections() == 0; }));

  // Four connections busy with a request fill the table; a fifth is
  // beyond it, gets 503 for an ordinary route, and is closed.
  std::vector<std::unique_ptr<TlsClient>> busy;
  for (int i = 0; i < 4; ++i) {
    busy.push_back(std::make_unique<TlsClient>(server.port(), ca));
    REQUIRE(!busy.back()->WriteRaw("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"));
  }
  REQUIRE(Eventually([&] { return server.slow().started.load() == 4; }));
  TlsClient overflow(server.port(), ca);
  const auto refused = overflow.Send("GET", "/x");
  CHECK(refused.result_int() == 503);
  CHECK(ErrorCode(refused.body()) == "overloaded");
  CHECK(ClosedByServer(overflow.ReadUntilClosed()));

  server.slow().release.Notify();
  for (auto& client : busy) {
    bhttp::response<bhttp::string_body> response;
    REQUIRE(!client->Read(&response));
    CHECK(response.body() == "slow done");
  }
}

TEST_CASE("Create refuses TLS files that are missing, not PEM or mismatched",
          "[http][tls]") {
  Router router;
  AddRoutes(router, nullptr);
  const Pki& pki = TestPki();
  const auto create = [&](const std::string& cert, const std::string& key) {
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.tls_cert_file = cert;
    options.tls_key_file = key;
    return Server::Create(options, &router).status();
  };
  const std::string cert = pki.Path("server1.pem").string();
  const std::string key = pki.Path("server1.key").string();
  REQUIRE(create(cert, key).ok());

  absl::Status status = create(cert, "");
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(status.message(), "together"));
  CHECK(create("", key).code() == absl::StatusCode::kInvalidArgument);

  const std::string missing = pki.Path("missing.pem").string();
  status = create(missing, key);
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(status.message(), missing));
  CHECK(absl::StrContains(status.message(), "cannot read"));
  status = create(cert, missing);
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(status.message(), missing));

  // A key where the certificate should be, and the other way round.
  status = create(key, key);
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(status.message(), "holds no PEM certificate"));
  status = create(cert, cert);
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(status.message(), "no unencrypted PEM private key"));

  status = create(cert, pki.Path("server2.key").string());
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(status.message(), "does not match the certificate"));

  // A plain server has nothing to reload.
  ServerOptions plain;
  plain.listen_address = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Create(plain, &router);
  REQUIRE(server.ok());
  CHECK((*server)->ReloadTls().code() == absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace http
}  // namespace cqrs

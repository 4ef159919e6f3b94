// HTTPS for apps: `serve --tls-cert/--tls-key` and ServeOptions'
// tls_cert_file/tls_key_file reaching the HTTP server (the server's own TLS
// behaviour is tested in tests/framework/http/tls_test.cc).
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "app/app.h"
#include "app/app_server.h"
#include "tests/support/child_process.h"
#include "tests/support/test_database.h"

namespace {

namespace fs = std::filesystem;
namespace http = cqrs::http;

// `tally serve` with `flags` after it; returns App::Main's exit code.
int Serve(std::vector<std::string> flags) {
  cqrs::App app("tally");
  std::vector<std::string> words = {"tally", "serve"};
  // Should the flags be accepted, this fails at once instead of serving
  // (or waiting for the database, the default at start).
  words.insert(words.end(),
               {"--database-url", "postgresql://127.0.0.1:1/nothing",
                "--start-timeout", "0s"});
  words.insert(words.end(), flags.begin(), flags.end());
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(&word[0]);
  argv.push_back(nullptr);
  return app.Main(static_cast<int>(words.size()), argv.data());
}

TEST_CASE("serve takes --tls-cert and --tls-key together or not at all",
          "[app][tls]") {
  CHECK(Serve({"--tls-cert", "cert.pem"}) == 2);
  CHECK(Serve({"--tls-key", "key.pem"}) == 2);
  // Both given: parsed, then the database cannot be reached.
  CHECK(Serve({"--tls-cert", "cert.pem", "--tls-key", "key.pem"}) == 1);
}

// A self-signed certificate for 127.0.0.1 in a temporary directory.
class SelfSigned {
 public:
  SelfSigned() {
    std::string pattern =
        (fs::temp_directory_path() / "cqrs-app-tls-XXXXXX").string();
    REQUIRE(::mkdtemp(&pattern[0]) != nullptr);
    dir_ = pattern;
    const cqrs::testing::ShellResult made =
        cqrs::testing::RunShell(absl::StrCat(
            "openssl req -x509 -newkey ec -pkeyopt "
            "ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "
            "'/CN=tally' -addext subjectAltName=IP:127.0.0.1 -keyout '",
            key(), "' -out '", cert(), "' 2>&1"));
    INFO(made.output);
    REQUIRE(made.exit_code == 0);
  }
  SelfSigned(const SelfSigned&) = delete;
  SelfSigned& operator=(const SelfSigned&) = delete;
  ~SelfSigned() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  std::string cert() const { return (dir_ / "cert.pem").string(); }
  std::string key() const { return (dir_ / "key.pem").string(); }

 private:
  fs::path dir_;
};

void AddConstantRoute(cqrs::App& app) {
  http::RouteOptions inline_route;
  inline_route.execution = http::Execution::kNetworkThread;
  inline_route.access = http::RouteAccess::Open();
  app.AddRoute(
      "GET", "/constant",
      [](const http::Request&) {
        return http::JsonResponse(200, R"({"constant":true})");
      },
      inline_route);
}

TEST_CASE("an app served with TLS files answers over HTTPS", "[app][tls][pg]") {
  SelfSigned certificate;
  cqrs::testing::TestSchema schema(8);
  cqrs::App app("tally");
  AddConstantRoute(app);
  REQUIRE(cqrs::MigrateApp(schema.pool(), schema.name()).ok());
  cqrs::ServeOptions options;
  options.schema = schema.name();
  options.tls_cert_file = certificate.cert();
  options.tls_key_file = certificate.key();
  auto server = cqrs::AppServer::Start(app, &schema.pool(), options);
  INFO(server.status().ToString());
  REQUIRE(server.ok());

  const cqrs::testing::ShellResult https = cqrs::testing::RunShell(absl::StrCat(
      "curl --silent --show-error --noproxy '*' --max-time 10 "
      "--cacert '",
      certificate.cert(), "' https://127.0.0.1:", (*server)->port(),
      "/constant 2>&1"));
  INFO(https.output);
  CHECK(https.exit_code == 0);
  CHECK(https.output == R"({"constant":true})");

  server->reset();

  // A key that is not there: Start refuses with the file's name.
  cqrs::App other("tally");
  AddConstantRoute(other);
  options.tls_key_file = certificate.key() + ".missing";
  auto refused = cqrs::AppServer::Start(other, &schema.pool(), options);
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(refused.status().message(), ".missing"));
}

}  // namespace

// A whole bank (bank::DeclareBank on a cqrs::App, run by cqrs::AppServer:
// commands, projections, transfers, queries) on its own schema of the test
// PostgreSQL, served on an ephemeral port, with helpers to drive it over
// HTTP. Shared by the bank's HTTP tests.
//
//   ServiceFixture f;
//   std::string at = Open(f, "acc-1");
//   auto r = f.Get("/accounts/acc-1", AtLeast(at));
//
// The server authenticates (ServeOptions defaults): every client the fixture
// gives sends a key with every scope unless a request names its own
// Authorization header.
//
// Thread-safety: Get/Post/Send use one connection: one thread at a time;
// Client() gives each thread its own.
#ifndef TESTS_EXAMPLE_APP_SERVICE_FIXTURE_H_
#define TESTS_EXAMPLE_APP_SERVICE_FIXTURE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "app/app.h"
#include "app/app_server.h"
#include "example_app/bank_app.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/support/test_database.h"

namespace bank {

enum class Projections { kHere, kNowhere };

class ServiceFixture {
 public:
  // Runs in the projection runner after a batch's handler, before its
  // commit (ProjectionRunnerOptions::before_commit_for_testing).
  using BeforeCommit = std::function<absl::Status(
      absl::string_view projection, cqrs::eventstore::Position last)>;

  // Changes the server's options before it starts.
  using Configure = std::function<void(cqrs::ServeOptions&)>;

  explicit ServiceFixture(Projections projections = Projections::kHere,
                          BeforeCommit before_commit = nullptr,
                          Configure configure = nullptr);
  ~ServiceFixture();

  std::unique_ptr<cqrs::http_test::TestClient> Client();
  cqrs::http_test::ClientResponse Send(
      const std::string& method, const std::string& target,
      const std::string& body = "", const cqrs::http::HeaderList& headers = {});
  cqrs::http_test::ClientResponse Get(
      const std::string& target, const cqrs::http::HeaderList& headers = {});
  cqrs::http_test::ClientResponse Post(const std::string& target,
                                       const std::string& body);

  // Runs the route `method` `target` is routed to with `principal` on the
  // request, as the server's authentication would set it, bypassing the
  // server itself (no token is checked, no access log line is written).
  // Command routes run in this thread; query routes on the query service's
  // threads, waited for here. For tests of what handlers do with the
  // caller until the bank's server authenticates requests.
  cqrs::http::Response SendAs(const cqrs::http::Principal& principal,
                              const std::string& method,
                              const std::string& target,
                              const std::string& body = "",
                              const cqrs::http::HeaderList& headers = {});

  cqrs::testing::TestSchema& schema() { return schema_; }
  cqrs::AppServer& server() { return *server_; }
  const cqrs::http::Router& router() const { return server_->router(); }
  // A key with every scope; Client() and Send() send it.
  const std::string& token() const { return token_; }

 private:
  cqrs::testing::TestSchema schema_{40};
  cqrs::App app_{"bank", BankOptions()};
  std::unique_ptr<cqrs::AppServer> server_;
  std::unique_ptr<cqrs::http_test::TestClient> client_;
  std::string token_;
};

rapidjson::Document Parse(const std::string& body);
std::string ErrorCode(const cqrs::http_test::ClientResponse& r);

// Opens `id` and returns the command's position token.
std::string Open(ServiceFixture& f, const std::string& id,
                 const std::string& owner = "Ann",
                 const std::string& currency = "EUR");

struct Moved {
  std::string position;
  int64_t balance = 0;
};
Moved Deposit(ServiceFixture& f, const std::string& id, int64_t amount);

cqrs::http::HeaderList AtLeast(const std::string& position);

}  // namespace bank

#endif  // TESTS_EXAMPLE_APP_SERVICE_FIXTURE_H_

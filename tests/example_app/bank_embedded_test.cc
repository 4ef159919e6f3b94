// `bank serve` as a separate process on its embedded PostgreSQL default:
// data written before a restart is there after it.
#include <signal.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "framework/uuid.h"
#include "tests/framework/http/client.h"
#include "tests/support/child_process.h"
#include "tests/support/wait.h"

namespace {

using cqrs::http_test::TestClient;

// `bank serve` on the embedded default (no DATABASE_URL: that default is
// what this test is about) and a port it picks.
class BankProcess {
 public:
  explicit BankProcess(const std::string& data_dir)
      : process_("/usr/bin/env",
                 {"-u", "DATABASE_URL", BANK_BINARY, "serve", "--listen",
                  "127.0.0.1:0", "--data-dir", data_dir},
                 cqrs::testing::ChildProcess::Output::kCapture) {}

  // Waits until it listens (the embedded cluster may take a while to
  // start) and /healthz answers; returns the port.
  int WaitReady() {
    const int port = process_.WaitForListeningPort(absl::Seconds(120));
    REQUIRE(cqrs::testing::Eventually([&] {
      auto client = TestClient::Connect(port, absl::Seconds(2));
      if (!client.ok()) return false;
      auto r = (*client)->Send("GET", "/healthz");
      return r.ok() && r->status == 200;
    }));
    return port;
  }

  // SIGTERM, then the exit status.
  int Stop() { return process_.Kill(SIGTERM); }

 private:
  cqrs::testing::ChildProcess process_;
};

// `bank keys create` beside the running server (on its cluster); the
// token it prints on its last line.
std::string CreateKey(const std::string& data_dir) {
  const cqrs::testing::ShellResult created = cqrs::testing::RunShell(
      absl::StrCat("env -u DATABASE_URL ", BANK_BINARY,
                   " keys create --name embedded --scopes commands "
                   "--data-dir '",
                   data_dir, "'"));
  REQUIRE(created.exit_code == 0);
  return created.LastLine();
}

int PostOpen(int port, const std::string& id, const std::string& token) {
  auto client = TestClient::Connect(port);
  REQUIRE(client.ok());
  auto r = (*client)->Send(
      "POST", "/accounts",
      absl::StrCat(R"({"owner":"Ann","currency":"EUR","account_id":")", id,
                   R"("})"),
      {{"Content-Type", "application/json"},
       {"Authorization", absl::StrCat("Bearer ", token)}});
  REQUIRE(r.ok());
  return r->status;
}

TEST_CASE("bank serve keeps its data across restarts on the embedded default",
          "[bank][embedded]") {
  const std::string data_dir =
      absl::StrCat("/tmp/bank-embedded-test-", cqrs::NewUuid().substr(24));
  std::string token;
  {
    BankProcess bank(data_dir);
    const int port = bank.WaitReady();
    token = CreateKey(data_dir);
    CHECK(PostOpen(port, "persist-1", "cqrs_000000000000_nope") == 401);
    CHECK(PostOpen(port, "persist-1", token) == 201);
    CHECK(bank.Stop() == 0);
  }
  {
    BankProcess bank(data_dir);
    const int port = bank.WaitReady();
    // The account and the key from before the restart are still there.
    CHECK(PostOpen(port, "persist-1", token) == 409);
    CHECK(PostOpen(port, "persist-2", token) == 201);
    CHECK(bank.Stop() == 0);
  }
  std::string rm = absl::StrCat("rm -rf '", data_dir, "'");
  CHECK(std::system(rm.c_str()) == 0);
}

}  // namespace

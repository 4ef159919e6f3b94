// `bank serve` as a separate process on its embedded PostgreSQL default:
// data written before a restart is there after it.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "framework/uuid.h"
#include "tests/framework/http/client.h"
#include "tests/support/child_process.h"

extern char** environ;

namespace {

using cqrs::http_test::TestClient;

// A port derived from the pid, so parallel test processes do not collide.
int TestPort() { return 20000 + static_cast<int>(getpid() % 20000); }

class BankProcess {
 public:
  BankProcess(const std::string& data_dir, int port) {
    std::vector<std::string> args = {
        BANK_BINARY,  "serve", "--listen", absl::StrCat("127.0.0.1:", port),
        "--data-dir", data_dir};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The embedded default is what this test is about: no DATABASE_URL.
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::string(*e).rfind("DATABASE_URL=", 0) != 0) {
        env_strings.push_back(*e);
      }
    }
    std::vector<char*> env;
    for (auto& e : env_strings) env.push_back(e.data());
    env.push_back(nullptr);
    REQUIRE(posix_spawn(&pid_, BANK_BINARY, nullptr, nullptr, argv.data(),
                        env.data()) == 0);
  }

  // Waits until /healthz answers; false after `timeout`.
  bool WaitReady(int port, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;  // exited early
      }
      auto client = TestClient::Connect(port, absl::Seconds(2));
      if (client.ok()) {
        auto r = (*client)->Send("GET", "/healthz");
        if (r.ok() && r->status == 200) return true;
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
    return false;
  }

  // SIGTERM, then the exit status.
  int Stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  ~BankProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

 private:
  pid_t pid_ = -1;
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
  const int port = TestPort();
  std::string token;
  {
    BankProcess bank(data_dir, port);
    REQUIRE(bank.WaitReady(port, absl::Seconds(120)));
    token = CreateKey(data_dir);
    CHECK(PostOpen(port, "persist-1", "cqrs_000000000000_nope") == 401);
    CHECK(PostOpen(port, "persist-1", token) == 201);
    CHECK(bank.Stop() == 0);
  }
  {
    BankProcess bank(data_dir, port);
    REQUIRE(bank.WaitReady(port, absl::Seconds(120)));
    // The account and the key from before the restart are still there.
    CHECK(PostOpen(port, "persist-1", token) == 409);
    CHECK(PostOpen(port, "persist-2", token) == 201);
    CHECK(bank.Stop() == 0);
  }
  std::string rm = absl::StrCat("rm -rf '", data_dir, "'");
  CHECK(std::system(rm.c_str()) == 0);
}

}  // namespace

// The `bank` command line: help, usage errors and runtime failures map to
// the contract's exit codes (0 success, 1 runtime failure, 2 usage error).
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace {

struct Run {
  int exit_code;
  std::string output;  // stdout and stderr
};

Run Bank(const std::string& args) {
  const std::string command =
      absl::StrCat("env -u DATABASE_URL ", BANK_BINARY, " ", args, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    output.append(buffer, n);
  }
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST_CASE("help on every subcommand exits 0", "[bank][cli]") {
  for (const char* args : {"--help", "serve --help", "migrate --help",
                           "project --help", "projections --help"}) {
    INFO(args);
    Run r = Bank(args);
    CHECK(r.exit_code == 0);
    CHECK(absl::StrContains(r.output, "usage: bank"));
  }
}

TEST_CASE("usage errors exit 2 with one actionable line", "[bank][cli]") {
  for (const char* args :
       {"", "frobnicate", "serve --bogus", "serve --threads zero",
        "serve --listen", "migrate --log-format json", "serve --log-format xml",
        "projections", "projections frobnicate", "project --no-projections",
        "serve --no-projections=yes"}) {
    INFO(args);
    Run r = Bank(args);
    CHECK(r.exit_code == 2);
    CHECK(!r.output.empty());
  }
}

TEST_CASE("runtime failures exit 1", "[bank][cli]") {
  Run r = Bank(
      "migrate --database-url 'host=/nonexistent-socket-dir port=1 "
      "connect_timeout=1'");
  CHECK(r.exit_code == 1);
  CHECK(absl::StrContains(r.output, "bank: "));
}

TEST_CASE("an invalid schema name is a usage error", "[bank][cli]") {
  Run r = Bank("migrate --schema 'Bad-Name' --database-url 'host=/x port=1'");
  CHECK(r.exit_code == 2);
  CHECK(absl::StrContains(r.output, "schema"));
}

}  // namespace

// The `bank` command line: help, usage errors and runtime failures map to
// the contract's exit codes (0 success, 1 runtime failure, 2 usage error).
#include <string>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/child_process.h"

namespace {

using Run = cqrs::testing::ShellResult;

// `bank <args>` without DATABASE_URL; stdout and stderr together.
Run Bank(const std::string& args) {
  return cqrs::testing::RunShell(
      absl::StrCat("env -u DATABASE_URL ", BANK_BINARY, " ", args, " 2>&1"));
}

TEST_CASE("help on every subcommand exits 0", "[bank][cli]") {
  for (const char* args : {"--help", "serve --help", "migrate --help",
                           "project --help", "projections --help"}) {
    INFO(args);
    Run r = Bank(args);
    CHECK(r.exit_code == 0);
    CHECK(absl::StrContains(r.output, "Usage: bank"));
  }
}

TEST_CASE("the projections help lists every subcommand", "[bank][cli]") {
  Run r = Bank("projections --help");
  CHECK(r.exit_code == 0);
  for (const char* sub :
       {"list", "status", "rebuild", "parked", "replay-parked", "resume"}) {
    INFO(sub);
    CHECK(absl::StrContains(r.output, absl::StrCat("\n  ", sub, " ")));
  }
  CHECK(absl::StrContains(Bank("--help").output, "resume"));
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

// The `bank` command line: help, usage errors and runtime failures map to
// the contract's exit codes (0 success, 1 runtime failure, 2 usage error).
#include <string>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/child_process.h"
#include "tests/support/test_database.h"

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

TEST_CASE("bad webhook flags are usage errors", "[bank][cli]") {
  for (const char* args : {
           "serve --webhook-timeout 1ms",
           "serve --webhook-timeout 10m",
           "serve --webhook-timeout soon",
           "serve --webhook-retry-schedule 0s,later",
           "serve --webhook-retry-schedule 49h",
           "serve --webhook-retry-schedule=-1s",
           "serve --webhook-concurrency 0",
           "serve --webhook-concurrency 257",
           "serve --webhook-disable-after 0s",
           "serve --webhook-allow-network 10.0.0.0/33",
           "project --webhook-allow-network nope",
           "serve --webhook-ca-file /nonexistent/ca.pem",
           "webhooks",
           "webhooks frobnicate",
           "webhooks create",
           "webhooks show",
           "webhooks replay wh_0000000000000000",
           "webhooks replay wh_0000000000000000 --from-position 1.1 "
           "--from-time 2020-01-01T00:00:00Z",
           "webhooks update wh_0000000000000000 --clear-types --type x.v1",
           "webhooks create --url https://127.0.0.1/ "
           "--webhook-allow-network 300.0.0.0/8",
       }) {
    INFO(args);
    Run r = Bank(args);
    CHECK(r.exit_code == 2);
    CHECK(absl::StrContains(r.output, "--help"));
  }
  Run help = Bank("webhooks --help");
  CHECK(help.exit_code == 0);
  for (const char* sub :
       {"create", "list", "show", "update", "delete", "disable", "enable",
        "rotate-secret", "attempts", "replay", "parked", "replay-parked",
        "skip-parked", "status"}) {
    INFO(sub);
    CHECK(absl::StrContains(help.output, absl::StrCat("\n  ", sub, " ")));
  }
}

TEST_CASE("webhooks are managed from the command line", "[bank][cli][pg]") {
  cqrs::testing::TestSchema schema;
  const auto bank = [&](const std::string& args) {
    return cqrs::testing::RunShell(
        absl::StrCat(BANK_BINARY, " webhooks ", args, " --database-url '",
                     schema.url(), "' --schema ", schema.name(), " 2>&1"));
  };
  Run created = bank(
      "create --url https://127.0.0.1/in --type bank.account.opened.v1 "
      "--category account --description audit "
      "--webhook-allow-network 127.0.0.0/8");
  INFO(created.output);
  REQUIRE(created.exit_code == 0);
  std::vector<std::string> lines =
      absl::StrSplit(created.output, '\n', absl::SkipEmpty());
  REQUIRE(!lines.empty());
  CHECK(absl::StartsWith(lines.back(), "whsec_"));
  const size_t at = created.output.find("wh_");
  REQUIRE(at != std::string::npos);
  const std::string id = created.output.substr(at, 19);

  Run listed = bank("list --json");
  CHECK(listed.exit_code == 0);
  CHECK(absl::StrContains(listed.output, id));
  CHECK_FALSE(absl::StrContains(listed.output, lines.back()));
  Run shown = bank(absl::StrCat("show ", id, " --json"));
  CHECK(shown.exit_code == 0);
  CHECK(absl::StrContains(shown.output, "\"stats\""));
  Run updated = bank(absl::StrCat("update ", id, " --clear-types"));
  INFO(updated.output);
  CHECK(updated.exit_code == 0);
  CHECK(absl::StrContains(updated.output, "(all)"));
  CHECK(bank(absl::StrCat("disable ", id)).exit_code == 0);
  Run status = bank("status --json");
  CHECK(status.exit_code == 0);
  CHECK(absl::StrContains(status.output, "\"state\":\"disabled\""));
  CHECK(absl::StrContains(status.output, "\"lag_seconds\":0"));
  CHECK(bank(absl::StrCat("enable ", id)).exit_code == 0);
  Run rotated = bank(absl::StrCat("rotate-secret ", id));
  CHECK(rotated.exit_code == 0);
  std::vector<std::string> rotated_lines =
      absl::StrSplit(rotated.output, '\n', absl::SkipEmpty());
  REQUIRE(!rotated_lines.empty());
  CHECK(absl::StartsWith(rotated_lines.back(), "whsec_"));
  CHECK(rotated_lines.back() != lines.back());
  CHECK(bank(absl::StrCat("attempts ", id, " --json")).exit_code == 0);
  CHECK(bank(absl::StrCat("parked ", id)).exit_code == 0);
  CHECK(bank(absl::StrCat("replay ", id, " --from-position 0.0")).exit_code ==
        0);
  CHECK(bank(absl::StrCat("replay ", id, " --from-time 2020-01-01T00:00:00Z"))
            .exit_code == 0);
  CHECK(bank(absl::StrCat("replay-parked ", id)).exit_code == 0);
  CHECK(bank(absl::StrCat("skip-parked ", id)).exit_code == 0);

  // Bad input: 2, nothing stored; an unknown id: 1 with the message.
  for (const std::string& bad :
       {std::string("create --url ftp://127.0.0.1/"),
        std::string("create --url https://127.0.0.1/ --type nope.v1"),
        std::string("create --url https://127.0.0.1/ --category Bad"),
        // Loopback without --webhook-allow-network, and a private address.
        std::string("create --url https://127.0.0.1/"),
        std::string("create --url http://10.1.2.3/ --webhook-allow-network "
                    "127.0.0.0/8"),
        absl::StrCat("update ", id, " --url http:///x"),
        absl::StrCat("replay ", id, " --from-position nope"),
        absl::StrCat("replay ", id, " --from-time yesterday")}) {
    INFO(bad);
    Run r = bank(bad);
    CHECK(r.exit_code == 2);
  }
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                     ".webhook_endpoints")) == 1);
  Run missing = bank("show wh_0000000000000000");
  CHECK(missing.exit_code == 1);
  CHECK(absl::StrContains(missing.output, "wh_0000000000000000"));
  CHECK(bank("delete wh_0000000000000000").exit_code == 1);
  CHECK(bank(absl::StrCat("delete ", id)).exit_code == 0);
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                     ".webhook_endpoints")) == 0);
}

}  // namespace

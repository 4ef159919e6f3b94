#include "tests/support/test_broker.h"

#include <cstdlib>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "framework/uuid.h"
#include "tests/support/child_process.h"

namespace cqrs::testing {
namespace {

std::string RequiredEnv(const char* name, const char* what) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    FAIL(name << " is not set: this test needs " << what
              << ". Run the suite with scripts/test, which starts a "
                 "throwaway RabbitMQ node and sets it.");
  }
  return value;
}

}  // namespace

std::string TestAmqpUrl() { return RequiredEnv(kTestAmqpUrlEnv, "RabbitMQ"); }

void ControlTestBroker(const std::string& command) {
  std::string script =
      RequiredEnv(kTestRmqControlEnv, "to restart or kill the RabbitMQ node");
  ShellResult result = RunShell(absl::StrCat(script, " ", command, " 2>&1"));
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
}

std::string UniqueAmqpName(absl::string_view prefix) {
  return absl::StrCat(prefix, ".", NewUuid().substr(24));
}

}  // namespace cqrs::testing

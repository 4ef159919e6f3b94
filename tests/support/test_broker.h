// Access to the test RabbitMQ node for tests tagged [amqp].
//
//   auto conn = amqp::Connection::Open(cqrs::testing::TestAmqpUrl());
//   cqrs::testing::ControlTestBroker("restart");  // the node goes away
//
// The URL comes from CQRS_TEST_AMQP_URL and the control script from
// CQRS_TEST_RMQ_CONTROL, which scripts/test sets after starting its
// throwaway node (scripts/lib-rabbitmq.sh). Without them, the test FAILS
// with a message saying to run scripts/test; it never skips.
//
// Thread-safety: call from the test's thread.
#ifndef TESTS_SUPPORT_TEST_BROKER_H_
#define TESTS_SUPPORT_TEST_BROKER_H_

#include <string>

#include "absl/strings/string_view.h"

namespace cqrs::testing {

inline constexpr char kTestAmqpUrlEnv[] = "CQRS_TEST_AMQP_URL";
inline constexpr char kTestRmqControlEnv[] = "CQRS_TEST_RMQ_CONTROL";

// The test node's amqp:// URL; fails the current test when it is not set.
std::string TestAmqpUrl();

// Runs the node's control script (scripts/rmq-node) with `command`:
// "restart" (returns once the node accepts connections again), "kill"
// (SIGKILL), "start" (after kill). Fails the current test when the script
// is not set or fails. The node is shared by every test running at the
// time: tests that call this belong to an executable that ctest runs alone
// (RUN_SERIAL, as amqp_restart_test in tests/CMakeLists.txt).
void ControlTestBroker(const std::string& command);

// `prefix` with a unique suffix, for exchange and queue names of one test.
std::string UniqueAmqpName(absl::string_view prefix);

}  // namespace cqrs::testing

#endif  // TESTS_SUPPORT_TEST_BROKER_H_

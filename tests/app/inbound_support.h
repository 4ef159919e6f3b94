// Helpers shared by the inbound consumer tests (inbound_test.cc,
// inbound_routing_test.cc): reading a queue's messages and their headers.
//
//   auto dead = testing::TakeMessages("orders.dead", 3, absl::Seconds(10));
//   CHECK(testing::HeaderOf(dead[0], "x-cqrs-error") == "400 ...");
//
// Thread-safety: call from the test's thread (they REQUIRE).
#ifndef TESTS_APP_INBOUND_SUPPORT_H_
#define TESTS_APP_INBOUND_SUPPORT_H_

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/time/time.h"
#include "integration/amqp_client.h"
#include "tests/support/test_broker.h"
#include "tests/support/wait.h"

namespace cqrs::testing {

// Consumes and acknowledges messages of `queue` until `n` arrived or
// `timeout` passed; returns those that arrived.
inline std::vector<integration::amqp::Delivery> TakeMessages(
    const std::string& queue, size_t n, absl::Duration timeout) {
  auto conn = integration::amqp::Connection::Open(TestAmqpUrl());
  REQUIRE(conn.ok());
  REQUIRE((*conn)->Consume(queue).ok());
  std::vector<integration::amqp::Delivery> out;
  // Next() itself waits for a message: no pause between polls.
  Eventually(
      [&] {
        auto d = (*conn)->Next(absl::Milliseconds(200));
        REQUIRE(d.ok());
        if (d->has_value()) {
          REQUIRE((*conn)->Ack((*d)->delivery_tag).ok());
          out.push_back(**d);
        }
        return out.size() >= n;
      },
      timeout, absl::ZeroDuration());
  return out;
}

// The value of the message's header `name`, or "" without one.
inline std::string HeaderOf(const integration::amqp::Delivery& d,
                            const std::string& name) {
  for (const auto& [key, value] : d.headers) {
    if (key == name) return value;
  }
  return "";
}

}  // namespace cqrs::testing

#endif  // TESTS_APP_INBOUND_SUPPORT_H_

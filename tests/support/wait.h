// Waiting for a condition in tests, instead of sleeping for a fixed time.
//
//   REQUIRE(cqrs::testing::WaitUntil([&] { return Count() == 10; }));
//
// The condition is checked every `poll` until it holds or `timeout` has
// passed; the timeout only bounds a failing test, so it is generous.
//
// Thread-safety: the condition runs on the calling thread.
#ifndef TESTS_SUPPORT_WAIT_H_
#define TESTS_SUPPORT_WAIT_H_

#include <functional>

#include "absl/time/time.h"

namespace cqrs::testing {

// True as soon as `done()` returns true; false when it still does not
// after `timeout`.
bool WaitUntil(const std::function<bool()>& done,
               absl::Duration timeout = absl::Seconds(60),
               absl::Duration poll = absl::Milliseconds(5));

}  // namespace cqrs::testing

#endif  // TESTS_SUPPORT_WAIT_H_

// Waiting for a condition in tests, instead of sleeping for a fixed time.
//
//   REQUIRE(cqrs::testing::Eventually([&] { return Count() == 10; }));
//
// The condition is checked every `poll` until it holds or `timeout` has
// passed; the timeout only bounds a failing test (it fails instead of
// hanging), so it is generous and never part of what a test asserts. This is
// the one way tests wait: no fixed sleeps, no hand-written polling loops.
//
// To assert that something did NOT happen, first make something that must
// happen afterwards (a positive control: a later event, a second request on
// the same path) and wait for it with Eventually; only then check the
// negative, which a fixed sleep alone could never prove.
//
// Thread-safety: the condition runs on the calling thread.
#ifndef TESTS_SUPPORT_WAIT_H_
#define TESTS_SUPPORT_WAIT_H_

#include <functional>

#include "absl/time/time.h"

namespace cqrs::testing {

// True as soon as `done()` returns true; false when it still does not
// after `timeout`.
bool Eventually(const std::function<bool()>& done,
                absl::Duration timeout = absl::Seconds(60),
                absl::Duration poll = absl::Milliseconds(5));

}  // namespace cqrs::testing

#endif  // TESTS_SUPPORT_WAIT_H_

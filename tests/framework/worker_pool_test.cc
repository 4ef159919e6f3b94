#include "framework/worker_pool.h"

#include <atomic>

#include <catch2/catch.hpp>

#include "absl/synchronization/notification.h"
#include "tests/support/wait.h"

namespace cqrs {
namespace {

TEST_CASE(
    "a burst no larger than the idle threads is taken even before they wake, "
    "and only tasks beyond them count against the queue",
    "[framework]") {
  constexpr int kThreads = 4;
  WorkerPool pool(kThreads, /*max_queued=*/1);
  absl::Notification release;
  std::atomic<int> started{0};
  auto task = [&] {
    ++started;
    release.WaitForNotification();
  };
  REQUIRE(testing::Eventually([&] { return pool.idle_threads() == kThreads; }));
  // Submitted back to back, faster than idle threads wake up: before, the
  // second found the first still queued and was refused.
  int accepted = 0;
  for (int i = 0; i < kThreads; ++i) accepted += pool.TrySubmit(task) ? 1 : 0;
  CHECK(accepted == kThreads);
  const bool all_started =
      testing::Eventually([&] { return started.load() == kThreads; });
  // Every thread busy: one task may wait, the next is refused.
  const bool queued = pool.TrySubmit(task);
  const bool refused = !pool.TrySubmit(task);
  release.Notify();
  CHECK(all_started);
  CHECK(queued);
  CHECK(refused);
  pool.Stop();
}

}  // namespace
}  // namespace cqrs

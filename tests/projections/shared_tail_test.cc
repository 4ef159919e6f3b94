// The projection runner's shared tail (projections/internal/shared_tail.h)
// over the in-memory store: every answer is what the store would say (or a
// prefix of it), a page is read from the store once for all workers, a
// worker waits for another's read of the same page instead of making its
// own, and a failing store costs no cached event.
#include "projections/internal/shared_tail.h"

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "eventstore/in_memory_event_store.h"
#include "tests/support/wait.h"

namespace cqrs::projections_internal {
namespace {

using eventstore::ExpectedVersion;
using eventstore::NewEvent;
using eventstore::Position;
using eventstore::ReadAllResult;
using eventstore::RecordedEvent;

// Options whose cached range never goes stale by age: only a notification
// or a poke makes a short read go on to the store.
SharedTailOptions NeverStale() {
  SharedTailOptions options;
  options.fresh_for = absl::InfiniteDuration();
  return options;
}

// The in-memory store, with its ReadAll counted, and made to fail or to
// wait for a release on request.
class ProbedStore : public eventstore::InMemoryEventStore {
 public:
  absl::StatusOr<ReadAllResult> ReadAll(Position after, int limit) override {
    calls_.fetch_add(1);
    if (hold_ != nullptr) hold_->WaitForNotification();
    if (fail_.load()) return absl::UnavailableError("the store is down");
    return InMemoryEventStore::ReadAll(after, limit);
  }

  int calls() const { return calls_.load(); }
  void Fail(bool fail) { fail_.store(fail); }
  // Reads wait for `hold` until it is notified (null: they do not wait).
  void Hold(absl::Notification* hold) { hold_ = hold; }

 private:
  std::atomic<int> calls_{0};
  std::atomic<bool> fail_{false};
  absl::Notification* hold_ = nullptr;
};

void AppendEvents(eventstore::EventStore& store, int n, int* counter) {
  for (int i = 0; i < n; ++i) {
    NewEvent e;
    e.event_type = "Noted";
    e.data = absl::StrCat("{\"n\":", (*counter)++, "}");
    REQUIRE(store
                .Append(absl::StrCat("note-", *counter % 5),
                        ExpectedVersion::Any(), {e})
                .ok());
  }
}

std::vector<std::string> Ids(const std::vector<RecordedEvent>& events) {
  std::vector<std::string> ids;
  for (const RecordedEvent& e : events) ids.push_back(e.event_id);
  return ids;
}

TEST_CASE("shared tail: one read of the store serves every worker",
          "[projections][shared_tail]") {
  ProbedStore store;
  int counter = 0;
  AppendEvents(store, 50, &counter);
  SharedTail tail(&store, NeverStale());

  const auto truth = store.InMemoryEventStore::ReadAll(Position::Start(), 1000);
  REQUIRE(truth.ok());
  for (int worker = 0; worker < 5; ++worker) {
    auto page = tail.Read(Position::Start(), 1000);
    REQUIRE(page.ok());
    CHECK(Ids(page->events) == Ids(truth->events));
    CHECK(page->next == truth->next);
  }
  CHECK(tail.store_reads() == 1);

  // New events, notified: read once more, from where the cached range
  // ends.
  AppendEvents(store, 10, &counter);
  tail.Notify(*store.HeadPosition());
  const auto more = store.InMemoryEventStore::ReadAll(truth->next, 1000);
  REQUIRE(more.ok());
  REQUIRE(more->events.size() == 10);
  for (int worker = 0; worker < 5; ++worker) {
    auto page = tail.Read(truth->next, 1000);
    REQUIRE(page.ok());
    CHECK(Ids(page->events) == Ids(more->events));
  }
  CHECK(tail.store_reads() == 2);

  // A smaller limit, from inside the range: the cache, exactly.
  auto first = tail.Read(Position::Start(), 20);
  REQUIRE(first.ok());
  const auto first_truth =
      store.InMemoryEventStore::ReadAll(Position::Start(), 20);
  CHECK(Ids(first->events) == Ids(first_truth->events));
  CHECK(first->next == first_truth->next);
  auto middle = tail.Read(first->next, 7);
  REQUIRE(middle.ok());
  const auto middle_truth = store.InMemoryEventStore::ReadAll(first->next, 7);
  CHECK(Ids(middle->events) == Ids(middle_truth->events));
  CHECK(tail.store_reads() == 2);

  // At the head with nothing notified: an empty answer from the cache.
  auto head = tail.Read(more->next, 1000);
  REQUIRE(head.ok());
  CHECK(head->events.empty());
  CHECK(head->next == more->next);
  CHECK(tail.store_reads() == 2);
}

TEST_CASE(
    "shared tail: news reaches the readers through a notification, a poke "
    "or the age of the last read",
    "[projections][shared_tail]") {
  ProbedStore store;
  int counter = 0;
  AppendEvents(store, 3, &counter);
  SharedTail tail(&store, NeverStale());
  auto first = tail.Read(Position::Start(), 1000);
  REQUIRE(first.ok());
  REQUIRE(first->events.size() == 3);

  // Not notified: the cache answers, without the new event.
  AppendEvents(store, 1, &counter);
  auto stale = tail.Read(first->next, 1000);
  REQUIRE(stale.ok());
  CHECK(stale->events.empty());
  CHECK(tail.store_reads() == 1);
  // Notified of a position the cache has: still the cache.
  tail.Notify(first->events[1].position);
  CHECK(tail.Read(first->next, 1000)->events.empty());
  CHECK(tail.store_reads() == 1);
  // Notified of the new event: read.
  tail.Notify(*store.HeadPosition());
  auto notified = tail.Read(first->next, 1000);
  REQUIRE(notified.ok());
  CHECK(notified->events.size() == 1);
  CHECK(tail.store_reads() == 2);

  // A poke (notifications may have been lost): the next short read goes
  // to the store, and only that one.
  AppendEvents(store, 1, &counter);
  tail.Poke();
  auto poked = tail.Read(notified->next, 1000);
  REQUIRE(poked.ok());
  CHECK(poked->events.size() == 1);
  CHECK(tail.Read(poked->next, 1000)->events.empty());
  CHECK(tail.store_reads() == 3);

  // Without either, once the last read is fresh_for old.
  SharedTailOptions aging;
  aging.fresh_for = absl::ZeroDuration();
  SharedTail aged(&store, aging);
  auto all = aged.Read(Position::Start(), 1000);
  REQUIRE(all.ok());
  AppendEvents(store, 1, &counter);
  auto later = aged.Read(all->next, 1000);
  REQUIRE(later.ok());
  CHECK(later->events.size() == 1);
  CHECK(aged.store_reads() == 2);
}

TEST_CASE(
    "shared tail: a reader's filter copies only its events and counts "
    "every event read",
    "[projections][shared_tail]") {
  ProbedStore store;
  int counter = 0;
  AppendEvents(store, 20, &counter);
  SharedTail tail(&store, NeverStale());
  const auto truth = store.InMemoryEventStore::ReadAll(Position::Start(), 1000);
  REQUIRE(truth.ok());
  // Streams note-1, note-2, ..., note-0 in turn: keep note-1's.
  const SharedTail::Keep keep = [](const RecordedEvent& e) {
    return e.stream_id == "note-1";
  };
  std::vector<std::string> wanted;
  for (const RecordedEvent& e : truth->events) {
    if (e.stream_id == "note-1") wanted.push_back(e.event_id);
  }
  REQUIRE(wanted.size() == 4);
  // From the store, then from the cache: the same.
  for (int round = 0; round < 2; ++round) {
    auto page = tail.Read(Position::Start(), 1000, keep);
    REQUIRE(page.ok());
    CHECK(Ids(page->events) == wanted);
    CHECK(page->read == 20);
    CHECK(page->next == truth->next);
  }
  CHECK(tail.store_reads() == 1);
  // A limit counts the events read, kept or not.
  auto first = tail.Read(Position::Start(), 7, keep);
  REQUIRE(first.ok());
  CHECK(first->read == 7);
  CHECK(first->next == truth->events[6].position);
  size_t wanted_in_first = 0;
  for (int i = 0; i < 7; ++i) {
    wanted_in_first += truth->events[i].stream_id == "note-1" ? 1 : 0;
  }
  CHECK(first->events.size() == wanted_in_first);
}

TEST_CASE("shared tail: a worker behind the cached range reads on its own",
          "[projections][shared_tail]") {
  ProbedStore store;
  int counter = 0;
  AppendEvents(store, 30, &counter);
  SharedTailOptions options;
  options.max_events = 10;
  options.fresh_for = absl::InfiniteDuration();
  SharedTail tail(&store, options);
  auto all = tail.Read(Position::Start(), 1000);
  REQUIRE(all.ok());
  REQUIRE(all->events.size() == 30);
  CHECK(tail.store_reads() == 1);
  // Only the last 10 are kept: an older position goes to the store, for
  // exactly what it asked, and leaves the cached range as it was.
  auto behind = tail.Read(all->events[4].position, 5);
  REQUIRE(behind.ok());
  REQUIRE(behind->events.size() == 5);
  CHECK(behind->events.front().event_id == all->events[5].event_id);
  CHECK(tail.store_reads() == 2);
  auto kept = tail.Read(all->events[20].position, 5);
  REQUIRE(kept.ok());
  REQUIRE(kept->events.size() == 5);
  CHECK(kept->events.front().event_id == all->events[21].event_id);
  CHECK(tail.store_reads() == 2);
}

TEST_CASE(
    "shared tail: a worker waits for another's read of the same page "
    "instead of making its own",
    "[projections][shared_tail]") {
  ProbedStore store;
  int counter = 0;
  AppendEvents(store, 5, &counter);
  SharedTail tail(&store, NeverStale());
  auto first = tail.Read(Position::Start(), 1000);
  REQUIRE(first.ok());
  AppendEvents(store, 5, &counter);
  tail.Notify(*store.HeadPosition());

  absl::Notification release;
  store.Hold(&release);
  std::vector<std::vector<std::string>> seen(2);
  std::vector<std::thread> workers;
  // (No REQUIRE while the workers run: it would leave them unjoined.)
  bool first_inside = false;
  for (int i = 0; i < 2; ++i) {
    workers.emplace_back([&, i] {
      auto page = tail.Read(first->next, 1000);
      if (page.ok()) seen[i] = Ids(page->events);
    });
    if (i == 0) {
      // The first worker is inside the store's read.
      first_inside = testing::Eventually([&] { return store.calls() == 2; });
    }
  }
  // The second waits for the first's read; a second read of the store would
  // have shown as a third call.
  const bool waited = testing::Eventually(
      [&] { return tail.waiting() == 1 || store.calls() > 2; });
  release.Notify();
  for (auto& w : workers) w.join();
  CHECK(first_inside);
  CHECK(waited);
  CHECK(store.calls() == 2);
  CHECK(seen[0].size() == 5);
  CHECK(seen[1] == seen[0]);
}

TEST_CASE("shared tail: a failing store costs no cached event",
          "[projections][shared_tail]") {
  ProbedStore store;
  int counter = 0;
  AppendEvents(store, 10, &counter);
  SharedTailOptions options;
  options.fresh_for = absl::ZeroDuration();  // every short read goes on
  SharedTail tail(&store, options);
  auto all = tail.Read(Position::Start(), 1000);
  REQUIRE(all.ok());
  store.Fail(true);
  // Cached events after the position: answered, though the read on from
  // the end failed.
  auto cached = tail.Read(all->events[6].position, 1000);
  REQUIRE(cached.ok());
  CHECK(cached->events.size() == 3);
  // Nothing cached after it: the error.
  auto failed = tail.Read(all->next, 1000);
  CHECK(absl::IsUnavailable(failed.status()));
  store.Fail(false);
  AppendEvents(store, 2, &counter);
  auto again = tail.Read(all->next, 1000);
  REQUIRE(again.ok());
  CHECK(again->events.size() == 2);
}

TEST_CASE(
    "shared tail: workers at their own pace while events arrive each see "
    "the store's order, every event once",
    "[projections][shared_tail]") {
  ProbedStore store;
  SharedTailOptions options;
  options.max_events = 64;  // small, so that trimming happens too
  options.min_read = 50;
  options.fresh_for = absl::ZeroDuration();  // every short read goes on
  SharedTail tail(&store, options);
  constexpr int kEvents = 3000;
  constexpr int kWorkers = 4;
  std::vector<std::vector<std::string>> seen(kWorkers);
  std::atomic<int> errors{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937 random(static_cast<unsigned>(w));
      Position at = Position::Start();
      while (seen[w].size() < kEvents) {
        const int limit = 1 + static_cast<int>(random() % 120);
        auto page = tail.Read(at, limit);
        if (!page.ok() || static_cast<int>(page->events.size()) > limit) {
          errors.fetch_add(1);
          return;
        }
        for (const RecordedEvent& e : page->events) {
          seen[w].push_back(e.event_id);
        }
        at = page->next;
        if (page->events.empty()) std::this_thread::yield();
      }
    });
  }
  int counter = 0;
  for (int i = 0; i < kEvents; i += 30) AppendEvents(store, 30, &counter);
  for (auto& w : workers) w.join();
  REQUIRE(errors.load() == 0);
  const auto truth =
      store.InMemoryEventStore::ReadAll(Position::Start(), kEvents);
  REQUIRE(truth.ok());
  for (int w = 0; w < kWorkers; ++w) {
    INFO("worker " << w);
    CHECK(seen[w] == Ids(truth->events));
  }
  INFO("store reads " << tail.store_reads());
  CHECK(tail.store_reads() > 0);
}

}  // namespace
}  // namespace cqrs::projections_internal

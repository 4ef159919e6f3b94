// The new events that every projection worker of a runner reads, read from
// the event store once and handed to each worker that asks for them: N
// projections following the head cost one read of each new event instead
// of N.
//
// Why a cached page stays correct: ReadAll(after) returns every event in
// (after, next] (the store never returns an event past one whose
// transaction could still commit before it), so no event can join that
// range later. The cache holds one such range, (begin, end], and answers a
// read from any position in it with the cached events after that position.
// When that is less than the limit and the range may be missing news (a
// notification named a position past `end`, the runner's listener
// reconnected, or the last read of the store began `fresh_for` ago), it
// reads on from `end`, one read at a time: a worker that finds a read from
// `end` under way waits for it instead of making its own. A read from
// outside the range goes to the store; when it starts at or past `end` (or
// nothing is cached), its page becomes the cached range.
//
// Thread-safety: thread-safe.
#ifndef PROJECTIONS_INTERNAL_SHARED_TAIL_H_
#define PROJECTIONS_INTERNAL_SHARED_TAIL_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "eventstore/event_store.h"

namespace cqrs::projections_internal {

struct SharedTailOptions {
  // The cached range is trimmed from its start beyond either bound.
  size_t max_events = 4096;
  size_t max_bytes = size_t{16} << 20;
  // Events asked of the store per read, at least (a worker's limit when
  // larger), so that a page read for one worker serves the others too.
  int min_read = 1000;
  // Without a notification of news, the cached range is read on from its
  // end once the last read of the store began this long ago.
  absl::Duration fresh_for = absl::Milliseconds(5);
};

// A page of the shared tail: the events a worker keeps of what was read.
struct TailPage {
  std::vector<eventstore::RecordedEvent> events;
  // As ReadAllResult::next: the last event read, kept or not; else the
  // position read after.
  eventstore::Position next;
  // Events read, kept or not.
  int read = 0;
};

class SharedTail {
 public:
  // Which events a reader wants copied into its page (all when empty).
  using Keep = std::function<bool(const eventstore::RecordedEvent&)>;

  explicit SharedTail(eventstore::EventStore* store,
                      SharedTailOptions options = {});

  // What store->ReadAll(after, limit) would return, or a prefix of it
  // (fewer events when a read made by another worker a moment ago ended
  // there), with only the events `keep` accepts copied.
  absl::StatusOr<TailPage> Read(eventstore::Position after, int limit,
                                const Keep& keep = {});

  // Events up to `position` have committed (the store's notification).
  void Notify(eventstore::Position position);
  // Notifications may have been lost: the next short read goes to the store.
  void Poke();

  // Reads that went to the store, and workers waiting for another's read
  // (for tests).
  int64_t store_reads() const;
  int waiting() const;

 private:
  // Reads the cached events after `after` into `out`, up to `limit` read
  // in all.
  void CopyFrom(eventstore::Position after, int limit, const Keep& keep,
                TailPage* out) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  bool Covers(eventstore::Position after) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The cached range may end before events that have committed.
  bool MayMissNews() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Makes (after, page.next] the cached range, or extends it when `after`
  // is its end.
  void Store(eventstore::Position after, const eventstore::ReadAllResult& page)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Trim() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  eventstore::EventStore* const store_;
  const SharedTailOptions options_;

  mutable absl::Mutex mu_;
  bool valid_ ABSL_GUARDED_BY(mu_) = false;
  eventstore::Position begin_ ABSL_GUARDED_BY(mu_);
  eventstore::Position end_ ABSL_GUARDED_BY(mu_);
  std::deque<eventstore::RecordedEvent> events_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // A read from end_ is under way.
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  // When the read of the store that made end_ began.
  absl::Time read_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // The newest notified position.
  eventstore::Position notified_ ABSL_GUARDED_BY(mu_);
  // Poke() calls, and those before the read that made end_ began.
  uint64_t pokes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pokes_seen_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t store_reads_ ABSL_GUARDED_BY(mu_) = 0;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cqrs::projections_internal

#endif  // PROJECTIONS_INTERNAL_SHARED_TAIL_H_

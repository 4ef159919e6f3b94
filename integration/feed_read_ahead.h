// Pages of the feed (integration/feed.h) with read-ahead: while a consumer
// that is catching up handles one full page, the next one is already being
// read, so that the store's read overlaps with the page's transfer and the
// consumer's work instead of following them.
//
//   FeedReadAhead feed(&store, &publication);
//   ASSIGN_OR_RETURN(FeedPage page, feed.Read(query));   // as ReadFeed()
//
// A full page read ahead is the page a later read would return: it ends at
// an event that was readable, and no event can become readable before it
// later (the store's commit order, docs/event-store.md); a page read ahead
// that is not full may miss what committed since, and is read again. Only
// a full page not at the head is followed by a read-ahead, on one thread
// of its own, for exactly the same query from its `next`; at most
// `max_pages` are kept (the oldest go first), and a read-ahead that finds
// the thread busy is not made. Nothing else changes: Read() returns what
// ReadFeed() would.
//
// Thread-safety: Read() from any thread. `store` and `publication` must
// outlive this object.
#ifndef INTEGRATION_FEED_READ_AHEAD_H_
#define INTEGRATION_FEED_READ_AHEAD_H_

#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "eventstore/event_store.h"
#include "framework/worker_pool.h"
#include "integration/cloud_events.h"
#include "integration/feed.h"

namespace cqrs::integration {

class FeedReadAhead {
 public:
  FeedReadAhead(eventstore::EventStore* store, const Publication* publication,
                size_t max_pages = 16);
  FeedReadAhead(const FeedReadAhead&) = delete;
  FeedReadAhead& operator=(const FeedReadAhead&) = delete;
  // Waits for a read-ahead in progress.
  ~FeedReadAhead();

  // ReadFeed(store, publication, query), from a page read ahead for this
  // very query when there is one (waiting for it when it is still being
  // read). Errors as ReadFeed().
  absl::StatusOr<FeedPage> Read(const FeedQuery& query);

 private:
  struct Page;

  static std::string KeyOf(const FeedQuery& query);
  std::shared_ptr<Page> Take(const std::string& key);
  void Start(FeedQuery query);

  eventstore::EventStore* const store_;
  const Publication* const publication_;
  const size_t max_pages_;

  absl::Mutex mu_;
  // Oldest first.
  std::deque<std::pair<std::string, std::shared_ptr<Page>>> pages_
      ABSL_GUARDED_BY(mu_);

  // Last: stopped (joined) first.
  WorkerPool pool_;
};

}  // namespace cqrs::integration

#endif  // INTEGRATION_FEED_READ_AHEAD_H_

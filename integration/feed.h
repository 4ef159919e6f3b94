// The published events as a feed other systems follow: pages in the global
// commit order, filtered, resumable from a position token.
//
//   FeedQuery q;
//   q.after = Position::Start();
//   q.limit = 100;
//   q.types = {"bank.account.deposited.v1"};
//   ASSIGN_OR_RETURN(FeedPage page, ReadFeed(store, publication, q));
//   ... page.items (CloudEvent JSON), then q.after = page.next ...
//
// The order and the cursor are the event store's (ReadAll): a reader that
// resumes from `next` never skips an event, even one whose transaction
// committed after later-numbered events became visible, and never sees one
// twice. Events that are not published or do not match the filters are
// passed over, and `next` moves past them too, so a consumer of a rare type
// neither reads them again nor shows lag it does not have. A page reads at
// most `scan_budget` events from the store; when none of them matched it
// is empty with `next` after them (ask again at once).
//
// Thread-safety: a function of its arguments; the store is thread-safe.
#ifndef INTEGRATION_FEED_H_
#define INTEGRATION_FEED_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "eventstore/event_store.h"
#include "eventstore/position.h"
#include "integration/cloud_events.h"

namespace cqrs::integration {

inline constexpr int kMaxFeedLimit = 1000;
inline constexpr int kDefaultFeedLimit = 100;

struct FeedQuery {
  eventstore::Position after = eventstore::Position::Start();
  int limit = kDefaultFeedLimit;  // 1..kMaxFeedLimit
  // Each filter that is not empty must match: any of `types` (CloudEvents
  // types, "<public>.v<version>"), the subject, the category.
  std::vector<std::string> types;
  std::string subject;
  std::string category;
  // Events read from the store for one page at most (>= limit).
  int scan_budget = 10000;
};

struct FeedItem {
  eventstore::Position position;
  const PublishedType* type = nullptr;  // owned by the Publication
  std::string cloud_event;              // its JSON
};

struct FeedPage {
  std::vector<FeedItem> items;  // in commit order
  eventstore::Position next;    // resume from here
  // The last event read from the store was the newest there was.
  bool at_head = false;
};

// Whether a stored `event` of published `type` passes the filters of
// `query` (its types, subject and category; not its position).
bool FeedMatches(const FeedQuery& query, const eventstore::RecordedEvent& event,
                 const PublishedType& type);

// The next page after `query.after`. kInvalidArgument for a limit outside
// 1..kMaxFeedLimit, a scan budget below the limit, or a type filter naming
// no published type; the store's errors otherwise (kUnavailable: retry).
absl::StatusOr<FeedPage> ReadFeed(eventstore::EventStore& store,
                                  const Publication& publication,
                                  const FeedQuery& query);

}  // namespace cqrs::integration

#endif  // INTEGRATION_FEED_H_

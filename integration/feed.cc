#include "integration/feed.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace cqrs::integration {

bool FeedMatches(const FeedQuery& query, const eventstore::RecordedEvent& event,
                 const PublishedType& type) {
  return (query.types.empty() ||
          std::find(query.types.begin(), query.types.end(),
                    type.CloudEventType()) != query.types.end()) &&
         (query.subject.empty() ||
          SubjectOf(event.stream_id) == query.subject) &&
         (query.category.empty() ||
          eventstore::CategoryOf(event.stream_id) == query.category);
}

absl::StatusOr<FeedPage> ReadFeed(eventstore::EventStore& store,
                                  const Publication& publication,
                                  const FeedQuery& query) {
  if (query.limit < 1 || query.limit > kMaxFeedLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit must be 1..", kMaxFeedLimit));
  }
  if (query.scan_budget < query.limit) {
    return absl::InvalidArgumentError("the scan budget must be >= the limit");
  }
  // The filter's types, compared by address below.
  std::vector<const PublishedType*> types;
  for (const std::string& type : query.types) {
    const PublishedType* published = publication.FindCloudEventType(type);
    if (published == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("type '", type, "' is not a published event type"));
    }
    types.push_back(published);
  }
  FeedPage page;
  page.next = query.after;
  int scanned = 0;
  while (static_cast<int>(page.items.size()) < query.limit &&
         scanned < query.scan_budget) {
    // Reading a little more than what is missing keeps round trips few
    // when most events match, and bounded by the budget when few do.
    const int want =
        std::min(query.scan_budget - scanned, std::max(query.limit, 100));
    absl::StatusOr<eventstore::ReadAllResult> read =
        store.ReadAll(page.next, want);
    if (!read.ok()) return read.status();
    for (const eventstore::RecordedEvent& event : read->events) {
      ++scanned;
      page.next = event.position;
      const PublishedType* type = publication.Find(event.event_type);
      const bool matches =
          type != nullptr &&
          (types.empty() ||
           std::find(types.begin(), types.end(), type) != types.end()) &&
          (query.subject.empty() ||
           SubjectOf(event.stream_id) == query.subject) &&
          (query.category.empty() ||
           eventstore::CategoryOf(event.stream_id) == query.category);
      if (matches) {
        absl::StatusOr<std::optional<std::string>> encoded =
            publication.Encode(event);
        if (!encoded.ok()) return encoded.status();
        page.items.push_back(
            FeedItem{event.position, type, **std::move(encoded)});
        if (static_cast<int>(page.items.size()) == query.limit) break;
      }
    }
    if (static_cast<int>(read->events.size()) < want &&
        static_cast<int>(page.items.size()) < query.limit) {
      page.at_head = true;
      break;
    }
  }
  return page;
}

}  // namespace cqrs::integration

#include "integration/feed_read_ahead.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cqrs::integration {

struct FeedReadAhead::Page {
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::StatusOr<FeedPage> page ABSL_GUARDED_BY(mu);
};

FeedReadAhead::FeedReadAhead(eventstore::EventStore* store,
                             const Publication* publication, size_t max_pages)
    : store_(store),
      publication_(publication),
      max_pages_(max_pages),
      pool_(/*threads=*/1, max_pages) {}

FeedReadAhead::~FeedReadAhead() { pool_.Stop(); }

std::string FeedReadAhead::KeyOf(const FeedQuery& query) {
  // '\n' cannot occur in a position token or a number; in the filters it
  // would only make two queries share a key if they were equal anyway.
  return absl::StrCat(query.after.ToToken(), "\n", query.limit, "\n",
                      query.scan_budget, "\n", absl::StrJoin(query.types, ","),
                      "\n", query.subject.size(), ":", query.subject, "\n",
                      query.category);
}

std::shared_ptr<FeedReadAhead::Page> FeedReadAhead::Take(
    const std::string& key) {
  absl::MutexLock lock(&mu_);
  for (auto it = pages_.begin(); it != pages_.end(); ++it) {
    if (it->first == key) {
      std::shared_ptr<Page> page = std::move(it->second);
      pages_.erase(it);
      return page;
    }
  }
  return nullptr;
}

void FeedReadAhead::Start(FeedQuery query) {
  std::string key = KeyOf(query);
  auto page = std::make_shared<Page>();
  {
    absl::MutexLock lock(&mu_);
    for (const auto& entry : pages_) {
      if (entry.first == key) return;
    }
    if (pages_.size() >= max_pages_) pages_.pop_front();
    pages_.emplace_back(key, page);
  }
  const bool queued = pool_.TrySubmit([this, page, query = std::move(query)] {
    absl::StatusOr<FeedPage> read = ReadFeed(*store_, *publication_, query);
    absl::MutexLock lock(&page->mu);
    page->page = std::move(read);
    page->done = true;
  });
  if (!queued) Take(key);
}

absl::StatusOr<FeedPage> FeedReadAhead::Read(const FeedQuery& query) {
  absl::StatusOr<FeedPage> page = absl::UnknownError("not read");
  if (std::shared_ptr<Page> ahead = Take(KeyOf(query))) {
    absl::MutexLock lock(&ahead->mu);
    ahead->mu.Await(absl::Condition(&ahead->done));
    page = std::move(ahead->page);
  }
  // Only a full page stays what it was; a shorter one (the head was
  // reached) may miss events committed since, and a failed read (the store
  // was unreachable) may work now: both are read again.
  if (!page.ok() || static_cast<int>(page->items.size()) != query.limit) {
    page = ReadFeed(*store_, *publication_, query);
  }
  if (page.ok() && !page->at_head &&
      static_cast<int>(page->items.size()) == query.limit) {
    FeedQuery next = query;
    next.after = page->next;
    Start(std::move(next));
  }
  return page;
}

}  // namespace cqrs::integration

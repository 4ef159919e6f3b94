#include "projections/internal/shared_tail.h"

#include <algorithm>
#include <utility>

namespace cqrs::projections_internal {

using eventstore::Position;
using eventstore::ReadAllResult;
using eventstore::RecordedEvent;

namespace {

size_t SizeOf(const RecordedEvent& e) {
  return sizeof(RecordedEvent) + e.stream_id.size() + e.event_id.size() +
         e.event_type.size() + e.data.size() + e.metadata.size();
}

}  // namespace

SharedTail::SharedTail(eventstore::EventStore* store, SharedTailOptions options)
    : store_(store), options_(options) {}

int64_t SharedTail::store_reads() const {
  absl::MutexLock lock(&mu_);
  return store_reads_;
}

int SharedTail::waiting() const {
  absl::MutexLock lock(&mu_);
  return waiting_;
}

bool SharedTail::Covers(Position after) const {
  return valid_ && begin_ <= after && after <= end_;
}

namespace {

// Reads `e` into `out`: counted, copied when kept.
void Take(const RecordedEvent& e, const SharedTail::Keep& keep, TailPage* out) {
  ++out->read;
  out->next = e.position;
  if (!keep || keep(e)) out->events.push_back(e);
}

}  // namespace

void SharedTail::CopyFrom(Position after, int limit, const Keep& keep,
                          TailPage* out) const {
  auto it = std::upper_bound(
      events_.begin(), events_.end(), after,
      [](const Position& p, const RecordedEvent& e) { return p < e.position; });
  const size_t room = static_cast<size_t>(std::max(0, limit - out->read));
  out->events.reserve(out->events.size() +
                      std::min(room, static_cast<size_t>(events_.end() - it)));
  for (; it != events_.end() && out->read < limit; ++it) Take(*it, keep, out);
}

void SharedTail::Notify(Position position) {
  absl::MutexLock lock(&mu_);
  if (notified_ < position) notified_ = position;
}

void SharedTail::Poke() {
  absl::MutexLock lock(&mu_);
  ++pokes_;
}

bool SharedTail::MayMissNews() const {
  return end_ < notified_ || pokes_ != pokes_seen_ ||
         absl::Now() - read_at_ >= options_.fresh_for;
}

void SharedTail::Store(Position after, const ReadAllResult& page) {
  if (!(valid_ && after == end_)) {
    events_.clear();
    bytes_ = 0;
    begin_ = after;
    valid_ = true;
  }
  for (const RecordedEvent& e : page.events) {
    events_.push_back(e);
    bytes_ += SizeOf(e);
  }
  end_ = page.next;
  Trim();
}

void SharedTail::Trim() {
  while (!events_.empty() && (events_.size() > options_.max_events ||
                              bytes_ > options_.max_bytes)) {
    begin_ = events_.front().position;
    bytes_ -= std::min(bytes_, SizeOf(events_.front()));
    events_.pop_front();
  }
}

absl::StatusOr<TailPage> SharedTail::Read(Position after, int limit,
                                          const Keep& keep) {
  TailPage out;
  out.next = after;
  limit = std::max(limit, 1);
  bool extending = false;
  // Behind the cached range: a worker that catches up reads its own pages.
  bool behind = false;
  absl::Time started;
  uint64_t pokes = 0;
  {
    absl::MutexLock lock(&mu_);
    behind = valid_ && after < begin_;
    if (Covers(after)) {
      CopyFrom(after, limit, keep, &out);
      if (out.read >= limit) return out;
      if (!reading_ && !MayMissNews()) return out;
      if (reading_) {
        // Another worker is reading on from the end: its page is as fresh
        // as one of this worker's own would be.
        ++waiting_;
        mu_.Await(absl::Condition(
            +[](bool* reading) { return !*reading; }, &reading_));
        --waiting_;
        if (Covers(out.next)) CopyFrom(out.next, limit, keep, &out);
        return out;
      }
      reading_ = true;
      extending = true;
    }
    started = absl::Now();
    pokes = pokes_;
  }
  // Extending: from the cached range's end, which out.next now is (no one
  // else moves the end while reading_ is set). Otherwise from `after`.
  const Position from = out.next;
  // Any read but a catching-up worker's is made large enough to serve the
  // others too.
  const int want =
      behind ? limit : std::max(limit - out.read, options_.min_read);
  absl::StatusOr<ReadAllResult> page = store_->ReadAll(from, want);
  absl::MutexLock lock(&mu_);
  ++store_reads_;
  if (extending) reading_ = false;
  if (!page.ok()) {
    // The cached events are still a correct answer; the error comes back
    // with the next read.
    if (out.read > 0) return out;
    return page.status();
  }
  if (extending ? valid_ && end_ == from
                : !behind && !reading_ && (!valid_ || end_ <= from)) {
    Store(from, *page);
    read_at_ = started;
    pokes_seen_ = pokes;
  }
  for (const RecordedEvent& e : page->events) {
    if (out.read >= limit) break;
    Take(e, keep, &out);
  }
  return out;
}

}  // namespace cqrs::projections_internal

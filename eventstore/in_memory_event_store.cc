#include "eventstore/in_memory_event_store.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "eventstore/internal/validation.h"
#include "framework/status_macros.h"

namespace cqrs::eventstore {
namespace {

using eventstore_internal::EventIdConflict;
using eventstore_internal::StreamDeleted;
using eventstore_internal::StreamNotFound;
using eventstore_internal::ValidateAppend;
using eventstore_internal::ValidateLimit;
using eventstore_internal::ValidateSnapshot;
using eventstore_internal::ValidateStreamId;
using eventstore_internal::VersionConflict;

// The first event of `log` after `after`; `log` is sorted by position.
std::vector<RecordedEvent>::const_iterator FirstAfter(
    const std::vector<RecordedEvent>& log, Position after) {
  return std::upper_bound(
      log.begin(), log.end(), after,
      [](const Position& p, const RecordedEvent& e) { return p < e.position; });
}

}  // namespace

absl::StatusOr<AppendResult> InMemoryEventStore::Append(
    absl::string_view stream_id, ExpectedVersion expected,
    std::vector<NewEvent> events) {
  RETURN_IF_ERROR(eventstore_internal::ValidateExpectedVersion(expected));
  RETURN_IF_ERROR(ValidateAppend(stream_id, events));
  absl::MutexLock lock(&mu_);

  // A known first id makes the call a retry; see EventStore::Append().
  if (auto first = by_event_id_.find(events.front().event_id);
      first != by_event_id_.end()) {
    const RecordedEvent& original = log_[first->second];
    bool same_append = original.stream_id == stream_id;
    for (size_t i = 1; same_append && i < events.size(); ++i) {
      auto it = by_event_id_.find(events[i].event_id);
      same_append = it != by_event_id_.end() &&
                    log_[it->second].stream_id == stream_id &&
                    log_[it->second].stream_version ==
                        original.stream_version + static_cast<int64_t>(i);
    }
    if (!same_append) return EventIdConflict(events.front().event_id);
    AppendResult result;
    result.stream_id = original.stream_id;
    result.first_version = original.stream_version;
    result.last_version =
        original.stream_version + static_cast<int64_t>(events.size()) - 1;
    result.position = log_[by_event_id_.at(events.back().event_id)].position;
    result.already_stored = true;
    return result;
  }
  for (const NewEvent& e : events) {
    if (by_event_id_.contains(e.event_id)) return EventIdConflict(e.event_id);
  }

  const std::string stream(stream_id);
  if (deleted_.count(stream) > 0) return StreamDeleted(stream_id);
  auto existing = streams_.find(stream);
  const int64_t current = existing == streams_.end()
                              ? 0
                              : static_cast<int64_t>(existing->second.size());
  if (!expected.IsSatisfiedBy(current)) {
    return VersionConflict(stream_id, expected, current);
  }
  std::vector<size_t>& indexes = streams_[stream];

  const uint64_t transaction_id = next_transaction_id_++;
  const absl::Time now = absl::Now();
  log_.reserve(log_.size() + events.size());
  indexes.reserve(indexes.size() + events.size());
  for (NewEvent& e : events) {
    RecordedEvent recorded;
    recorded.event_id = std::move(e.event_id);
    recorded.stream_id = stream;
    recorded.stream_version = static_cast<int64_t>(indexes.size()) + 1;
    // Nothing is ever removed from log_, so its size numbers events densely.
    recorded.position =
        Position{transaction_id, static_cast<int64_t>(log_.size()) + 1};
    recorded.event_type = std::move(e.event_type);
    recorded.schema_version = e.schema_version;
    recorded.data = std::move(e.data);
    recorded.metadata = std::move(e.metadata);
    recorded.recorded_at = now;
    by_event_id_.emplace(recorded.event_id, log_.size());
    indexes.push_back(log_.size());
    log_.push_back(std::move(recorded));
  }

  AppendResult result;
  result.stream_id = stream;
  result.first_version = current + 1;
  result.last_version = static_cast<int64_t>(indexes.size());
  result.position = log_.back().position;
  return result;
}

absl::StatusOr<std::vector<RecordedEvent>> InMemoryEventStore::ReadStream(
    absl::string_view stream_id, Direction direction, int64_t from_version,
    int limit) {
  RETURN_IF_ERROR(ValidateStreamId(stream_id));
  RETURN_IF_ERROR(ValidateLimit(limit));
  absl::MutexLock lock(&mu_);
  const std::string stream(stream_id);
  if (deleted_.count(stream) > 0) {
    return eventstore_internal::DeletedStreamNotFound(stream_id);
  }
  auto it = streams_.find(stream);
  if (it == streams_.end()) return StreamNotFound(stream_id);
  const std::vector<size_t>& indexes = it->second;
  const int64_t version = static_cast<int64_t>(indexes.size());
  std::vector<RecordedEvent> out;
  if (direction == Direction::kForward) {
    for (int64_t v = std::max<int64_t>(from_version, 1);
         v <= version && static_cast<int>(out.size()) < limit; ++v) {
      out.push_back(log_[indexes[v - 1]]);
    }
  } else {
    for (int64_t v = std::min(from_version, version);
         v >= 1 && static_cast<int>(out.size()) < limit; --v) {
      out.push_back(log_[indexes[v - 1]]);
    }
  }
  return out;
}

absl::StatusOr<ReadAllResult> InMemoryEventStore::ReadAll(Position after,
                                                          int limit) {
  RETURN_IF_ERROR(ValidateLimit(limit));
  absl::MutexLock lock(&mu_);
  ReadAllResult result;
  result.next = after;
  for (auto it = FirstAfter(log_, after);
       it != log_.end() && static_cast<int>(result.events.size()) < limit;
       ++it) {
    result.events.push_back(*it);
  }
  if (!result.events.empty()) result.next = result.events.back().position;
  return result;
}

absl::StatusOr<ReadAllResult> InMemoryEventStore::ReadCategory(
    absl::string_view category, Position after, int limit) {
  RETURN_IF_ERROR(ValidateStreamId(category));
  RETURN_IF_ERROR(ValidateLimit(limit));
  absl::MutexLock lock(&mu_);
  ReadAllResult result;
  result.next = after;
  for (auto it = FirstAfter(log_, after);
       it != log_.end() && static_cast<int>(result.events.size()) < limit;
       ++it) {
    if (CategoryOf(it->stream_id) == category) result.events.push_back(*it);
  }
  if (!result.events.empty()) result.next = result.events.back().position;
  return result;
}

absl::StatusOr<StreamInfo> InMemoryEventStore::GetStreamInfo(
    absl::string_view stream_id) {
  RETURN_IF_ERROR(ValidateStreamId(stream_id));
  absl::MutexLock lock(&mu_);
  const std::string stream(stream_id);
  if (deleted_.count(stream) > 0) {
    return eventstore_internal::DeletedStreamNotFound(stream_id);
  }
  auto it = streams_.find(stream);
  if (it == streams_.end()) return StreamNotFound(stream_id);
  return StreamInfo{stream, static_cast<int64_t>(it->second.size())};
}

absl::Status InMemoryEventStore::DeleteStream(absl::string_view stream_id,
                                              ExpectedVersion expected) {
  RETURN_IF_ERROR(ValidateStreamId(stream_id));
  RETURN_IF_ERROR(eventstore_internal::ValidateExpectedVersion(expected));
  absl::MutexLock lock(&mu_);
  std::string stream(stream_id);
  auto it = streams_.find(stream);
  if (it == streams_.end() || deleted_.count(stream) > 0) {
    return StreamNotFound(stream_id);
  }
  const int64_t current = static_cast<int64_t>(it->second.size());
  if (!expected.IsSatisfiedBy(current)) {
    return VersionConflict(stream_id, expected, current);
  }
  // The stream's entry stays: its event ids keep answering retries.
  snapshots_.erase(stream);
  deleted_.insert(std::move(stream));
  return absl::OkStatus();
}

absl::Status InMemoryEventStore::SaveSnapshot(const Snapshot& snapshot) {
  RETURN_IF_ERROR(ValidateSnapshot(snapshot));
  absl::MutexLock lock(&mu_);
  if (deleted_.count(snapshot.stream_id) > 0) {
    return StreamDeleted(snapshot.stream_id);
  }
  auto it = snapshots_.find(snapshot.stream_id);
  if (it != snapshots_.end() &&
      it->second.stream_version > snapshot.stream_version) {
    return absl::OkStatus();
  }
  Snapshot stored = snapshot;
  stored.created_at = absl::Now();
  snapshots_.insert_or_assign(snapshot.stream_id, std::move(stored));
  return absl::OkStatus();
}

absl::StatusOr<Snapshot> InMemoryEventStore::LoadSnapshot(
    absl::string_view stream_id) {
  RETURN_IF_ERROR(ValidateStreamId(stream_id));
  absl::MutexLock lock(&mu_);
  auto it = snapshots_.find(std::string(stream_id));
  if (it == snapshots_.end() || deleted_.count(it->first) > 0) {
    return eventstore_internal::NoSnapshot(stream_id);
  }
  return it->second;
}

absl::StatusOr<Position> InMemoryEventStore::HeadPosition() {
  absl::MutexLock lock(&mu_);
  return log_.empty() ? Position::Start() : log_.back().position;
}

}  // namespace cqrs::eventstore

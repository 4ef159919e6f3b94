// An EventStore kept in process memory, for unit tests of other modules.
//
//   auto store = std::make_unique<InMemoryEventStore>();
//   store->Append("account-1", ExpectedVersion::NoStream(), {event});
//
// It follows the same contract as PostgresEventStore (the shared contract
// test suite runs against both): same validation, same errors, same
// idempotency rule. Each Append() counts as one transaction, so positions are
// (append number, global position). Nothing persists.
//
// Thread-safety: thread-safe.
#ifndef EVENTSTORE_IN_MEMORY_EVENT_STORE_H_
#define EVENTSTORE_IN_MEMORY_EVENT_STORE_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "eventstore/event_store.h"

namespace cqrs::eventstore {

class InMemoryEventStore : public EventStore {
 public:
  InMemoryEventStore() = default;

  absl::StatusOr<AppendResult> Append(absl::string_view stream_id,
                                      ExpectedVersion expected,
                                      std::vector<NewEvent> events) override;
  absl::StatusOr<std::vector<RecordedEvent>> ReadStream(
      absl::string_view stream_id, Direction direction, int64_t from_version,
      int limit) override;
  absl::StatusOr<ReadAllResult> ReadAll(Position after, int limit) override;
  absl::StatusOr<ReadAllResult> ReadCategory(absl::string_view category,
                                             Position after,
                                             int limit) override;
  absl::StatusOr<StreamInfo> GetStreamInfo(
      absl::string_view stream_id) override;
  absl::Status DeleteStream(absl::string_view stream_id,
                            ExpectedVersion expected) override;
  absl::Status SaveSnapshot(const Snapshot& snapshot) override;
  absl::StatusOr<Snapshot> LoadSnapshot(absl::string_view stream_id) override;
  absl::StatusOr<Position> HeadPosition() override;

 private:
  // Implementation-defined; filled in in_memory_event_store.cc.
  absl::Mutex mu_;
  std::vector<RecordedEvent> log_ ABSL_GUARDED_BY(mu_);  // commit order
  // stream id -> indexes into log_, in version order
  absl::flat_hash_map<std::string, std::vector<size_t>> streams_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, size_t> by_event_id_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> deleted_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Snapshot> snapshots_ ABSL_GUARDED_BY(mu_);
  uint64_t next_transaction_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace cqrs::eventstore

#endif  // EVENTSTORE_IN_MEMORY_EVENT_STORE_H_

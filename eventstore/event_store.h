// The event store: append-only streams of immutable events with per-stream
// versions and one global commit order.
//
//   std::unique_ptr<EventStore> store = ...;  // PostgresEventStore::Create
//   absl::StatusOr<AppendResult> r = store->Append(
//       "account-42", ExpectedVersion::Exactly(3), {NewEvent{...}});
//
// Versions: the first event of a stream has version 1, so a stream's version
// is the number of events in it; 0 means "no stream".
//
// Commit order: ReadAll() returns events in the order of Position, i.e.
// (transaction id, global position). A reader that resumes from the position
// of the last event it saw never skips an event, even one whose transaction
// committed after later-numbered events became visible (docs/event-store.md).
//
// Thread-safety: implementations are thread-safe; one instance is meant to be
// shared by all threads of a process.
#ifndef EVENTSTORE_EVENT_STORE_H_
#define EVENTSTORE_EVENT_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "eventstore/position.h"

namespace cqrs::eventstore {

// Input limits, enforced identically by every implementation; violating one
// is kInvalidArgument and writes nothing.
inline constexpr size_t kMaxStreamIdLength = 200;
inline constexpr size_t kMaxEventTypeLength = 200;
inline constexpr size_t kMaxEventsPerAppend = 10000;
inline constexpr size_t kMaxAppendBytes = 16 * 1024 * 1024;  // data + metadata
inline constexpr int kMaxReadLimit = 10000;

// An event to append.
struct NewEvent {
  // UUID (8-4-4-4-12 hex). Empty: the store generates one. The id makes an
  // append retryable: see EventStore::Append().
  std::string event_id;
  std::string event_type;
  int schema_version = 1;
  // A JSON object, nested at most kMaxJsonDepth (framework/json.h) deep.
  std::string data = "{}";
  // A JSON object. By convention "correlation_id" and "causation_id" plus any
  // free fields.
  std::string metadata = "{}";
};

// An event as stored.
struct RecordedEvent {
  std::string event_id;
  std::string stream_id;
  int64_t stream_version = 0;  // 1 for the first event of a stream
  Position position;           // place in the global commit order
  std::string event_type;
  int schema_version = 1;
  std::string data;      // JSON object
  std::string metadata;  // JSON object
  absl::Time recorded_at;
};

// The condition an append places on the stream's current version.
class ExpectedVersion {
 public:
  enum class Kind { kAny, kNoStream, kStreamExists, kExactly };

  static ExpectedVersion Any() { return ExpectedVersion(Kind::kAny, -1); }
  // The stream must have no events (version 0).
  static ExpectedVersion NoStream() {
    return ExpectedVersion(Kind::kNoStream, 0);
  }
  // The stream must have at least one event.
  static ExpectedVersion StreamExists() {
    return ExpectedVersion(Kind::kStreamExists, -1);
  }
  // The stream must be at exactly `version`; Exactly(0) is NoStream(). A
  // negative `version` is refused (kInvalidArgument) by every operation
  // that takes it.
  static ExpectedVersion Exactly(int64_t version) {
    return version == 0 ? NoStream() : ExpectedVersion(Kind::kExactly, version);
  }

  Kind kind() const { return kind_; }
  // The version for kExactly and kNoStream (0); -1 otherwise.
  int64_t version() const { return version_; }

  // True when a stream at `current` (0: no stream) satisfies this condition.
  bool IsSatisfiedBy(int64_t current) const;

  // "any", "no stream", "stream exists" or "exactly 7".
  std::string ToString() const;

 private:
  ExpectedVersion(Kind kind, int64_t version)
      : kind_(kind), version_(version) {}
  Kind kind_;
  int64_t version_;
};

struct AppendResult {
  std::string stream_id;
  int64_t first_version = 0;  // version of the first appended event
  int64_t last_version = 0;   // the stream's version after the append
  // Position of the last appended event: a reader that has processed this
  // position has seen the whole append.
  Position position;
  // True when the events were already stored by an earlier call with the
  // same event ids; this result is that call's result and nothing was written.
  bool already_stored = false;
};

enum class Direction { kForward, kBackward };

struct StreamInfo {
  std::string stream_id;
  int64_t version = 0;  // number of events, i.e. the last event's version
};

// A page of the global (or a category's) commit order.
struct ReadAllResult {
  std::vector<RecordedEvent> events;
  // Where to resume: the position of the last returned event, or the `after`
  // that was passed in when no events were returned.
  Position next;
};

struct Snapshot {
  std::string stream_id;
  int64_t stream_version = 0;  // the state includes events 1..stream_version
  int schema_version = 1;      // of the state's JSON layout
  std::string state;           // JSON object
  absl::Time created_at;       // set by the store on save
};

// True when `status` is the kNotFound of a read of a deleted stream (rather
// than of a stream that never had events).
bool IsDeletedStream(const absl::Status& status);

// If `status` is a version conflict from Append() or DeleteStream(), returns
// the stream's actual version at the time of the conflict (0: no stream).
std::optional<int64_t> ConflictActualVersion(const absl::Status& status);

// True when `status` says that the caller's own transaction must be rolled
// back and run again from its start: an append inside a transaction
// (PostgresEventStore::InTransaction) found that the stream's last event
// was committed by a transaction newer than the caller's, so appending to it
// would put the stream's versions out of order in the global order
// (docs/event-store.md). Nothing was written; retrying inside the same
// transaction fails the same way, while a new transaction succeeds. Such a
// status is kAborted without ConflictActualVersion().
bool MustRetryTransaction(const absl::Status& status);

// The category of a stream: the part of its id before the first '-'
// ("account-42" -> "account"); the whole id when it has no '-'.
absl::string_view CategoryOf(absl::string_view stream_id);

class EventStore {
 public:
  virtual ~EventStore() = default;

  // Appends `events` (1..kMaxEventsPerAppend) to `stream_id` atomically, all
  // or nothing, if the stream satisfies `expected`. Events get consecutive
  // versions after the stream's current one.
  //
  // Idempotent retry: when the first event's id is already stored, the call
  // is a retry. If every event id of the call is stored, in the same stream,
  // with consecutive versions and in the same order, the original result is
  // returned (already_stored = true) whatever `expected` says, and nothing is
  // written. Otherwise it is kAlreadyExists. An id that is already stored
  // anywhere but in the first event is also kAlreadyExists.
  //
  // Errors (nothing written in every case):
  //   kAborted: the stream does not satisfy `expected`; the actual version is
  //     in ConflictActualVersion(status). Reload the stream and decide again.
  //   kInvalidArgument: bad input (limits above, a negative Exactly(v),
  //     ids or types that are not UTF-8, bad UUID, data or metadata not a
  //     JSON object). Do not retry.
  //   kAlreadyExists: an event id is already used by another event.
  //   kFailedPrecondition: the stream was deleted.
  //   kUnavailable / kUnknown: the database was unreachable or the commit's
  //     outcome is unknown; retrying with the same event ids is safe.
  virtual absl::StatusOr<AppendResult> Append(absl::string_view stream_id,
                                              ExpectedVersion expected,
                                              std::vector<NewEvent> events) = 0;

  // Reads up to `limit` (1..kMaxReadLimit) events of one stream starting at
  // `from_version` inclusive, in `direction`. Forward from 1 reads from the
  // start; backward from INT64_MAX (or any version past the end) reads from
  // the last event. Returns an empty vector when the range holds no event.
  // Errors: kNotFound when the stream has no events or was deleted
  // (IsDeletedStream() tells which); kInvalidArgument for a bad stream id or
  // limit.
  virtual absl::StatusOr<std::vector<RecordedEvent>> ReadStream(
      absl::string_view stream_id, Direction direction, int64_t from_version,
      int limit) = 0;

  // Reads up to `limit` (1..kMaxReadLimit) events after `after` in commit
  // order, only events whose transaction is known to be ordered before every
  // transaction still running. Resume with result.next. Deleted streams'
  // events are included.
  virtual absl::StatusOr<ReadAllResult> ReadAll(Position after, int limit) = 0;

  // As ReadAll(), restricted to streams of one category (CategoryOf()).
  virtual absl::StatusOr<ReadAllResult> ReadCategory(absl::string_view category,
                                                     Position after,
                                                     int limit) = 0;

  // The stream's current version. kNotFound when it has no events or was
  // deleted.
  virtual absl::StatusOr<StreamInfo> GetStreamInfo(
      absl::string_view stream_id) = 0;

  // Soft delete: afterwards the stream reads as not found, appends to it fail
  // with kFailedPrecondition, its snapshot is gone (and SaveSnapshot refuses
  // it), and its events stay in the global order. A delete and an append
  // of the same stream never both succeed when the append would change the
  // version the delete checked. Errors: kNotFound when the stream has no
  // events or was already deleted; kAborted (with the actual version) when
  // `expected` is not met; kInvalidArgument for a negative Exactly(v).
  virtual absl::Status DeleteStream(absl::string_view stream_id,
                                    ExpectedVersion expected) = 0;

  // Saves `snapshot` as the stream's latest snapshot: it replaces a stored
  // snapshot of an older or the same version (a new state layout); one older
  // than the stored snapshot is ignored. The state is returned byte for byte
  // as given. Errors: kInvalidArgument for a bad stream id, a non-positive
  // version or a state that is not a JSON object (framework/json.h);
  // kFailedPrecondition when the stream was deleted.
  virtual absl::Status SaveSnapshot(const Snapshot& snapshot) = 0;

  // The stream's latest snapshot; kNotFound when there is none or the
  // stream was deleted.
  virtual absl::StatusOr<Snapshot> LoadSnapshot(
      absl::string_view stream_id) = 0;

  // The position of the newest event a ReadAll() can return now
  // (Position::Start() for an empty store). Useful to measure lag.
  virtual absl::StatusOr<Position> HeadPosition() = 0;

  // True when this store works inside a transaction its caller owns
  // (PostgresEventStore::InTransaction): an append is durable only once the
  // caller commits, and may still be rolled back. Callers must not treat
  // such an append as committed (for example by caching its result).
  virtual bool InCallersTransaction() const { return false; }
};

}  // namespace cqrs::eventstore

#endif  // EVENTSTORE_EVENT_STORE_H_

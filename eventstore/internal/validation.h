// Input checks and error constructors shared by every EventStore
// implementation, so that they accept and reject exactly the same input.
//
// Thread-safety: pure functions.
#ifndef EVENTSTORE_INTERNAL_VALIDATION_H_
#define EVENTSTORE_INTERNAL_VALIDATION_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "eventstore/event_store.h"

namespace cqrs::eventstore_internal {

// Status payload under which a version conflict carries the actual version.
inline constexpr char kActualVersionPayload[] =
    "type.cqrs/eventstore.ActualStreamVersion";
// Status payload that marks a DeletedStreamNotFound() status.
inline constexpr char kDeletedStreamPayload[] =
    "type.cqrs/eventstore.DeletedStream";
// Status payload that marks a RetryTransaction() status.
inline constexpr char kRetryTransactionPayload[] =
    "type.cqrs/eventstore.RetryTransaction";

// kInvalidArgument unless 1..200 bytes of valid UTF-8 without control
// characters. Also the rule for categories.
absl::Status ValidateStreamId(absl::string_view stream_id);

// kInvalidArgument for Exactly(v) with a negative v.
absl::Status ValidateExpectedVersion(
    const eventstore::ExpectedVersion& expected);

// kInvalidArgument unless 1..kMaxReadLimit.
absl::Status ValidateLimit(int limit);

// Checks every rule of an append and fills in missing event ids. Returns
// kInvalidArgument naming the first offending event.
absl::Status ValidateAppend(absl::string_view stream_id,
                            std::vector<eventstore::NewEvent>& events);

// kInvalidArgument unless the snapshot is well-formed.
absl::Status ValidateSnapshot(const eventstore::Snapshot& snapshot);

// The kAborted status for a stream at `actual` that does not satisfy
// `expected`; ConflictActualVersion() reads `actual` back.
absl::Status VersionConflict(absl::string_view stream_id,
                             const eventstore::ExpectedVersion& expected,
                             int64_t actual);

// The kAborted status MustRetryTransaction() recognizes.
absl::Status RetryTransaction(absl::string_view message);

absl::Status StreamNotFound(absl::string_view stream_id);
// The kNotFound for a deleted stream (IsDeletedStream() is true).
absl::Status DeletedStreamNotFound(absl::string_view stream_id);
absl::Status StreamDeleted(absl::string_view stream_id);
absl::Status NoSnapshot(absl::string_view stream_id);
absl::Status EventIdConflict(absl::string_view event_id);

}  // namespace cqrs::eventstore_internal

#endif  // EVENTSTORE_INTERNAL_VALIDATION_H_

// Two questions every layer asks of a failed absl::Status: will the same
// work succeed if it is simply tried again later, and may its text be shown
// to a client?
//
//   if (IsTransientError(status)) { back off; retry; }
//   if (IsDatabaseError(status)) { log status.message(); send a generic one; }
//
// Thread-safety: pure functions.
#ifndef FRAMEWORK_ERROR_CLASSES_H_
#define FRAMEWORK_ERROR_CLASSES_H_

#include "absl/status/status.h"

namespace cqrs {

// True for errors that go away by themselves when the same work is tried
// again later: a lost or in-doubt connection (kUnavailable, kUnknown), a
// concurrency conflict resolved by aborting a transaction (kAborted:
// deadlock, serialization failure, a version conflict, a transaction that
// must run again), a lock or statement timeout or a cancelled statement
// (kDeadlineExceeded, kCancelled), a full disk or connection table
// (kResourceExhausted). Everything else (bad input, a missing table, a bug)
// fails the same way every time. Background workers retry transient errors
// with backoff, without end; the others go to their error policy.
bool IsTransientError(const absl::Status& status);

// Marks `status` as made from a database error (StatusFromCurrentPgException
// in framework/pg_pool.h does): its message describes the database, not the
// request, and may quote internals. An OK status is returned unchanged.
absl::Status MarkDatabaseError(absl::Status status);

// True when `status` carries the mark of MarkDatabaseError(). The HTTP layer
// then sends a generic message instead of the status's text.
bool IsDatabaseError(const absl::Status& status);

}  // namespace cqrs

#endif  // FRAMEWORK_ERROR_CLASSES_H_

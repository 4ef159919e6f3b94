// The stored state of a schema's projections, as `projections status` and
// GET /projections show it: what any process can see in the database,
// whichever process runs them; and the operator's way to resume a projection
// (or process manager) that an error stopped.
//
//   ASSIGN_OR_RETURN(std::vector<StoredStatus> all,
//                    ReadProjectionStatuses(*pool, "bank", "bank"));
//   RETURN_IF_ERROR(ResumeProjection(*pool, "bank", "transfer_process"));
//
// Thread-safety: a plain function; thread-safe.
#ifndef PROJECTIONS_STATUS_H_
#define PROJECTIONS_STATUS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "framework/pg_pool.h"

namespace cqrs::projections {

struct StoredStatus {
  std::string name;
  int version = 0;
  int generation = 0;
  // "running" (an owner is applying events and is caught up),
  // "catching_up" (an owner is applying and more than a batch behind),
  // "rebuilding" (a rebuild is filling the next generation), "failed",
  // "outdated" (the stored read model is of another version than this
  // process's build, see code_version: rebuild it with this build, or let
  // a process of that version run it), "stopped" (no process owns it).
  std::string state;
  std::string position;    // checkpoint token ("xid.gp")
  int64_t lag_events = 0;  // events after the checkpoint (estimate)
  double lag_seconds = 0;  // age of the oldest unprocessed event
  std::string owner;       // "<application_name> pid <n>", or empty
  int64_t parked = 0;
  // The error that stopped it (state "failed"), or the last one that made
  // it park an event while events stay parked; empty when none (a replay
  // that leaves nothing parked clears it).
  std::string last_error;
  // When last_error happened (RFC 3339, UTC); empty with last_error.
  std::string last_error_at;
  // The version of this process's build, when the caller said
  // (ReadProjectionStatuses' code_versions); 0 otherwise. When it differs
  // from `version`, the state is "outdated".
  int code_version = 0;
  std::string failed_position;
  // The error of the owner's last attempt while it retries a batch without
  // end (a transient error: a lost session, a lock or statement timeout, a
  // deadlock...; see ProjectionRunnerOptions::retry_backoff); empty once a
  // batch succeeds, and when no process owns the projection. The state
  // stays "running" or "catching_up" meanwhile.
  std::string transient_error;
};

// Which fields StatusesJson() writes.
enum class StatusFields {
  // The contract of GET /projections: name, version, state, position,
  // lag_events, lag_seconds, parked, last_error with last_error_at, and
  // transient_error (each when there is one), code_version when known.
  kApi,
  // Also generation, owner and failed_position (`projections status
  // --json`).
  kAll,
};

// A JSON array with one object per status.
std::string StatusesJson(const std::vector<StoredStatus>& statuses,
                         StatusFields fields);
// The JSON object of one status.
std::string StatusJson(const StoredStatus& status, StatusFields fields);

// Reads every projection's row in `schema` with its lag against the event
// store in `event_schema`. `code_versions` (projection name -> version of
// the caller's build) marks projections of another stored version
// "outdated". The owner is a session of this database that holds the
// projection's ownership lock. Errors: kUnavailable (database),
// kFailedPrecondition when the projection tables are not migrated.
absl::StatusOr<std::vector<StoredStatus>> ReadProjectionStatuses(
    PgPool& pool, absl::string_view schema, absl::string_view event_schema,
    const std::map<std::string, int>& code_versions = {});

// Resumes the projection or process manager `name` that an error stopped
// (state "failed", ErrorPolicy::kStop), without a rebuild: clears its state,
// last error and failed position, so that it goes on from its checkpoint
// and so tries the event that failed again (fix its cause first). The
// process that owns it notices within its poll interval (1 s by default);
// without an owner, the next process to take it over goes on. Errors:
// kNotFound when `schema` has no projection `name`; kFailedPrecondition
// when it has not failed (nothing to resume); kUnavailable (database):
// retry; kInvalidArgument for a bad schema name.
absl::Status ResumeProjection(PgPool& pool, absl::string_view schema,
                              absl::string_view name);

}  // namespace cqrs::projections

#endif  // PROJECTIONS_STATUS_H_

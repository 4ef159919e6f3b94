// The stored state of a schema's projections, as `projections status` and
// GET /projections show it: what any process can see in the database,
// whichever process runs them.
//
//   ASSIGN_OR_RETURN(std::vector<StoredStatus> all,
//                    ReadProjectionStatuses(*pool, "bank", "bank"));
//
// Thread-safety: a plain function; thread-safe.
#ifndef PROJECTIONS_STATUS_H_
#define PROJECTIONS_STATUS_H_

#include <cstdint>
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
  // "stopped" (no process owns it).
  std::string state;
  std::string position;    // checkpoint token ("xid.gp")
  int64_t lag_events = 0;  // events after the checkpoint (estimate)
  double lag_seconds = 0;  // age of the oldest unprocessed event
  std::string owner;       // "<application_name> pid <n>", or empty
  int64_t parked = 0;
  std::string last_error;  // empty when none
  std::string failed_position;
};

// Which fields StatusesJson() writes.
enum class StatusFields {
  // The contract of GET /projections: name, version, state, position,
  // lag_events, lag_seconds, parked, last_error (when there is one).
  kApi,
  // Also generation, owner and failed_position (`projections status
  // --json`).
  kAll,
};

// A JSON array with one object per status.
std::string StatusesJson(const std::vector<StoredStatus>& statuses,
                         StatusFields fields);

// Reads every projection's row in `schema` with its lag against the event
// store in `event_schema`. Errors: kUnavailable (database), kFailedPrecondition
// when the projection tables are not migrated.
absl::StatusOr<std::vector<StoredStatus>> ReadProjectionStatuses(
    PgPool& pool, absl::string_view schema, absl::string_view event_schema);

}  // namespace cqrs::projections

#endif  // PROJECTIONS_STATUS_H_

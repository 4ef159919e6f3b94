// Dead letters of projections that park failing events (ErrorPolicy::kPark):
// listing them and replaying them once the handler is fixed.
//
//   ASSIGN_OR_RETURN(auto parked, ListParked(*pool, "bank", "", 100));
//   ASSIGN_OR_RETURN(ReplayResult r, ReplayParked(*pool, projection, "bank"));
//
// Thread-safety: plain functions; thread-safe. A replay and the projection's
// runner exclude each other through the projection's row lock.
#ifndef PROJECTIONS_PARKED_H_
#define PROJECTIONS_PARKED_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "framework/pg_pool.h"
#include "projections/projection.h"

namespace cqrs::projections {

struct ParkedEvent {
  std::string projection;
  std::string position;  // the event's position token
  std::string stream_id;
  int64_t stream_version = 0;
  std::string event_id;
  std::string event_type;
  std::string error;
  absl::Time parked_at;
};

// The parked events of the live generation, oldest first, of one projection
// (or all when `projection` is empty), at most `limit`. Errors: kUnavailable,
// kInvalidArgument for a bad schema name.
absl::StatusOr<std::vector<ParkedEvent>> ListParked(
    PgPool& pool, absl::string_view schema, absl::string_view projection,
    int limit);

struct ReplayResult {
  int64_t replayed = 0;      // applied and removed from the dead letters
  int64_t still_parked = 0;  // failed again, or behind one that did
};

// Applies `projection`'s parked events again, oldest first, each in a
// savepoint, in one transaction that holds the projection's row lock (the
// runner waits meanwhile). An event that fails again stays parked with its
// new error, and so do the later parked events of its stream (per-stream
// order). Streams with no parked event left are no longer held back. The
// projection's last error then describes what is still parked: cleared
// when nothing is, else the newest failure (unless the projection failed:
// that error stays until it is resumed or rebuilt).
absl::StatusOr<ReplayResult> ReplayParked(PgPool& pool,
                                          const Projection& projection,
                                          absl::string_view schema);

}  // namespace cqrs::projections

#endif  // PROJECTIONS_PARKED_H_

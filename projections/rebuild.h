// Rebuilds a projection without downtime: the new read model is built into
// the tables of the next generation while the live one keeps serving reads
// (and its runner keeps it current); once the new one has caught up, one
// short transaction applies the last events, points the views readers query
// at the new tables, moves the live checkpoint there and drops the old
// tables. Readers see the old model up to that commit and the new one after.
//
//   RebuildOptions options;
//   options.progress = [](const RebuildProgress& p) { ... };
//   absl::Status s = RebuildProjection(pool, store, AccountBalances(),
//                                      "bank", options);
//
// The new tables are filled UNLOGGED (no WAL per row) and made LOGGED just
// before the swap; after a server crash a rebuild starts over instead of
// resuming on tables the crash emptied.
//
// Interrupted (cancelled, or the process killed), a rebuild leaves the live
// read model untouched; running it again resumes where it stopped when the
// projection's version is the same, and starts over otherwise.
//
// Thread-safety: one rebuild per projection at a time, across processes (a
// second gets kAborted); different projections may rebuild concurrently.
#ifndef PROJECTIONS_REBUILD_H_
#define PROJECTIONS_REBUILD_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "eventstore/postgres_event_store.h"
#include "framework/pg_pool.h"
#include "projections/projection.h"

namespace cqrs::projections {

struct RebuildProgress {
  int64_t done = 0;   // events read so far (all types)
  int64_t total = 0;  // estimate of all events (the head's global position)
  double events_per_second = 0;
  absl::Duration eta = absl::ZeroDuration();
  bool swapped = false;  // the last report, after the swap
};

struct RebuildOptions {
  // Events per transaction (at most 10000). Larger batches touch each row
  // fewer times; each batch's transaction holds back the event store's
  // readers for as long as it writes (~50-100 ms at 10000).
  int batch_size = 10000;
  // Called after every batch and once after the swap.
  std::function<void(const RebuildProgress&)> progress;
  // Polled between batches; true stops the rebuild with kCancelled.
  std::function<bool()> cancelled;
};

// Rebuilds `projection` in `schema` (registering it first if it never ran).
// Returns kCancelled when cancelled (the live model untouched; run again to
// resume), kAborted when another rebuild of it is running, the handler's
// error (with the event's position) when an event fails, kUnavailable when
// the database is unreachable, kInvalidArgument for a process manager
// (ProjectionKind::kProcessManager: nothing to rebuild). `pool` and `store`
// are only used during the call.
absl::Status RebuildProjection(PgPool* pool,
                               eventstore::PostgresEventStore* store,
                               const Projection& projection,
                               absl::string_view schema,
                               const RebuildOptions& options);

}  // namespace cqrs::projections

#endif  // PROJECTIONS_REBUILD_H_

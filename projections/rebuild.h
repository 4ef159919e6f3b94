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
// No step holds a transaction id for longer than a write batch does (about
// `max_batch_duration`): the event store's readers, every live projection
// of the cluster included, only see events of transactions older than every
// running one. So the new tables are logged from the start (no SET LOGGED
// rewrite), deferred indexes are built with CREATE INDEX CONCURRENTLY, and
// the swap waits for readers of the views with a short lock timeout,
// retrying, instead of queuing behind them (docs/projections.md).
//
// Interrupted (cancelled, the process killed, the server restarted or
// crashed), a rebuild leaves the live read model untouched; running it
// again resumes where its last committed batch stopped when the
// projection's version is the same (the tables and the checkpoint commit
// together and survive a crash), and starts over otherwise.
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
  // Events read per page (at most 100000), and the most applied in one
  // transaction. Larger pages touch each row fewer times.
  int batch_size = 10000;
  // How long one write transaction should take: a page is applied in
  // several transactions when needed, their size adapting to what the last
  // one took. A transaction that writes holds back every reader of the
  // event store in the cluster (live projections of other read models
  // included) until it commits, so this bounds the lag a rebuild adds to
  // them. Longer is faster (fewer, larger writes: 20 ms rebuilt the bank's
  // account_transactions about twice as fast as 5 ms) but adds that much
  // to everyone's read-your-writes latency while it runs. Zero: one
  // transaction per page.
  absl::Duration max_batch_duration = absl::Milliseconds(5);
  // The share of the time the rebuild pauses between write transactions
  // (0 to 0.9), leaving the CPU to everything else: after a transaction
  // that took t, it waits t * share / (1 - share). What a rebuild costs the
  // live projections once no step holds a transaction id for long is CPU:
  // on 2 vCPUs, without pauses, read-your-writes p99 on another projection
  // doubled during a rebuild (as much as only reading the events cost);
  // with 0.5 it grew by 1.4x, and the rebuild took twice as long.
  double pause_share = 0.5;
  // How long the swap waits for a lock (the readers of the views, the live
  // runner's batch) before it gives up, lets readers in and tries again.
  // New readers of the views queue behind a waiting swap for at most this.
  absl::Duration swap_lock_timeout = absl::Milliseconds(100);
  // Called after every page and once after the swap.
  std::function<void(const RebuildProgress&)> progress;
  // Called after every write transaction of the new tables (several per
  // page): the rebuild moved, even when a fault ends it before the page.
  std::function<void()> batch_committed;
  // Polled between pages and between attempts to swap; true stops the
  // rebuild with kCancelled.
  std::function<bool()> cancelled;
};

// Rebuilds `projection` in `schema` (registering it first if it never ran).
// Returns kCancelled when cancelled (the live model untouched; run again to
// resume), kAborted when another rebuild of it is running, the handler's
// error (with the event's position) when an event fails, kUnavailable when
// the database is unreachable (run again to resume), kInvalidArgument for a
// process manager (ProjectionKind::kProcessManager: nothing to rebuild) or
// bad options. A swap that keeps meeting a long reader of the views is
// retried until the reader ends or `cancelled` says so. `pool` and `store`
// are only used during the call.
absl::Status RebuildProjection(PgPool* pool,
                               eventstore::PostgresEventStore* store,
                               const Projection& projection,
                               absl::string_view schema,
                               const RebuildOptions& options);

}  // namespace cqrs::projections

#endif  // PROJECTIONS_REBUILD_H_

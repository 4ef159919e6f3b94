// Pieces shared by the projection runner and the rebuild: table names per
// generation, the handler context, registration of a projection's row.
#ifndef PROJECTIONS_INTERNAL_COMMON_H_
#define PROJECTIONS_INTERNAL_COMMON_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "framework/pg_pool.h"
#include "projections/projection.h"

namespace cqrs::projections_internal {

// Advisory-lock key space (pg_*advisory_lock's two-int form: a class id and
// hashtext("<schema>.<name>")).
inline constexpr int kOwnershipLockClass = 0x70726f6a;  // "proj"
inline constexpr int kRegisterLockClass = kOwnershipLockClass + 1;
inline constexpr int kRebuildLockClass = kOwnershipLockClass + 2;
// Held by a process manager's batch transaction (pg_advisory_xact_lock):
// two runners never handle its events at once.
inline constexpr int kBatchLockClass = kOwnershipLockClass + 3;

// The version of the bookkeeping tables (`projections` component of
// schema_migrations) that this code reads and writes.
inline constexpr int kBookkeepingSchemaVersion = 3;

// "<schema>.<table>_g<generation>".
std::string PhysicalTable(absl::string_view schema, absl::string_view table,
                          int generation);

// The physical names of a projection's tables for one generation.
absl::flat_hash_map<std::string, std::string> TableMap(
    absl::string_view schema, const projections::Projection& p, int generation);

// Parses a xid8 column sent as text; throws pqxx::conversion_error.
uint64_t ParseXid(const pqxx::field& f);

// Creates the tables of `p` for `generation` inside `tx`, with their
// deferred indexes unless `deferred` is kLater.
enum class DeferredIndexes { kNow, kLater };
void CreateTables(pqxx::transaction_base& tx, absl::string_view schema,
                  const projections::Projection& p, int generation,
                  DeferredIndexes deferred);
// Creates the deferred indexes of `p`'s tables for `generation`.
void CreateDeferredIndexes(pqxx::transaction_base& tx, absl::string_view schema,
                           const projections::Projection& p, int generation);

// Points the views readers query at `generation` (creating them if needed).
void PointViews(pqxx::dbtransaction& tx, absl::string_view schema,
                const projections::Projection& p, int generation);

// Creates the projection's row and generation-1 tables and views unless the
// row exists. Safe to run from several processes at once.
absl::Status EnsureRegistered(PgPool& pool, absl::string_view schema,
                              const projections::Projection& p);

// Runs the handler on `events`; never throws. A libpqxx exception becomes
// StatusFromCurrentPgException() (so that IsTransientError() classifies it:
// a lock timeout is kDeadlineExceeded, a lost session kUnavailable), any
// other exception, std:: or not, kInternal (a failure of these events).
// What the handler passes to ProjectionContext::AfterCommit() is added to
// `after_commit` (dropped when null), for the caller to run once it has
// committed.
absl::Status ApplyHandler(
    const projections::Projection& p, pqxx::transaction_base& tx,
    const absl::flat_hash_map<std::string, std::string>& tables,
    projections::EventBatch events,
    std::vector<std::function<void()>>* after_commit = nullptr);

}  // namespace cqrs::projections_internal

#endif  // PROJECTIONS_INTERNAL_COMMON_H_

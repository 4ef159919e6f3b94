// A projection: a named, versioned read model kept in PostgreSQL tables and
// built from the event stream by a ProjectionRunner (projections/runner.h).
//
//   Projection p;
//   p.name = "account_balances";
//   p.event_types = {"AccountOpened", "MoneyDeposited"};
//   p.tables = {{"account_balances",
//                "CREATE TABLE {table} (id text PRIMARY KEY, balance
//                bigint)"}};
//   p.apply = [](ProjectionContext& ctx, const EventBatch& events) {...};
//
// The runner owns the transaction: it hands the handler a batch of events
// (in commit order, only of the declared types) and commits the handler's
// writes together with the projection's new checkpoint, so that each event
// takes effect exactly once. A handler should apply a batch with few
// statements (for example one INSERT ... SELECT FROM unnest(...)): rebuild
// speed depends on it.
//
// Tables: readers query `<schema>.<name>`, a view over the physical table of
// the live generation (`<schema>.<name>_g<N>`); a rebuild fills generation
// N+1 and swaps the views. A handler therefore always writes through
// ctx.Table(name), and the DDL names its table `{table}` (schema-qualified)
// and derives index names from `{table_name}` (the unqualified physical
// name): `CREATE INDEX {table_name}_owner_idx ON {table} (owner)`.
//
// Thread-safety: a Projection is immutable once given to a runner; `apply`
// may run on several threads at once (live runner and rebuild), each with
// its own context.
#ifndef PROJECTIONS_PROJECTION_H_
#define PROJECTIONS_PROJECTION_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "eventstore/event_store.h"

namespace pqxx {
class transaction_base;
}  // namespace pqxx

namespace cqrs::projections {

using EventBatch = absl::Span<const eventstore::RecordedEvent>;

struct ProjectionTable {
  ProjectionTable() = default;
  ProjectionTable(std::string name, std::string ddl,
                  std::vector<std::string> deferred_indexes = {})
      : name(std::move(name)),
        ddl(std::move(ddl)),
        deferred_indexes(std::move(deferred_indexes)) {}

  std::string name;  // a lower-case identifier; the view readers query
  // CREATE TABLE {table} ...; more statements allowed. {table_name} is the
  // unqualified name, for names of indexes and constraints.
  std::string ddl;
  // Indexes (and constraints) that the handler does not rely on, e.g.
  // "ALTER TABLE {table} ADD PRIMARY KEY (id, version)": a rebuild creates
  // them after filling the table, which is much faster than maintaining
  // them row by row. (Indexes that ON CONFLICT clauses need belong in ddl.)
  std::vector<std::string> deferred_indexes;
};

// What the runner does with an event that keeps failing.
enum class ErrorPolicy {
  // The projection stops at the event (state "failed", the error and its
  // position in the status) until it is fixed and restarted.
  kStop,
  // The event is parked in the dead-letter table and the projection goes
  // on. Later events of the same stream are parked behind it (per-stream
  // order) until the parked events are replayed.
  kPark,
};

// Handed to `apply`: the transaction and the physical table names of the
// generation being written.
class ProjectionContext {
 public:
  virtual ~ProjectionContext() = default;
  // The transaction the runner commits with the checkpoint. Do not commit or
  // abort it; throw or return an error to roll the batch back.
  virtual pqxx::transaction_base& tx() = 0;
  // The schema-qualified physical name of the projection's table `name`
  // (one of Projection::tables), to splice into SQL.
  virtual const std::string& Table(absl::string_view name) const = 0;
  // Runs `fn` on the runner's thread once the batch has committed (never
  // when it rolls back), e.g. to announce what the batch appended. Batches
  // applied outside the live runner (a rebuild, a replay of parked events)
  // do not call it: keep it to announcements a later batch would make
  // anyway.
  virtual void AfterCommit(std::function<void()> fn) = 0;
};

enum class ProjectionKind {
  // Builds read-model tables; can be rebuilt from the events.
  kReadModel,
  // Has side effects instead (a process manager, commands/process_manager.h):
  // needs no tables and is never rebuilt, since replaying it from the start
  // would mean nothing (its commands ran once already).
  kProcessManager,
};

struct Projection {
  std::string name;  // lower-case identifier, unique in the schema
  ProjectionKind kind = ProjectionKind::kReadModel;
  // Bump when the handler or the tables change meaning: the new code then
  // needs `projections rebuild` (docs/projections.md).
  int version = 1;
  // Only these event types reach `apply`; others are skipped.
  std::vector<std::string> event_types;
  std::vector<ProjectionTable> tables;
  // Applies a batch (never empty). An error, or an exception, rolls the
  // batch back; the runner retries and then follows `on_error`.
  std::function<absl::Status(ProjectionContext&, EventBatch)> apply;
  ErrorPolicy on_error = ErrorPolicy::kStop;
  // Attempts of a failing batch before `on_error` applies to its first
  // failing event.
  int max_attempts = 5;
  // Events per batch (one transaction); 0: the runner's batch_size. Smaller
  // batches keep transactions short, which matters when the handler holds
  // locks others wait for (a process manager appending to streams).
  int batch_size = 0;
};

// kInvalidArgument unless `p` has a valid name, version >= 1, at least one
// event type and table, valid table names, `{table}` in every DDL and an
// `apply` function.
absl::Status ValidateProjection(const Projection& p);

}  // namespace cqrs::projections

#endif  // PROJECTIONS_PROJECTION_H_

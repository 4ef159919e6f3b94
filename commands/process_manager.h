// Process managers: react to events by dispatching commands, on the
// projections' machinery (checkpoint, one owner process, error policy,
// status; projections/runner.h), so a process manager survives crashes and
// runs in exactly one process.
//
//   ProcessManager pm;
//   pm.name = "transfer_process";
//   pm.event_types = {"TransferRequested"};
//   pm.handle = [](ProcessContext& ctx, const RecordedEvent& e) {
//     return ctx.Once("debit", [&](const CommandMetadata& meta) {
//       return accounts.Execute(ctx.store(), from, meta, {}, Debit(amount))
//           .status();
//     });
//   };
//   RETURN_IF_ERROR(MigrateProcessManagers(*pool, "bank"));
//   runner = ProjectionRunner::Create(pool, store, {AsProjection(pm, store,
//                                     "bank"), ...}, options);
//
// Exactly once: the runner hands the process manager a batch of events in
// one transaction, and every command it dispatches appends through that
// transaction (ctx.store()), so the commands' events commit together with
// the checkpoint or not at all. Each command also has an id derived from
// the triggering event ("<process>:<event id>:<step>") and an idempotency
// record (`<schema>.process_commands`) written in the same transaction:
// a re-delivered event (replayed from the dead letters, or a checkpoint
// moved back by hand) finds the record and the step is skipped.
//
// The commands' events carry that command id, the triggering event's
// correlation id, the triggering event's id as causation id, the process
// as actor ("process:<name>", ProcessActor()) and, as on_behalf_of, the
// actor the chain started from: the triggering event's on_behalf_of when it
// has one (it was itself appended by a process manager), else its actor
// (an API key's id, or "anonymous"); nothing when the trigger names no
// actor (stored by an older build, or appended outside any command). See
// commands/command_metadata.h. Once the
// batch commits they are announced through the store's NotifyCommitted()
// (its events_appended counter, and its notifications unless they are sent
// in the transaction).
//
// Aggregates used by a process manager may be the ones the HTTP side uses:
// a command inside the batch's transaction neither fills the state cache
// nor takes the in-process per-stream lock (commands/aggregate.h). Every
// append locks its stream until the batch commits, and the batch's
// transaction can be older than another writer's commit to a stream it
// appends to later; that append then refuses (MustRetryTransaction) rather
// than put the stream out of order, and the runner runs the batch again,
// one event per transaction (projections/runner.h).
//
// Thread-safety: ProcessContext belongs to one batch on one thread.
#ifndef COMMANDS_PROCESS_MANAGER_H_
#define COMMANDS_PROCESS_MANAGER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "commands/command_metadata.h"
#include "eventstore/event_store.h"
#include "eventstore/postgres_event_store.h"
#include "framework/pg_pool.h"
#include "projections/projection.h"

namespace cqrs::commands {

class ProcessContext {
 public:
  virtual ~ProcessContext() = default;

  // The event store inside the batch's transaction: appends commit with the
  // checkpoint. Reads see what the transaction has written.
  virtual eventstore::EventStore& store() = 0;
  // The event being handled.
  virtual const eventstore::RecordedEvent& event() const = 0;

  // The metadata of command `step` caused by the current event.
  virtual CommandMetadata Metadata(absl::string_view step) const = 0;

  // Runs `command` with Metadata(step) unless an earlier delivery of this
  // event ran `step` already. Returns true when it ran now, false when it
  // was skipped, or the command's error (which rolls the batch back, and the
  // record with it).
  virtual absl::StatusOr<bool> Once(
      absl::string_view step,
      const std::function<absl::Status(const CommandMetadata&)>& command) = 0;
};

struct ProcessManager {
  std::string name;  // lower-case identifier, unique among the projections
  int version = 1;
  std::vector<std::string> event_types;
  // Reacts to one event (in commit order). An error rolls the batch back;
  // the runner retries it and then applies `on_error`.
  std::function<absl::Status(ProcessContext&, const eventstore::RecordedEvent&)>
      handle;
  projections::ErrorPolicy on_error = projections::ErrorPolicy::kStop;
  int max_attempts = 5;
  // Events per transaction: small, since the transaction holds the streams
  // it appends to until it commits.
  int batch_size = 20;
};

// The actor in the metadata of the commands of process manager `name`:
// "process:<name>". The colon keeps it apart from API key ids (12 hex
// digits) and from "anonymous".
inline constexpr absl::string_view kProcessActorPrefix = "process:";
std::string ProcessActor(absl::string_view process_name);

// Creates or upgrades `<schema>.process_commands` (idempotent).
absl::Status MigrateProcessManagers(PgPool& pool, absl::string_view schema);

// The projection (ProjectionKind::kProcessManager) that runs `pm`; give it
// to a ProjectionRunner. `store` must outlive the runner; `schema` is the
// runner's schema (where MigrateProcessManagers ran).
projections::Projection AsProjection(ProcessManager pm,
                                     eventstore::PostgresEventStore* store,
                                     std::string schema);

}  // namespace cqrs::commands

#endif  // COMMANDS_PROCESS_MANAGER_H_

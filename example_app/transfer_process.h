// The process manager that runs transfers (example_app/transfer.h). On
// TransferRequested it moves the money in one step, in the batch's
// transaction: it debits the source, then credits the target and completes
// the transfer, or, when the target refuses (account_not_found,
// account_closed, currency_mismatch, balance_limit_exceeded), refunds the
// source and fails the transfer; when the source refuses the debit
// (insufficient_funds, account_closed, account_not_found) it fails the
// transfer and moves nothing. The account events and the transfer's events
// commit together with the process manager's checkpoint
// (commands/process_manager.h).
//
// Why one transaction: closing an account needs a zero balance, and a
// debit committed on its own can leave the source at zero while the credit
// is still to come; a close in that window would make the refund land in a
// closed account, where nothing can take it out. With debit and refund in
// one commit there is no such window: a concurrent close decides on the
// source before the debit or after the refund (the optimistic version
// check makes it re-decide on the committed state).
//
// On TransferDebited it finishes transfers an older build debited in a
// transaction of its own (still pending and debited): credit and complete,
// or refund and fail. The TransferDebited this build records commits with
// the outcome, so it finds the transfer settled and does nothing.
//
//   runner_projections.push_back(cqrs::commands::AsProjection(
//       bank::TransferProcess(), store, "bank"));
//
// Thread-safety: the returned value is immutable.
#ifndef EXAMPLE_APP_TRANSFER_PROCESS_H_
#define EXAMPLE_APP_TRANSFER_PROCESS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "commands/process_manager.h"
#include "eventstore/postgres_event_store.h"
#include "framework/metrics.h"
#include "framework/pg_pool.h"
#include "projections/projection.h"

namespace bank {

// Named "transfer_process".
cqrs::commands::ProcessManager TransferProcess();

// The event store the process manager appends through: its appends notify
// inside their transaction, so that the projections hear of a transfer's
// progress when the process manager's batch commits. `events_appended`
// (may be null; must outlive the store) counts them, as the command side's
// store counts its own.
absl::StatusOr<std::unique_ptr<cqrs::eventstore::PostgresEventStore>>
NewProcessStore(cqrs::PgPool* pool, const std::string& schema,
                cqrs::Counter* events_appended = nullptr);

// What a bank runner runs: the read models (BankProjections()) and the
// transfer process manager. `process_store` must outlive the runner.
std::vector<cqrs::projections::Projection> BankRunnerProjections(
    cqrs::eventstore::PostgresEventStore* process_store,
    const std::string& schema);

}  // namespace bank

#endif  // EXAMPLE_APP_TRANSFER_PROCESS_H_

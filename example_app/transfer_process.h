// The process manager that runs transfers (example_app/transfer.h): on
// TransferRequested it debits the source account and records the debit (or
// fails the transfer: insufficient_funds, account_closed,
// account_not_found); on TransferDebited it credits the target and
// completes the transfer, or refunds the source and fails it
// (account_not_found, account_closed, currency_mismatch). Each step's
// account event and transfer events commit together with the process
// manager's checkpoint (commands/process_manager.h).
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
#include "framework/pg_pool.h"
#include "projections/projection.h"

namespace bank {

// Named "transfer_process".
cqrs::commands::ProcessManager TransferProcess();

// The event store the process manager appends through: its appends notify
// inside their transaction, so that the projections hear of a transfer's
// progress when the process manager's batch commits.
absl::StatusOr<std::unique_ptr<cqrs::eventstore::PostgresEventStore>>
NewProcessStore(cqrs::PgPool* pool, const std::string& schema);

// What a bank runner runs: the read models (BankProjections()) and the
// transfer process manager. `process_store` must outlive the runner.
std::vector<cqrs::projections::Projection> BankRunnerProjections(
    cqrs::eventstore::PostgresEventStore* process_store,
    const std::string& schema);

}  // namespace bank

#endif  // EXAMPLE_APP_TRANSFER_PROCESS_H_

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
//   app.AddProcessManager(bank::TransferProcess());
//
// Thread-safety: the returned value is immutable.
#ifndef EXAMPLE_APP_TRANSFER_PROCESS_H_
#define EXAMPLE_APP_TRANSFER_PROCESS_H_

#include <string>

#include "commands/process_manager.h"

namespace bank {

// Named "transfer_process".
cqrs::commands::ProcessManager TransferProcess();

}  // namespace bank

#endif  // EXAMPLE_APP_TRANSFER_PROCESS_H_

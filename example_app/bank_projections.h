// The bank's read models, as projections (projections/projection.h):
//
//   account_balances      one row per account: owner, currency, balance,
//                         status ("open"/"closed"), version
//   account_transactions  one row per movement and lifecycle event of an
//                         account, keyed (account_id, version) for cursor
//                         pagination: type, amount, balance_after,
//                         transfer_id, at, and who appended the event:
//                         actor and on_behalf_of from its metadata
//                         (commands/command_metadata.h), NULL when absent
//                         (version 2; version 1 had neither)
//   bank_stats            counters by key: "accounts", "open_accounts",
//                         "balance:<currency>", "transfers:<state>"
//   transfers             one row per transfer: from, to, amount, currency,
//                         status ("pending"/"completed"/"failed"), refunded,
//                         reason
//
//   std::vector<Projection> all = bank::BankProjections();
//
// Each handler applies a batch with a few set-based statements (arrays
// through unnest), which is what makes rebuilds fast.
//
// Thread-safety: the returned projections are immutable and thread-safe.
#ifndef EXAMPLE_APP_BANK_PROJECTIONS_H_
#define EXAMPLE_APP_BANK_PROJECTIONS_H_

#include <vector>

#include "projections/projection.h"

namespace bank {

cqrs::projections::Projection AccountBalancesProjection();
cqrs::projections::Projection AccountTransactionsProjection();
cqrs::projections::Projection BankStatsProjection();
cqrs::projections::Projection TransfersProjection();

// All four, in that order. (The transfer process manager runs beside them:
// example_app/transfer_process.h.)
std::vector<cqrs::projections::Projection> BankProjections();

}  // namespace bank

#endif  // EXAMPLE_APP_BANK_PROJECTIONS_H_

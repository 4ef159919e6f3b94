// The bank's account aggregate: events, state and decisions.
//
//   const AccountType& accounts = AccountAggregate();
//   accounts.Execute(store, id, meta, opts, DecideDeposit(500));
//
// Money is int64 minor units; every amount is 1..kMaxAmount and balances
// never overflow (a deposit that would pass INT64_MAX is refused with
// balance_limit_exceeded).
//
// Thread-safety: everything here is immutable after first use and safe to
// share.
#ifndef EXAMPLE_APP_ACCOUNT_H_
#define EXAMPLE_APP_ACCOUNT_H_

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "commands/aggregate.h"
#include "framework/event_registry.h"
#include "framework/json_shape.h"

namespace bank {

inline constexpr int64_t kMaxAmount = 1000000000000000;  // 10^15

// Each event: its stored name and its JSON (example_app/bank_events.h).
// The bounds are the commands' (so every stored event meets them) and reach
// the published schema (GET /asyncapi.json). Ids and currencies are
// described rather than matched with a Pattern: a std::regex per field
// would slow every aggregate load, and the commands check them already.
struct AccountOpened {
  static constexpr char kName[] = "AccountOpened";
  std::string owner;
  std::string currency;
  static auto Json() {
    return cqrs::json::Shape<AccountOpened>()
        .Field("owner", &AccountOpened::owner, cqrs::json::Length(1, 200))
        .Field("currency", &AccountOpened::currency, cqrs::json::Length(3, 3),
               cqrs::json::Description("three upper-case letters, e.g. EUR"));
  }
};
// An amount in minor units (cents), 1..kMaxAmount.
template <typename T>
cqrs::json::Shape<T> AmountShape() {
  return cqrs::json::Shape<T>().Field(
      "amount", &T::amount, cqrs::json::Range(1, kMaxAmount),
      cqrs::json::Description("minor units (cents)"));
}
struct MoneyDeposited {
  static constexpr char kName[] = "MoneyDeposited";
  int64_t amount = 0;
  static auto Json() { return AmountShape<MoneyDeposited>(); }
};
struct MoneyWithdrawn {
  static constexpr char kName[] = "MoneyWithdrawn";
  int64_t amount = 0;
  static auto Json() { return AmountShape<MoneyWithdrawn>(); }
};
struct AccountClosed {
  static constexpr char kName[] = "AccountClosed";
  static auto Json() { return cqrs::json::Shape<AccountClosed>(); }
};
// Money moved by a transfer (example_app/transfer.h): out of the source,
// into the target, or back into the source when the target refused it. All
// three are {"transfer_id", "amount"}.
template <typename T>
cqrs::json::Shape<T> TransferMoveShape() {
  return cqrs::json::Shape<T>()
      .Field("transfer_id", &T::transfer_id, cqrs::json::Length(1, 64),
             cqrs::json::Description("the transfer (GET /transfers/{id})"))
      .Field("amount", &T::amount, cqrs::json::Range(1, kMaxAmount),
             cqrs::json::Description("minor units (cents)"));
}
struct TransferDebit {
  static constexpr char kName[] = "AccountDebitedForTransfer";
  std::string transfer_id;
  int64_t amount = 0;
  static auto Json() { return TransferMoveShape<TransferDebit>(); }
};
struct TransferCredit {
  static constexpr char kName[] = "AccountCreditedForTransfer";
  std::string transfer_id;
  int64_t amount = 0;
  static auto Json() { return TransferMoveShape<TransferCredit>(); }
};
struct TransferRefund {
  static constexpr char kName[] = "AccountRefundedForTransfer";
  std::string transfer_id;
  int64_t amount = 0;
  static auto Json() { return TransferMoveShape<TransferRefund>(); }
};

using AccountEvent =
    std::variant<AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed,
                 TransferDebit, TransferCredit, TransferRefund>;

struct Account {
  bool exists = false;  // not in snapshots: a snapshot is of one that does
  std::string owner;
  std::string currency;
  int64_t balance = 0;
  bool closed = false;
  // The snapshot's JSON.
  static auto Json() {
    return cqrs::json::Shape<Account>()
        .Field("owner", &Account::owner)
        .Field("currency", &Account::currency)
        .Field("balance", &Account::balance)
        .Field("closed", &Account::closed);
  }
};

using AccountType = cqrs::commands::AggregateType<Account, AccountEvent>;
using Decision = absl::StatusOr<std::vector<AccountEvent>>;

// The registry of account events (all schema version 1), by their kName
// and JSON shape.
const cqrs::EventRegistry<AccountEvent>& AccountEvents();
// Their type names, in the variant's order.
std::vector<std::string> AccountEventTypes();

// The account aggregate type: category "account", snapshots every 100
// events.
AccountType& AccountAggregate();
// The same type without the in-process cache and per-account queue, for
// the transfer process manager (see commands/process_manager.h).
AccountType& AccountAggregateForProcesses();

// The signed change of the balance an event makes (0 for lifecycle events).
int64_t BalanceDelta(const AccountEvent& event);

// Decisions. Errors carry the contract's codes: account_exists (409),
// account_not_found (404), account_closed (422), insufficient_funds (422),
// account_not_empty (422), balance_limit_exceeded (422).
AccountType::Decide DecideOpen(std::string owner, std::string currency);
AccountType::Decide DecideDeposit(int64_t amount);
AccountType::Decide DecideWithdraw(int64_t amount);
AccountType::Decide DecideClose();
// Transfers: the debit fails with account_not_found, account_closed or
// insufficient_funds; the credit with account_not_found, account_closed,
// currency_mismatch or balance_limit_exceeded.
AccountType::Decide DecideTransferDebit(std::string transfer_id,
                                        int64_t amount);
AccountType::Decide DecideTransferCredit(std::string transfer_id,
                                         int64_t amount, std::string currency);
// The refund of a debit the target refused goes back to the source; it
// fails only with account_not_found. The transfer process refunds in the
// transaction of the debit (example_app/transfer_process.h), so the source
// is open: it was open for the debit, and no close can commit between the
// two. Only a transfer an older build debited in a transaction of its own
// can find its source closed; the refund still goes there, so the money
// stays in the ledger rather than vanishing (no event reopens an account).
AccountType::Decide DecideTransferRefund(std::string transfer_id,
                                         int64_t amount);

// Input checks shared by routes: kInvalidArgument (invalid_request).
absl::Status ValidateAccountId(absl::string_view id);
absl::Status ValidateCurrency(absl::string_view currency);

}  // namespace bank

#endif  // EXAMPLE_APP_ACCOUNT_H_

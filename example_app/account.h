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

namespace bank {

inline constexpr int64_t kMaxAmount = 1000000000000000;  // 10^15

struct AccountOpened {
  std::string owner;
  std::string currency;
};
struct MoneyDeposited {
  int64_t amount = 0;
};
struct MoneyWithdrawn {
  int64_t amount = 0;
};
struct AccountClosed {};

using AccountEvent =
    std::variant<AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed>;

struct Account {
  bool exists = false;
  std::string owner;
  std::string currency;
  int64_t balance = 0;
  bool closed = false;
};

using AccountType = cqrs::commands::AggregateType<Account, AccountEvent>;
using Decision = absl::StatusOr<std::vector<AccountEvent>>;

// The registry of account events ("AccountOpened", "MoneyDeposited",
// "MoneyWithdrawn", "AccountClosed", all schema version 1).
const cqrs::EventRegistry<AccountEvent>& AccountEvents();

// The account aggregate type: category "account", snapshots every 100
// events.
AccountType& AccountAggregate();

// Decisions. Errors carry the contract's codes: account_exists (409),
// account_not_found (404), account_closed (422), insufficient_funds (422),
// account_not_empty (422), balance_limit_exceeded (422).
AccountType::Decide DecideOpen(std::string owner, std::string currency);
AccountType::Decide DecideDeposit(int64_t amount);
AccountType::Decide DecideWithdraw(int64_t amount);
AccountType::Decide DecideClose();

// Input checks shared by routes: kInvalidArgument (invalid_request).
absl::Status ValidateAccountId(absl::string_view id);
absl::Status ValidateCurrency(absl::string_view currency);

}  // namespace bank

#endif  // EXAMPLE_APP_ACCOUNT_H_

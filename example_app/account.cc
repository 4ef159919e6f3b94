#include "example_app/account.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "example_app/bank_events.h"
#include "framework/error_code.h"
#include "framework/http/status_mapping.h"
#include "framework/json_shape.h"

namespace bank {
namespace {

using cqrs::http::WithErrorCode;

absl::Status Coded(absl::Status status, absl::string_view code) {
  return WithErrorCode(std::move(status), code);
}

void Apply(Account& a, const AccountEvent& event) {
  if (const auto* e = std::get_if<AccountOpened>(&event)) {
    a.exists = true;
    a.owner = e->owner;
    a.currency = e->currency;
  } else if (std::holds_alternative<AccountClosed>(event)) {
    a.closed = true;
  }
  a.balance += BalanceDelta(event);
}

AccountType::Options AccountOptions() {
  AccountType::Options o;
  o.category = "account";
  o.registry = &AccountEvents();
  o.apply = Apply;
  o.snapshots.every = 100;
  o.snapshots.schema_version = 1;
  o.snapshots.to_json = [](const Account& a) { return cqrs::json::Encode(a); };
  o.snapshots.from_json = [](absl::string_view json) {
    absl::StatusOr<Account> a = cqrs::json::Decode<Account>(json);
    if (a.ok()) a->exists = true;
    return a;
  };
  return o;
}

absl::Status NotFound() {
  return Coded(absl::NotFoundError("account not found"), "account_not_found");
}
absl::Status Closed() {
  return Coded(absl::FailedPreconditionError("account is closed"),
               "account_closed");
}

}  // namespace

const cqrs::EventRegistry<AccountEvent>& AccountEvents() {
  return EventRegistryOf<AccountEvent>();
}

std::vector<std::string> AccountEventTypes() {
  return EventNamesOf<AccountEvent>();
}

int64_t BalanceDelta(const AccountEvent& event) {
  if (auto* e = std::get_if<MoneyDeposited>(&event)) return e->amount;
  if (auto* e = std::get_if<MoneyWithdrawn>(&event)) return -e->amount;
  if (auto* e = std::get_if<TransferDebit>(&event)) return -e->amount;
  if (auto* e = std::get_if<TransferCredit>(&event)) return e->amount;
  if (auto* e = std::get_if<TransferRefund>(&event)) return e->amount;
  return 0;
}

AccountType& AccountAggregate() {
  static AccountType* type = new AccountType(AccountOptions());
  return *type;
}

AccountType& AccountAggregateForProcesses() {
  static AccountType* type = [] {
    AccountType::Options o = AccountOptions();
    o.cache_capacity = 0;
    o.serialize_in_process = false;
    return new AccountType(std::move(o));
  }();
  return *type;
}

AccountType::Decide DecideOpen(std::string owner, std::string currency) {
  return [owner = std::move(owner), currency = std::move(currency)](
             const Account& a, int64_t) -> Decision {
    if (a.exists) {
      return Coded(absl::AlreadyExistsError("account already exists"),
                   "account_exists");
    }
    return std::vector<AccountEvent>{AccountOpened{owner, currency}};
  };
}

AccountType::Decide DecideDeposit(int64_t amount) {
  return [amount](const Account& a, int64_t) -> Decision {
    if (!a.exists) return NotFound();
    if (a.closed) return Closed();
    if (a.balance > std::numeric_limits<int64_t>::max() - amount) {
      return Coded(absl::FailedPreconditionError(
                       "the balance would exceed the largest representable "
                       "amount"),
                   "balance_limit_exceeded");
    }
    return std::vector<AccountEvent>{MoneyDeposited{amount}};
  };
}

AccountType::Decide DecideWithdraw(int64_t amount) {
  return [amount](const Account& a, int64_t) -> Decision {
    if (!a.exists) return NotFound();
    if (a.closed) return Closed();
    if (a.balance < amount) {
      return Coded(absl::FailedPreconditionError(absl::StrCat(
                       "balance ", a.balance, " is less than ", amount)),
                   "insufficient_funds");
    }
    return std::vector<AccountEvent>{MoneyWithdrawn{amount}};
  };
}

AccountType::Decide DecideClose() {
  return [](const Account& a, int64_t) -> Decision {
    if (!a.exists) return NotFound();
    if (a.closed) return Closed();
    if (a.balance != 0) {
      return Coded(absl::FailedPreconditionError(absl::StrCat(
                       "balance is ", a.balance, "; it must be 0 to close")),
                   "account_not_empty");
    }
    return std::vector<AccountEvent>{AccountClosed{}};
  };
}

AccountType::Decide DecideTransferDebit(std::string transfer_id,
                                        int64_t amount) {
  return [transfer_id = std::move(transfer_id), amount](const Account& a,
                                                        int64_t) -> Decision {
    if (!a.exists) return NotFound();
    if (a.closed) return Closed();
    if (a.balance < amount) {
      return Coded(absl::FailedPreconditionError(absl::StrCat(
                       "balance ", a.balance, " is less than ", amount)),
                   "insufficient_funds");
    }
    return std::vector<AccountEvent>{TransferDebit{transfer_id, amount}};
  };
}

AccountType::Decide DecideTransferCredit(std::string transfer_id,
                                         int64_t amount, std::string currency) {
  return [transfer_id = std::move(transfer_id), amount,
          currency = std::move(currency)](const Account& a,
                                          int64_t) -> Decision {
    if (!a.exists) return NotFound();
    if (a.closed) return Closed();
    if (a.currency != currency) {
      return Coded(absl::FailedPreconditionError(absl::StrCat(
                       "the account holds ", a.currency, ", not ", currency)),
                   "currency_mismatch");
    }
    if (a.balance > std::numeric_limits<int64_t>::max() - amount) {
      return Coded(absl::FailedPreconditionError(
                       "the balance would exceed the largest representable "
                       "amount"),
                   "balance_limit_exceeded");
    }
    return std::vector<AccountEvent>{TransferCredit{transfer_id, amount}};
  };
}

AccountType::Decide DecideTransferRefund(std::string transfer_id,
                                         int64_t amount) {
  return [transfer_id = std::move(transfer_id), amount](const Account& a,
                                                        int64_t) -> Decision {
    if (!a.exists) return NotFound();
    return std::vector<AccountEvent>{TransferRefund{transfer_id, amount}};
  };
}

absl::Status ValidateAccountId(absl::string_view id) {
  bool ok = !id.empty() && id.size() <= 64;
  for (char c : id) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                (c >= '0' && c <= '9') || c == '_' || c == '-');
  }
  if (!ok) {
    return cqrs::InvalidRequest(
        "account id must be 1 to 64 characters of [A-Za-z0-9_-]");
  }
  return absl::OkStatus();
}

absl::Status ValidateCurrency(absl::string_view currency) {
  bool ok = currency.size() == 3;
  for (char c : currency) ok = ok && c >= 'A' && c <= 'Z';
  if (!ok) {
    return cqrs::InvalidRequest(
        "currency must be three upper-case letters, e.g. EUR");
  }
  return absl::OkStatus();
}

}  // namespace bank

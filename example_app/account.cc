#include "example_app/account.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "framework/http/json_body.h"
#include "framework/http/status_mapping.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace bank {
namespace {

using cqrs::http::WithErrorCode;

absl::Status Coded(absl::Status status, absl::string_view code) {
  return WithErrorCode(std::move(status), code);
}

// Writes a JSON object with the given members.
template <typename Fn>
std::string JsonObject(Fn&& members) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  members(w);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

absl::StatusOr<rapidjson::Document> Parse(absl::string_view json) {
  rapidjson::Document doc;
  absl::Status parsed = cqrs::http::ParseJsonBody(json, &doc);
  if (!parsed.ok()) return parsed;
  return doc;
}

absl::StatusOr<int64_t> AmountOf(absl::string_view json) {
  absl::StatusOr<rapidjson::Document> doc = Parse(json);
  if (!doc.ok()) return doc.status();
  return cqrs::http::RequiredInt64(*doc, "amount");
}

// {"transfer_id": ..., "amount": ...}: the body of the transfer events.
template <typename Event>
cqrs::EventCodec<Event> TransferCodec(std::string name) {
  cqrs::EventCodec<Event> codec;
  codec.name = std::move(name);
  codec.to_json = [](const Event& e) {
    return JsonObject([&](auto& w) {
      w.Key("transfer_id");
      w.String(e.transfer_id.data(), e.transfer_id.size());
      w.Key("amount");
      w.Int64(e.amount);
    });
  };
  codec.from_json = [](absl::string_view json) -> absl::StatusOr<Event> {
    absl::StatusOr<rapidjson::Document> doc = Parse(json);
    if (!doc.ok()) return doc.status();
    absl::StatusOr<std::string> id =
        cqrs::http::RequiredString(*doc, "transfer_id");
    if (!id.ok()) return id.status();
    absl::StatusOr<int64_t> amount = cqrs::http::RequiredInt64(*doc, "amount");
    if (!amount.ok()) return amount.status();
    return Event{*std::move(id), *amount};
  };
  return codec;
}

std::string AmountJson(int64_t amount) {
  return JsonObject([&](auto& w) {
    w.Key("amount");
    w.Int64(amount);
  });
}

cqrs::EventRegistry<AccountEvent>* BuildRegistry() {
  auto* r = new cqrs::EventRegistry<AccountEvent>();
  cqrs::EventCodec<AccountOpened> opened;
  opened.name = "AccountOpened";
  opened.to_json = [](const AccountOpened& e) {
    return JsonObject([&](auto& w) {
      w.Key("owner");
      w.String(e.owner.data(), e.owner.size());
      w.Key("currency");
      w.String(e.currency.data(), e.currency.size());
    });
  };
  opened.from_json =
      [](absl::string_view json) -> absl::StatusOr<AccountOpened> {
    absl::StatusOr<rapidjson::Document> doc = Parse(json);
    if (!doc.ok()) return doc.status();
    absl::StatusOr<std::string> owner =
        cqrs::http::RequiredString(*doc, "owner");
    if (!owner.ok()) return owner.status();
    absl::StatusOr<std::string> currency =
        cqrs::http::RequiredString(*doc, "currency");
    if (!currency.ok()) return currency.status();
    return AccountOpened{*std::move(owner), *std::move(currency)};
  };
  cqrs::EventCodec<MoneyDeposited> deposited;
  deposited.name = "MoneyDeposited";
  deposited.to_json = [](const MoneyDeposited& e) {
    return AmountJson(e.amount);
  };
  deposited.from_json =
      [](absl::string_view json) -> absl::StatusOr<MoneyDeposited> {
    absl::StatusOr<int64_t> amount = AmountOf(json);
    if (!amount.ok()) return amount.status();
    return MoneyDeposited{*amount};
  };
  cqrs::EventCodec<MoneyWithdrawn> withdrawn;
  withdrawn.name = "MoneyWithdrawn";
  withdrawn.to_json = [](const MoneyWithdrawn& e) {
    return AmountJson(e.amount);
  };
  withdrawn.from_json =
      [](absl::string_view json) -> absl::StatusOr<MoneyWithdrawn> {
    absl::StatusOr<int64_t> amount = AmountOf(json);
    if (!amount.ok()) return amount.status();
    return MoneyWithdrawn{*amount};
  };
  cqrs::EventCodec<AccountClosed> closed;
  closed.name = "AccountClosed";
  closed.to_json = [](const AccountClosed&) { return std::string("{}"); };
  closed.from_json = [](absl::string_view) -> absl::StatusOr<AccountClosed> {
    return AccountClosed{};
  };
  // Registration of distinct, complete codecs cannot fail.
  r->Register(std::move(opened)).IgnoreError();
  r->Register(std::move(deposited)).IgnoreError();
  r->Register(std::move(withdrawn)).IgnoreError();
  r->Register(std::move(closed)).IgnoreError();
  r->Register(TransferCodec<TransferDebit>("AccountDebitedForTransfer"))
      .IgnoreError();
  r->Register(TransferCodec<TransferCredit>("AccountCreditedForTransfer"))
      .IgnoreError();
  r->Register(TransferCodec<TransferRefund>("AccountRefundedForTransfer"))
      .IgnoreError();
  return r;
}

std::string SnapshotJson(const Account& a);
absl::StatusOr<Account> AccountFromSnapshot(absl::string_view json);

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
  o.snapshots.to_json = SnapshotJson;
  o.snapshots.from_json = AccountFromSnapshot;
  return o;
}

std::string SnapshotJson(const Account& a) {
  return JsonObject([&](auto& w) {
    w.Key("owner");
    w.String(a.owner.data(), a.owner.size());
    w.Key("currency");
    w.String(a.currency.data(), a.currency.size());
    w.Key("balance");
    w.Int64(a.balance);
    w.Key("closed");
    w.Bool(a.closed);
  });
}

absl::StatusOr<Account> AccountFromSnapshot(absl::string_view json) {
  absl::StatusOr<rapidjson::Document> doc = Parse(json);
  if (!doc.ok()) return doc.status();
  Account a;
  a.exists = true;
  absl::StatusOr<std::string> owner = cqrs::http::RequiredString(*doc, "owner");
  absl::StatusOr<std::string> currency =
      cqrs::http::RequiredString(*doc, "currency");
  absl::StatusOr<int64_t> balance = cqrs::http::RequiredInt64(*doc, "balance");
  absl::StatusOr<bool> closed = cqrs::http::RequiredBool(*doc, "closed");
  if (!owner.ok() || !currency.ok() || !balance.ok() || !closed.ok()) {
    return absl::InvalidArgumentError("malformed account snapshot");
  }
  a.owner = *std::move(owner);
  a.currency = *std::move(currency);
  a.balance = *balance;
  a.closed = *closed;
  return a;
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
  static const cqrs::EventRegistry<AccountEvent>* registry = BuildRegistry();
  return *registry;
}

const std::vector<std::string>& AccountEventTypes() {
  static const auto* types =
      new std::vector<std::string>{"AccountOpened",
                                   "MoneyDeposited",
                                   "MoneyWithdrawn",
                                   "AccountClosed",
                                   "AccountDebitedForTransfer",
                                   "AccountCreditedForTransfer",
                                   "AccountRefundedForTransfer"};
  return *types;
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
    return cqrs::http::InvalidRequest(
        "account id must be 1 to 64 characters of [A-Za-z0-9_-]");
  }
  return absl::OkStatus();
}

absl::Status ValidateCurrency(absl::string_view currency) {
  bool ok = currency.size() == 3;
  for (char c : currency) ok = ok && c >= 'A' && c <= 'Z';
  if (!ok) {
    return cqrs::http::InvalidRequest(
        "currency must be three upper-case letters, e.g. EUR");
  }
  return absl::OkStatus();
}

}  // namespace bank

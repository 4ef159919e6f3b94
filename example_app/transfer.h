// The bank's transfer aggregate: a transfer is its own stream
// ("transfer-<id>") that a process manager (example_app/transfer_process.h)
// settles in one step, one transaction:
//
//   TransferRequested -> TransferDebited, TransferCredited, TransferCompleted
//                     -> TransferDebited, TransferRefunded, TransferFailed
//                     -> TransferFailed{reason}             (nothing moved)
//
// The debit of the source and the credit of the target (or the refund of
// the source when the target refuses) commit together with the transfer's
// outcome, so no committed state ever shows a source debited by a transfer
// that is still pending: the source cannot be closed in between, and a
// refund never lands in a closed account.
//
// Transfers debited by an older build, which committed the debit alone
// (TransferRequested -> TransferDebited), are finished by the process
// manager on their TransferDebited: credited and completed, or refunded and
// failed.
//
//   TransferAggregate().Execute(store, id, meta, {},
//                               DecideRequestTransfer(from, to, 500, "EUR"));
//
// Thread-safety: everything here is immutable after first use.
#ifndef EXAMPLE_APP_TRANSFER_H_
#define EXAMPLE_APP_TRANSFER_H_

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "commands/aggregate.h"
#include "example_app/account.h"
#include "framework/event_registry.h"
#include "framework/json_shape.h"

namespace bank {

// Each event: its stored name and its JSON (example_app/bank_events.h),
// bounded as the commands are (example_app/account.h).
struct TransferRequested {
  static constexpr char kName[] = "TransferRequested";
  std::string from;
  std::string to;
  int64_t amount = 0;
  std::string currency;  // the source account's
  static auto Json() {
    return cqrs::json::Shape<TransferRequested>()
        .Field("from", &TransferRequested::from, cqrs::json::Length(1, 64),
               cqrs::json::Description("the source account"))
        .Field("to", &TransferRequested::to, cqrs::json::Length(1, 64),
               cqrs::json::Description("the target account"))
        .Field("amount", &TransferRequested::amount,
               cqrs::json::Range(1, kMaxAmount),
               cqrs::json::Description("minor units (cents)"))
        .Field("currency", &TransferRequested::currency,
               cqrs::json::Length(3, 3),
               cqrs::json::Description("the source account's currency"));
  }
};
struct TransferDebited {
  static constexpr char kName[] = "TransferDebited";
  static auto Json() { return cqrs::json::Shape<TransferDebited>(); }
};
struct TransferCredited {
  static constexpr char kName[] = "TransferCredited";
  static auto Json() { return cqrs::json::Shape<TransferCredited>(); }
};
struct TransferCompleted {
  static constexpr char kName[] = "TransferCompleted";
  static auto Json() { return cqrs::json::Shape<TransferCompleted>(); }
};
struct TransferRefunded {
  static constexpr char kName[] = "TransferRefunded";
  static auto Json() { return cqrs::json::Shape<TransferRefunded>(); }
};
struct TransferFailed {
  static constexpr char kName[] = "TransferFailed";
  std::string reason;  // an error code: insufficient_funds, account_closed...
  static auto Json() {
    return cqrs::json::Shape<TransferFailed>().Field(
        "reason", &TransferFailed::reason,
        cqrs::json::Description(
            "an error code: account_not_found, account_closed, "
            "insufficient_funds, currency_mismatch, balance_limit_exceeded"));
  }
};

using TransferEvent =
    std::variant<TransferRequested, TransferDebited, TransferCredited,
                 TransferCompleted, TransferRefunded, TransferFailed>;

struct Transfer {
  bool exists = false;
  TransferRequested request;
  std::string status;  // "pending", "completed", "failed"
  bool debited = false;
  bool refunded = false;
  std::string reason;
};

using TransferType = cqrs::commands::AggregateType<Transfer, TransferEvent>;

// By their kName and JSON shape (version 1).
const cqrs::EventRegistry<TransferEvent>& TransferEvents();
std::vector<std::string> TransferEventTypes();

// Category "transfer"; no cache or in-process queue (the process manager
// appends to transfers inside its batch transactions).
TransferType& TransferAggregate();

// transfer_exists (409) when the id is taken.
TransferType::Decide DecideRequestTransfer(std::string from, std::string to,
                                           int64_t amount,
                                           std::string currency);
// The process manager's records; each refuses (kFailedPrecondition
// "transfer_state") a transfer not in the state it expects, so a step can
// never be recorded twice.
//
// A pending transfer whose debit and outcome are recorded together (this
// build): debited and completed, or debited, refunded and failed.
TransferType::Decide DecideDebitAndComplete();
TransferType::Decide DecideDebitRefundAndFail(std::string reason);
// A pending transfer that was not debited: failed, nothing moved.
TransferType::Decide DecideFail(std::string reason);
// A pending transfer debited by an older build: completed, or refunded and
// failed.
TransferType::Decide DecideComplete();
TransferType::Decide DecideRefundAndFail(std::string reason);

// Transfer ids follow the account id rules: kInvalidArgument.
absl::Status ValidateTransferId(absl::string_view id);

}  // namespace bank

#endif  // EXAMPLE_APP_TRANSFER_H_

#include "example_app/transfer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "example_app/account.h"
#include "example_app/bank_events.h"
#include "framework/error_code.h"
#include "framework/http/status_mapping.h"

namespace bank {
namespace {

using TransferDecision = absl::StatusOr<std::vector<TransferEvent>>;

void Apply(Transfer& t, const TransferEvent& event) {
  if (const auto* e = std::get_if<TransferRequested>(&event)) {
    t.exists = true;
    t.request = *e;
    t.status = "pending";
  } else if (std::holds_alternative<TransferDebited>(event)) {
    t.debited = true;
  } else if (std::holds_alternative<TransferCompleted>(event)) {
    t.status = "completed";
  } else if (std::holds_alternative<TransferRefunded>(event)) {
    t.refunded = true;
  } else if (const auto* e = std::get_if<TransferFailed>(&event)) {
    t.status = "failed";
    t.reason = e->reason;
  }
}

absl::Status WrongState(const Transfer& t, absl::string_view step) {
  return cqrs::http::WithErrorCode(
      absl::FailedPreconditionError(
          absl::StrCat("transfer is ", t.exists ? t.status : "missing",
                       t.debited ? " (debited)" : "", "; cannot ", step)),
      "transfer_state");
}

}  // namespace

const cqrs::EventRegistry<TransferEvent>& TransferEvents() {
  return EventRegistryOf<TransferEvent>();
}

std::vector<std::string> TransferEventTypes() {
  return EventNamesOf<TransferEvent>();
}

TransferType& TransferAggregate() {
  static TransferType* type = [] {
    TransferType::Options o;
    o.category = "transfer";
    o.registry = &TransferEvents();
    o.apply = Apply;
    o.cache_capacity = 0;
    o.serialize_in_process = false;
    return new TransferType(std::move(o));
  }();
  return *type;
}

TransferType::Decide DecideRequestTransfer(std::string from, std::string to,
                                           int64_t amount,
                                           std::string currency) {
  return [request = TransferRequested{std::move(from), std::move(to), amount,
                                      std::move(currency)}](
             const Transfer& t, int64_t) -> TransferDecision {
    if (t.exists) {
      return cqrs::http::WithErrorCode(
          absl::AlreadyExistsError("transfer already exists"),
          "transfer_exists");
    }
    return std::vector<TransferEvent>{request};
  };
}

TransferType::Decide DecideDebitAndComplete() {
  return [](const Transfer& t, int64_t) -> TransferDecision {
    if (!t.exists || t.status != "pending" || t.debited) {
      return WrongState(t, "record the debit");
    }
    return std::vector<TransferEvent>{TransferDebited{}, TransferCredited{},
                                      TransferCompleted{}};
  };
}

TransferType::Decide DecideDebitRefundAndFail(std::string reason) {
  return [reason = std::move(reason)](const Transfer& t,
                                      int64_t) -> TransferDecision {
    if (!t.exists || t.status != "pending" || t.debited) {
      return WrongState(t, "record the debit");
    }
    return std::vector<TransferEvent>{TransferDebited{}, TransferRefunded{},
                                      TransferFailed{reason}};
  };
}

TransferType::Decide DecideFail(std::string reason) {
  return [reason = std::move(reason)](const Transfer& t,
                                      int64_t) -> TransferDecision {
    if (!t.exists || t.status != "pending" || t.debited) {
      return WrongState(t, "fail");
    }
    return std::vector<TransferEvent>{TransferFailed{reason}};
  };
}

TransferType::Decide DecideComplete() {
  return [](const Transfer& t, int64_t) -> TransferDecision {
    if (!t.exists || t.status != "pending" || !t.debited) {
      return WrongState(t, "complete");
    }
    return std::vector<TransferEvent>{TransferCredited{}, TransferCompleted{}};
  };
}

TransferType::Decide DecideRefundAndFail(std::string reason) {
  return [reason = std::move(reason)](const Transfer& t,
                                      int64_t) -> TransferDecision {
    if (!t.exists || t.status != "pending" || !t.debited) {
      return WrongState(t, "refund");
    }
    return std::vector<TransferEvent>{TransferRefunded{},
                                      TransferFailed{reason}};
  };
}

absl::Status ValidateTransferId(absl::string_view id) {
  if (!ValidateAccountId(id).ok()) {
    return cqrs::InvalidRequest(
        "transfer id must be 1 to 64 characters of [A-Za-z0-9_-]");
  }
  return absl::OkStatus();
}

}  // namespace bank

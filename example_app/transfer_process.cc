#include "example_app/transfer_process.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "example_app/account.h"
#include "example_app/transfer.h"
#include "framework/http/status_mapping.h"
#include "framework/status_macros.h"

namespace bank {
namespace {

using cqrs::commands::CommandMetadata;
using cqrs::commands::ProcessContext;
using cqrs::eventstore::RecordedEvent;

constexpr absl::string_view kTransferPrefix = "transfer-";

// A business refusal (the transfer fails, or is refunded), as opposed to an
// error to retry.
bool IsDebitRefusal(const absl::Status& status) {
  const std::string code = cqrs::http::ErrorCodeOf(status);
  return code == "account_not_found" || code == "account_closed" ||
         code == "insufficient_funds";
}
bool IsCreditRefusal(const absl::Status& status) {
  const std::string code = cqrs::http::ErrorCodeOf(status);
  return code == "account_not_found" || code == "account_closed" ||
         code == "currency_mismatch" || code == "balance_limit_exceeded";
}

// Gives the transfer's money back to the source, which the target refused.
absl::Status Refund(ProcessContext& ctx, const std::string& transfer_id,
                    const TransferRequested& request) {
  return AccountAggregateForProcesses()
      .Execute(ctx.store(), request.from, ctx.Metadata("refund"), {},
               DecideTransferRefund(transfer_id, request.amount))
      .status();
}

// Step "debit" of TransferRequested: the whole transfer, in the batch's
// transaction. The debit, the credit or the refund, and the transfer's
// outcome commit together, so no committed state shows the source debited
// while the transfer is pending: a close of the source decides either
// before the debit or after the refund (its append at the version it
// loaded fails otherwise, and it re-decides on the committed state).
absl::Status Move(ProcessContext& ctx, const std::string& transfer_id,
                  const TransferRequested& request,
                  const CommandMetadata& meta) {
  ASSIGN_OR_RETURN(auto loaded,
                   TransferAggregate().Load(ctx.store(), transfer_id));
  const Transfer& transfer = loaded.first;
  // Settled, or debited by an older build (its TransferDebited finishes
  // it): nothing to do. The transfer's own rules below would refuse it too,
  // but only as an error that stops the process.
  if (!transfer.exists || transfer.status != "pending" || transfer.debited) {
    return absl::OkStatus();
  }
  auto debited = AccountAggregateForProcesses().Execute(
      ctx.store(), request.from, meta, {},
      DecideTransferDebit(transfer_id, request.amount));
  if (!debited.ok()) {
    if (!IsDebitRefusal(debited.status())) return debited.status();
    return TransferAggregate()
        .Execute(ctx.store(), transfer_id, meta, {},
                 DecideFail(cqrs::http::ErrorCodeOf(debited.status())))
        .status();
  }
  auto credited = AccountAggregateForProcesses().Execute(
      ctx.store(), request.to, ctx.Metadata("credit"), {},
      DecideTransferCredit(transfer_id, request.amount, request.currency));
  if (credited.ok()) {
    return TransferAggregate()
        .Execute(ctx.store(), transfer_id, meta, {}, DecideDebitAndComplete())
        .status();
  }
  if (!IsCreditRefusal(credited.status())) return credited.status();
  RETURN_IF_ERROR(Refund(ctx, transfer_id, request));
  return TransferAggregate()
      .Execute(
          ctx.store(), transfer_id, meta, {},
          DecideDebitRefundAndFail(cqrs::http::ErrorCodeOf(credited.status())))
      .status();
}

// Step "credit" of TransferDebited, for a transfer an older build debited
// in a transaction of its own: credit the target and complete, or refund
// the source and fail. The source may have been closed after that debit
// (the older build's window); the refund then still goes to it, so the
// money stays in the ledger (DecideTransferRefund).
absl::Status FinishDebited(ProcessContext& ctx, const std::string& transfer_id,
                           const TransferRequested& request,
                           const CommandMetadata& meta) {
  auto credited = AccountAggregateForProcesses().Execute(
      ctx.store(), request.to, meta, {},
      DecideTransferCredit(transfer_id, request.amount, request.currency));
  if (credited.ok()) {
    return TransferAggregate()
        .Execute(ctx.store(), transfer_id, meta, {}, DecideComplete())
        .status();
  }
  if (!IsCreditRefusal(credited.status())) return credited.status();
  RETURN_IF_ERROR(Refund(ctx, transfer_id, request));
  return TransferAggregate()
      .Execute(ctx.store(), transfer_id, meta, {},
               DecideRefundAndFail(cqrs::http::ErrorCodeOf(credited.status())))
      .status();
}

absl::Status Handle(ProcessContext& ctx, const RecordedEvent& e) {
  absl::string_view id = e.stream_id;
  if (!absl::ConsumePrefix(&id, kTransferPrefix)) return absl::OkStatus();
  const std::string transfer_id(id);
  if (e.event_type == TransferRequested::kName) {
    ASSIGN_OR_RETURN(
        TransferEvent event,
        TransferEvents().Decode(e.event_type, e.schema_version, e.data));
    const TransferRequested request = std::get<TransferRequested>(event);
    return ctx
        .Once("debit",
              [&](const CommandMetadata& meta) {
                return Move(ctx, transfer_id, request, meta);
              })
        .status();
  }
  if (e.event_type == TransferDebited::kName) {
    // This build records TransferDebited together with the outcome: only a
    // transfer an older build debited is still pending here.
    ASSIGN_OR_RETURN(auto loaded,
                     TransferAggregate().Load(ctx.store(), transfer_id));
    const Transfer& transfer = loaded.first;
    if (!transfer.exists || transfer.status != "pending" || !transfer.debited) {
      return absl::OkStatus();
    }
    return ctx
        .Once("credit",
              [&](const CommandMetadata& meta) {
                return FinishDebited(ctx, transfer_id, transfer.request, meta);
              })
        .status();
  }
  return absl::OkStatus();
}

}  // namespace

cqrs::commands::ProcessManager TransferProcess() {
  cqrs::commands::ProcessManager pm;
  pm.name = "transfer_process";
  pm.event_types = {TransferRequested::kName, TransferDebited::kName};
  pm.handle = Handle;
  return pm;
}

}  // namespace bank

#include "example_app/transfer_process.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "example_app/account.h"
#include "example_app/bank_projections.h"
#include "example_app/transfer.h"
#include "framework/http/status_mapping.h"
#include "framework/status_macros.h"

namespace bank {
namespace {

using cqrs::commands::CommandMetadata;
using cqrs::commands::ProcessContext;
using cqrs::eventstore::RecordedEvent;

constexpr absl::string_view kTransferPrefix = "transfer-";

// A business refusal (the transfer fails or is refunded), as opposed to an
// error to retry.
bool IsRefusal(const absl::Status& status, absl::string_view step) {
  const std::string code = cqrs::http::ErrorCodeOf(status);
  if (step == "debit") {
    return code == "account_not_found" || code == "account_closed" ||
           code == "insufficient_funds";
  }
  return code == "account_not_found" || code == "account_closed" ||
         code == "currency_mismatch" || code == "balance_limit_exceeded";
}

absl::Status Debit(ProcessContext& ctx, const std::string& transfer_id,
                   const TransferRequested& request,
                   const CommandMetadata& meta) {
  auto debited = AccountAggregateForProcesses().Execute(
      ctx.store(), request.from, meta, {},
      DecideTransferDebit(transfer_id, request.amount));
  if (debited.ok()) {
    return TransferAggregate()
        .Execute(ctx.store(), transfer_id, meta, {}, DecideRecordDebit())
        .status();
  }
  if (!IsRefusal(debited.status(), "debit")) return debited.status();
  return TransferAggregate()
      .Execute(ctx.store(), transfer_id, meta, {},
               DecideFail(cqrs::http::ErrorCodeOf(debited.status())))
      .status();
}

absl::Status Credit(ProcessContext& ctx, const std::string& transfer_id,
                    const CommandMetadata& meta) {
  ASSIGN_OR_RETURN(auto loaded,
                   TransferAggregate().Load(ctx.store(), transfer_id));
  const TransferRequested& request = loaded.first.request;
  auto credited = AccountAggregateForProcesses().Execute(
      ctx.store(), request.to, meta, {},
      DecideTransferCredit(transfer_id, request.amount, request.currency));
  if (credited.ok()) {
    return TransferAggregate()
        .Execute(ctx.store(), transfer_id, meta, {}, DecideComplete())
        .status();
  }
  if (!IsRefusal(credited.status(), "credit")) return credited.status();
  // The money goes back to where it came from before the transfer fails.
  RETURN_IF_ERROR(
      AccountAggregateForProcesses()
          .Execute(ctx.store(), request.from, meta, {},
                   DecideTransferRefund(transfer_id, request.amount))
          .status());
  return TransferAggregate()
      .Execute(ctx.store(), transfer_id, meta, {},
               DecideRefundAndFail(cqrs::http::ErrorCodeOf(credited.status())))
      .status();
}

absl::Status Handle(ProcessContext& ctx, const RecordedEvent& e) {
  absl::string_view id = e.stream_id;
  if (!absl::ConsumePrefix(&id, kTransferPrefix)) return absl::OkStatus();
  const std::string transfer_id(id);
  if (e.event_type == "TransferRequested") {
    ASSIGN_OR_RETURN(
        TransferEvent event,
        TransferEvents().Decode(e.event_type, e.schema_version, e.data));
    const TransferRequested request = std::get<TransferRequested>(event);
    return ctx
        .Once("debit",
              [&](const CommandMetadata& meta) {
                return Debit(ctx, transfer_id, request, meta);
              })
        .status();
  }
  if (e.event_type == "TransferDebited") {
    return ctx
        .Once("credit",
              [&](const CommandMetadata& meta) {
                return Credit(ctx, transfer_id, meta);
              })
        .status();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<cqrs::eventstore::PostgresEventStore>>
NewProcessStore(cqrs::PgPool* pool, const std::string& schema) {
  cqrs::eventstore::PostgresEventStoreOptions options;
  options.schema = schema;
  options.notify =
      cqrs::eventstore::PostgresEventStoreOptions::Notify::kInTransaction;
  return cqrs::eventstore::PostgresEventStore::Create(pool, options);
}

std::vector<cqrs::projections::Projection> BankRunnerProjections(
    cqrs::eventstore::PostgresEventStore* process_store,
    const std::string& schema) {
  std::vector<cqrs::projections::Projection> all = BankProjections();
  all.push_back(
      cqrs::commands::AsProjection(TransferProcess(), process_store, schema));
  return all;
}

cqrs::commands::ProcessManager TransferProcess() {
  cqrs::commands::ProcessManager pm;
  pm.name = "transfer_process";
  pm.event_types = {"TransferRequested", "TransferDebited"};
  pm.handle = Handle;
  return pm;
}

}  // namespace bank

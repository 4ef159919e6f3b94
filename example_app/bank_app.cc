#include "example_app/bank_app.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "example_app/account.h"
#include "example_app/bank_events.h"
#include "example_app/bank_projections.h"
#include "example_app/bank_queries.h"
#include "example_app/transfer.h"
#include "example_app/transfer_process.h"
#include "framework/error_code.h"
#include "framework/json_shape.h"
#include "framework/status_macros.h"
#include "framework/uuid.h"

namespace bank {
namespace {

namespace http = cqrs::http;
namespace json = cqrs::json;
using cqrs::commands::CommandContext;
using cqrs::eventstore::EventStore;

// Request bodies (the contract's).
struct OpenAccount {
  std::string owner;
  std::string currency;
  std::optional<std::string> account_id;  // ValidateAccountId; default UUID
  static auto Json() {
    return json::Shape<OpenAccount>()
        .Field("owner", &OpenAccount::owner, json::Length(1, 200))
        .Field("currency", &OpenAccount::currency, json::Pattern("^[A-Z]{3}$"),
               json::Description("three upper-case letters, e.g. EUR"))
        .Field("account_id", &OpenAccount::account_id);
  }
};
struct Amount {
  int64_t amount = 0;
  static auto Json() {
    return json::Shape<Amount>().Field("amount", &Amount::amount,
                                       json::Range(1, kMaxAmount));
  }
};
struct RequestTransfer {
  std::string from;
  std::string to;
  int64_t amount = 0;
  std::optional<std::string> transfer_id;  // default UUID
  static auto Json() {
    return json::Shape<RequestTransfer>()
        .Field("from", &RequestTransfer::from)
        .Field("to", &RequestTransfer::to)
        .Field("amount", &RequestTransfer::amount, json::Range(1, kMaxAmount))
        .Field("transfer_id", &RequestTransfer::transfer_id);
  }
};

// Responses.
struct AccountChanged {
  std::string account_id;
  int64_t version = 0;
  std::string position;
  std::optional<int64_t> balance;  // after a deposit or a withdrawal
  static auto Json() {
    return json::Shape<AccountChanged>()
        .Field("account_id", &AccountChanged::account_id)
        .Field("version", &AccountChanged::version)
        .Field("position", &AccountChanged::position)
        .Field("balance", &AccountChanged::balance);
  }
};
struct TransferAccepted {
  std::string transfer_id;
  std::string position;
  static auto Json() {
    return json::Shape<TransferAccepted>()
        .Field("transfer_id", &TransferAccepted::transfer_id)
        .Field("position", &TransferAccepted::position);
  }
};

AccountChanged Changed(const cqrs::CommandResult<Account>& r) {
  return {r.id, r.version, r.position.ToToken(), std::nullopt};
}
AccountChanged ChangedWithBalance(const cqrs::CommandResult<Account>& r) {
  return {r.id, r.version, r.position.ToToken(), r.state.balance};
}

// POST /transfers: the source must exist now; everything else (its balance,
// the target) is settled by the transfer process.
absl::StatusOr<http::Response> Transfer(const http::Request& request,
                                        EventStore& store,
                                        const CommandContext& ctx) {
  ASSIGN_OR_RETURN(RequestTransfer body,
                   json::Decode<RequestTransfer>(request.body()));
  RETURN_IF_ERROR(ValidateAccountId(body.from));
  RETURN_IF_ERROR(ValidateAccountId(body.to));
  const std::string id =
      body.transfer_id.has_value() ? *body.transfer_id : cqrs::NewUuid();
  RETURN_IF_ERROR(ValidateTransferId(id));
  if (body.from == body.to) {
    return cqrs::InvalidRequest("from and to must be different accounts");
  }
  ASSIGN_OR_RETURN(auto source, AccountAggregate().Load(store, body.from));
  if (!source.first.exists) {
    return cqrs::NotFound(
        "account_not_found",
        absl::StrCat("account '", body.from, "' does not exist"));
  }
  ASSIGN_OR_RETURN(auto outcome,
                   TransferAggregate().Execute(
                       store, id, ctx.metadata, {},
                       DecideRequestTransfer(body.from, body.to, body.amount,
                                             source.first.currency)));
  return http::JsonResponse(
      202, json::Encode(TransferAccepted{id, outcome.position.ToToken()}));
}

void DeclareCommands(cqrs::App& app) {
  // The account aggregate type stays the bank's own (account.h): the
  // transfer process manager and the tests use it beside the app, and its
  // snapshots keep their JSON.
  const AccountType& accounts = AccountAggregate();
  app.Command<OpenAccount>("POST", "/accounts", accounts,
                           [](const Account& a, const OpenAccount& body) {
                             return DecideOpen(body.owner, body.currency)(a, 0);
                           })
      .Name("open_account")
      .Status(201)
      .RequireBody()
      .IdFrom([](const OpenAccount& body) {
        return body.account_id.has_value() ? *body.account_id : cqrs::NewUuid();
      })
      .CheckId(ValidateAccountId)
      .Respond(Changed);
  app.Command<Amount>("POST", "/accounts/{id}/deposit", accounts,
                      [](const Account& a, const Amount& body) {
                        return DecideDeposit(body.amount)(a, 0);
                      })
      .Name("deposit")
      .RequireBody()
      .CheckId(ValidateAccountId)
      .Respond(ChangedWithBalance);
  app.Command<Amount>("POST", "/accounts/{id}/withdraw", accounts,
                      [](const Account& a, const Amount& body) {
                        return DecideWithdraw(body.amount)(a, 0);
                      })
      .Name("withdraw")
      .RequireBody()
      .CheckId(ValidateAccountId)
      .Respond(ChangedWithBalance);
  app.Command<cqrs::NoBody>("POST", "/accounts/{id}/close", accounts,
                            [](const Account& a, const cqrs::NoBody&) {
                              return DecideClose()(a, 0);
                            })
      .Name("close_account")
      .CheckId(ValidateAccountId)
      .Respond(Changed);
  app.AddCommandRoute("POST", "/transfers", Transfer,
                      [] { return std::string("transfer"); });
  // Deposits can also come through RabbitMQ (`bank serve --amqp-url`,
  // docs/amqp.md "Inbound"): each message of the queue bank.deposits is a
  // deposit {"amount": N} into the account its CloudEvent subject names,
  // applied once per message id, refusals dead-lettered with the reason.
  app.Consume("bank.deposits", "POST", "/accounts/{id}/deposit")
      .Concurrency(16);
}

// What other systems may follow (GET /events, /asyncapi.json): every
// change of an account's balance or status, and each transfer's request and
// outcome. The transfer's own steps (TransferDebited, TransferCredited,
// TransferRefunded) stay inside: the account events of the same commit carry
// the money, with the transfer's id.
void DeclarePublishedEvents(cqrs::App& app) {
  app.Publish<AccountOpened>("bank.account.opened")
      .Publish<MoneyDeposited>("bank.account.deposited")
      .Publish<MoneyWithdrawn>("bank.account.withdrawn")
      .Publish<AccountClosed>("bank.account.closed")
      .Publish<TransferDebit>("bank.account.transfer_debited")
      .Publish<TransferCredit>("bank.account.transfer_credited")
      .Publish<TransferRefund>("bank.account.transfer_refunded")
      .Publish<TransferRequested>("bank.transfer.requested")
      .Publish<TransferCompleted>("bank.transfer.completed")
      .Publish<TransferFailed>("bank.transfer.failed");
}

}  // namespace

cqrs::AppOptions BankOptions() {
  cqrs::AppOptions options;
  options.description =
      "bank: the example bank's HTTP API (accounts, transfers, read models, "
      "published events) and its operations";
  options.event_source = kEventSource;
  return options;
}

void DeclareBank(cqrs::App& app) {
  DeclareEvents<AccountEvent>(app);
  DeclareEvents<TransferEvent>(app);
  DeclarePublishedEvents(app);
  DeclareCommands(app);
  for (cqrs::projections::Projection& p : BankProjections()) {
    app.AddProjection(std::move(p));
  }
  app.AddProcessManager(TransferProcess());
  for (cqrs::queries::QueryRoute& q : BankQueries()) {
    app.AddQuery(std::move(q));
  }
  app.SetOpenApi(std::string(OpenApiDocument()));
}

}  // namespace bank

#include "example_app/bank_app.h"

#include "absl/strings/str_cat.h"
#include "commands/process_manager.h"
#include "example_app/account.h"
#include "example_app/transfer.h"
#include "framework/http/json_body.h"
#include "framework/http/status_mapping.h"
#include "framework/log.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "framework/uuid.h"
#include "projections/runner.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace bank {
namespace {

namespace http = cqrs::http;
using cqrs::commands::CommandContext;
using cqrs::eventstore::EventStore;

constexpr http::LengthBounds kOwnerLength{1, 200};
constexpr http::LengthBounds kIdLength{1, 64};
constexpr http::Int64Bounds kAmountBounds{1, kMaxAmount};

// {"account_id", "version", "position"[, "balance"]}
std::string CommandBody(absl::string_view id, int64_t version,
                        const cqrs::eventstore::Position& position,
                        const int64_t* balance) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("account_id");
  w.String(id.data(), static_cast<rapidjson::SizeType>(id.size()));
  w.Key("version");
  w.Int64(version);
  w.Key("position");
  const std::string token = position.ToToken();
  w.String(token.data(), static_cast<rapidjson::SizeType>(token.size()));
  if (balance != nullptr) {
    w.Key("balance");
    w.Int64(*balance);
  }
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace

absl::Status BankApp::Migrate(cqrs::PgPool& pool, absl::string_view schema) {
  RETURN_IF_ERROR(cqrs::eventstore::PostgresEventStore::Migrate(pool, schema));
  RETURN_IF_ERROR(cqrs::projections::ProjectionRunner::Migrate(pool, schema));
  RETURN_IF_ERROR(cqrs::commands::MigrateProcessManagers(pool, schema));
  return cqrs::commands::PostgresIdempotencyStore::Migrate(pool, schema);
}

absl::StatusOr<std::unique_ptr<BankApp>> BankApp::Create(cqrs::PgPool* pool,
                                                         BankOptions options) {
  cqrs::eventstore::PostgresEventStoreOptions store_options;
  store_options.schema = options.schema;
  cqrs::CounterFamily* commands = nullptr;
  if (options.metrics != nullptr) {
    ASSIGN_OR_RETURN(commands,
                     cqrs::commands::CommandsCounter(*options.metrics));
    ASSIGN_OR_RETURN(
        cqrs::CounterFamily * appended,
        options.metrics->AddCounter(
            "cqrs_events_appended_total",
            "Events appended to the event store by this process."));
    store_options.events_appended = &appended->WithLabels({});
  }
  ASSIGN_OR_RETURN(auto store, cqrs::eventstore::PostgresEventStore::Create(
                                   pool, store_options));
  ASSIGN_OR_RETURN(auto idem,
                   cqrs::commands::PostgresIdempotencyStore::Create(
                       pool, store.get(), options.schema, options.idempotency));
  cqrs::Counter* events_appended = store_options.events_appended;
  std::unique_ptr<BankApp> app(new BankApp(
      pool, std::move(options), std::move(store), std::move(idem), commands));
  app->events_appended_ = events_appended;
  return app;
}

BankApp::BankApp(cqrs::PgPool* pool, BankOptions options,
                 std::unique_ptr<cqrs::eventstore::PostgresEventStore> store,
                 std::unique_ptr<cqrs::commands::PostgresIdempotencyStore> idem,
                 cqrs::CounterFamily* commands)
    : pool_(pool),
      options_(std::move(options)),
      store_(std::move(store)),
      idempotency_(std::move(idem)),
      runner_(store_.get(), idempotency_.get(), commands) {}

BankApp::~BankApp() {
  {
    absl::MutexLock lock(&maintenance_mu_);
    stopping_ = true;
  }
  if (maintenance_.joinable()) maintenance_.join();
}

void BankApp::StartMaintenance(absl::Duration interval) {
  maintenance_ = std::thread([this, interval] {
    while (true) {
      absl::StatusOr<int64_t> purged = idempotency_->PurgeExpired();
      if (!purged.ok()) {
        cqrs::Log(cqrs::LogLevel::kWarn, "idempotency purge failed",
                  {{"error", purged.status().ToString()}});
      } else if (*purged > 0) {
        cqrs::Log(cqrs::LogLevel::kInfo, "idempotency records purged",
                  {{"count", *purged}});
      }
      absl::MutexLock lock(&maintenance_mu_);
      if (maintenance_mu_.AwaitWithTimeout(absl::Condition(&stopping_),
                                           interval)) {
        return;
      }
    }
  });
}

void BankApp::RegisterRoutes(http::Router& router) {
  http::RouteOptions command;
  command.require_json_body = true;
  router.Add(
      "POST", "/accounts",
      [this](const http::Request& r) { return OpenAccount(r); }, command);
  router.Add(
      "POST", "/accounts/{id}/deposit",
      [this](const http::Request& r) { return MoveMoney(r, true); }, command);
  router.Add(
      "POST", "/accounts/{id}/withdraw",
      [this](const http::Request& r) { return MoveMoney(r, false); }, command);
  router.Add(
      "POST", "/accounts/{id}/close",
      [this](const http::Request& r) { return CloseAccount(r); }, command);
  router.Add(
      "POST", "/transfers",
      [this](const http::Request& r) { return RequestTransfer(r); }, command);

  // Operations routes: they answer while the command routes cannot.
  http::RouteOptions health;
  health.execution = http::Execution::kNetworkThread;
  health.operations = true;
  router.Add(
      "GET", "/healthz",
      [](const http::Request&) {
        return http::JsonResponse(200, "{\"status\":\"ok\"}");
      },
      health);
  http::RouteOptions readiness;
  readiness.operations = true;
  router.Add(
      "GET", "/readyz", [this](const http::Request&) { return Ready(); },
      readiness);
}

http::Response BankApp::Ready() const {
  for (absl::string_view component : {"eventstore", "commands"}) {
    absl::StatusOr<int> version =
        cqrs::MigratedVersion(*pool_, options_.schema, component);
    if (!version.ok()) {
      return http::ErrorResponse(503, "not_ready",
                                 "the database is not reachable");
    }
    if (*version == 0) {
      return http::ErrorResponse(
          503, "not_ready",
          absl::StrCat("the schema is not migrated (", component,
                       "): run `bank migrate`"));
    }
  }
  return http::JsonResponse(200, "{\"status\":\"ready\"}");
}

http::Response BankApp::OpenAccount(const http::Request& request) const {
  return runner_.Run(
      request, "open_account",
      [&](EventStore& store,
          const CommandContext& ctx) -> absl::StatusOr<http::Response> {
        rapidjson::Document doc;
        RETURN_IF_ERROR(http::ParseJsonBody(request.body(), &doc));
        RETURN_IF_ERROR(http::RejectUnknownFields(
            doc, {"owner", "currency", "account_id"}));
        ASSIGN_OR_RETURN(std::string owner,
                         http::RequiredString(doc, "owner", kOwnerLength));
        ASSIGN_OR_RETURN(std::string currency,
                         http::RequiredString(doc, "currency"));
        RETURN_IF_ERROR(ValidateCurrency(currency));
        ASSIGN_OR_RETURN(absl::optional<std::string> given,
                         http::OptionalString(doc, "account_id", kIdLength));
        const std::string id = given.has_value() ? *given : cqrs::NewUuid();
        RETURN_IF_ERROR(ValidateAccountId(id));
        ASSIGN_OR_RETURN(auto outcome, AccountAggregate().Execute(
                                           store, id, ctx.metadata, ctx.execute,
                                           DecideOpen(std::move(owner),
                                                      std::move(currency))));
        return http::JsonResponse(
            201, CommandBody(id, outcome.version, outcome.position, nullptr));
      });
}

http::Response BankApp::MoveMoney(const http::Request& request,
                                  bool deposit) const {
  return runner_.Run(
      request, deposit ? "deposit" : "withdraw",
      [&](EventStore& store,
          const CommandContext& ctx) -> absl::StatusOr<http::Response> {
        const absl::string_view id = request.PathParam("id");
        RETURN_IF_ERROR(ValidateAccountId(id));
        rapidjson::Document doc;
        RETURN_IF_ERROR(http::ParseJsonBody(request.body(), &doc));
        RETURN_IF_ERROR(http::RejectUnknownFields(doc, {"amount"}));
        ASSIGN_OR_RETURN(int64_t amount,
                         http::RequiredInt64(doc, "amount", kAmountBounds));
        ASSIGN_OR_RETURN(auto outcome, AccountAggregate().Execute(
                                           store, id, ctx.metadata, ctx.execute,
                                           deposit ? DecideDeposit(amount)
                                                   : DecideWithdraw(amount)));
        return http::JsonResponse(
            200, CommandBody(id, outcome.version, outcome.position,
                             &outcome.state.balance));
      });
}

http::Response BankApp::CloseAccount(const http::Request& request) const {
  return runner_.Run(
      request, "close_account",
      [&](EventStore& store,
          const CommandContext& ctx) -> absl::StatusOr<http::Response> {
        const absl::string_view id = request.PathParam("id");
        RETURN_IF_ERROR(ValidateAccountId(id));
        rapidjson::Document doc;
        RETURN_IF_ERROR(http::ParseJsonBody(request.body(), &doc,
                                            http::EmptyBody::kAsEmptyObject));
        RETURN_IF_ERROR(http::RejectUnknownFields(doc, {}));
        ASSIGN_OR_RETURN(auto outcome, AccountAggregate().Execute(
                                           store, id, ctx.metadata, ctx.execute,
                                           DecideClose()));
        return http::JsonResponse(
            200, CommandBody(id, outcome.version, outcome.position, nullptr));
      });
}

http::Response BankApp::RequestTransfer(const http::Request& request) const {
  return runner_.Run(
      request, "transfer",
      [&](EventStore& store,
          const CommandContext& ctx) -> absl::StatusOr<http::Response> {
        rapidjson::Document doc;
        RETURN_IF_ERROR(http::ParseJsonBody(request.body(), &doc));
        RETURN_IF_ERROR(http::RejectUnknownFields(
            doc, {"from", "to", "amount", "transfer_id"}));
        ASSIGN_OR_RETURN(std::string from,
                         http::RequiredString(doc, "from", kIdLength));
        ASSIGN_OR_RETURN(std::string to,
                         http::RequiredString(doc, "to", kIdLength));
        RETURN_IF_ERROR(ValidateAccountId(from));
        RETURN_IF_ERROR(ValidateAccountId(to));
        ASSIGN_OR_RETURN(int64_t amount,
                         http::RequiredInt64(doc, "amount", kAmountBounds));
        ASSIGN_OR_RETURN(absl::optional<std::string> given,
                         http::OptionalString(doc, "transfer_id", kIdLength));
        const std::string id = given.has_value() ? *given : cqrs::NewUuid();
        RETURN_IF_ERROR(ValidateTransferId(id));
        if (from == to) {
          return http::InvalidRequest("from and to must be different accounts");
        }
        // The source must exist now; everything else (its balance, the
        // target) is settled by the transfer process.
        ASSIGN_OR_RETURN(auto source, AccountAggregate().Load(store, from));
        if (!source.first.exists) {
          return http::WithErrorCode(
              absl::NotFoundError(
                  absl::StrCat("account '", from, "' does not exist")),
              "account_not_found");
        }
        ASSIGN_OR_RETURN(auto outcome,
                         TransferAggregate().Execute(
                             store, id, ctx.metadata, {},
                             DecideRequestTransfer(from, to, amount,
                                                   source.first.currency)));
        rapidjson::StringBuffer buffer;
        rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
        w.StartObject();
        w.Key("transfer_id");
        w.String(id.data(), static_cast<rapidjson::SizeType>(id.size()));
        w.Key("position");
        const std::string token = outcome.position.ToToken();
        w.String(token.data(), static_cast<rapidjson::SizeType>(token.size()));
        w.EndObject();
        return http::JsonResponse(
            202, std::string(buffer.GetString(), buffer.GetSize()));
      });
}

}  // namespace bank

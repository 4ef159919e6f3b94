// The example bank: wires the event store, the command side and the HTTP
// routes of ../shared/specs/bank-api.md together.
//
//   RETURN_IF_ERROR(bank::BankApp::Migrate(*pool, "bank"));
//   ASSIGN_OR_RETURN(auto app, bank::BankApp::Create(pool.get(), {}));
//   http::Router router;
//   app->RegisterRoutes(router);
//
// Thread-safety: thread-safe after construction; `pool` must outlive the
// app, and the app must outlive the router's use.
#ifndef EXAMPLE_APP_BANK_APP_H_
#define EXAMPLE_APP_BANK_APP_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "commands/http_command.h"
#include "commands/idempotency.h"
#include "eventstore/postgres_event_store.h"
#include "framework/http/router.h"
#include "framework/metrics.h"
#include "framework/pg_pool.h"

namespace bank {

struct BankOptions {
  // PostgreSQL schema of the event store, idempotency keys and read models.
  std::string schema = "bank";
  cqrs::commands::IdempotencyOptions idempotency;
  // When set, commands by outcome and events appended are counted here
  // (cqrs_commands_total, cqrs_events_appended_total). Must outlive the app.
  cqrs::MetricsRegistry* metrics = nullptr;
};

class BankApp {
 public:
  // Creates or upgrades every table the bank needs in `schema`.
  static absl::Status Migrate(cqrs::PgPool& pool, absl::string_view schema);

  // kFailedPrecondition when the schema is not migrated.
  static absl::StatusOr<std::unique_ptr<BankApp>> Create(cqrs::PgPool* pool,
                                                         BankOptions options);
  ~BankApp();

  // Adds the command routes (accounts and POST /transfers), /healthz and
  // /readyz.
  void RegisterRoutes(cqrs::http::Router& router);

  // 200 when the database answers and the schema is migrated, else 503.
  cqrs::http::Response Ready() const;

  // Deletes expired idempotency records now and then every `interval` on a
  // background thread, until the app is destroyed.
  void StartMaintenance(absl::Duration interval = absl::Hours(1));

  cqrs::eventstore::PostgresEventStore& store() { return *store_; }
  // cqrs_events_appended_total, for the other stores of this process that
  // append (the transfer process manager's); null without metrics.
  cqrs::Counter* events_appended() { return events_appended_; }
  cqrs::commands::IdempotencyStore& idempotency() { return *idempotency_; }

 private:
  BankApp(cqrs::PgPool* pool, BankOptions options,
          std::unique_ptr<cqrs::eventstore::PostgresEventStore> store,
          std::unique_ptr<cqrs::commands::PostgresIdempotencyStore> idem,
          cqrs::CounterFamily* commands);

  cqrs::http::Response OpenAccount(const cqrs::http::Request& request) const;
  cqrs::http::Response MoveMoney(const cqrs::http::Request& request,
                                 bool deposit) const;
  cqrs::http::Response CloseAccount(const cqrs::http::Request& request) const;
  cqrs::http::Response RequestTransfer(
      const cqrs::http::Request& request) const;

  cqrs::PgPool* const pool_;
  const BankOptions options_;
  std::unique_ptr<cqrs::eventstore::PostgresEventStore> store_;
  std::unique_ptr<cqrs::commands::PostgresIdempotencyStore> idempotency_;
  cqrs::commands::HttpCommandRunner runner_;
  cqrs::Counter* events_appended_ = nullptr;

  absl::Mutex maintenance_mu_;
  bool stopping_ ABSL_GUARDED_BY(maintenance_mu_) = false;
  std::thread maintenance_;
};

}  // namespace bank

#endif  // EXAMPLE_APP_BANK_APP_H_

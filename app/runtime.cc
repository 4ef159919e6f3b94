// serve, project and migrate: the wiring every app shares.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "app/app_server.h"
#include "app/internal/commands.h"
#include "app/internal/parts.h"
#include "commands/http_command.h"
#include "commands/idempotency.h"
#include "commands/process_manager.h"
#include "eventstore/postgres_event_store.h"
#include "framework/error_classes.h"
#include "framework/heap_trimmer.h"
#include "framework/http/request_metrics.h"
#include "framework/http/server.h"
#include "framework/http/status_mapping.h"
#include "framework/log.h"
#include "framework/migrations.h"
#include "framework/retry.h"
#include "integration/amqp_relay.h"
#include "projections/runner.h"
#include "queries/operations.h"
#include "queries/progress_tracker.h"
#include "queries/query_service.h"

namespace cqrs::app_internal {
namespace {

void SetLogging(const DatabaseFlags& db) {
  SetLogFormat(db.log_format == "json" ? LogFormat::kJson : LogFormat::kText);
}

}  // namespace

absl::StatusOr<std::unique_ptr<eventstore::PostgresEventStore>> OpenStore(
    PgPool* pool, const std::string& schema, Counter* events_appended) {
  eventstore::PostgresEventStoreOptions options;
  options.schema = schema;
  options.events_appended = events_appended;
  return eventstore::PostgresEventStore::Create(pool, std::move(options));
}

// What the runner runs: the read models, then the process managers.
std::vector<projections::Projection> RunnerProjections(
    const App& app, eventstore::PostgresEventStore* store,
    const std::string& schema) {
  std::vector<projections::Projection> all = app.parts().projections;
  for (const commands::ProcessManager& pm : app.parts().process_managers) {
    all.push_back(commands::AsProjection(pm, store, schema));
  }
  return all;
}

absl::StatusOr<Database> OpenDatabase(const std::string& program,
                                      const DatabaseFlags& flags,
                                      int pool_size) {
  Database db;
  std::string url = flags.url;
  if (url.empty()) {
    EmbeddedPostgresOptions options;
    options.data_dir = flags.data_dir;
    options.database = flags.schema;
    ASSIGN_OR_RETURN(db.embedded, EmbeddedPostgres::Start(options));
    Log(LogLevel::kInfo, "embedded PostgreSQL ready",
        {{"program", program},
         {"data_dir", flags.data_dir},
         {"owner", db.embedded->owns_server() ? "this process" : "another"}});
    url = db.embedded->conninfo();
  }
  PgPoolOptions options;
  options.conninfo = url;
  options.max_connections = pool_size;
  ASSIGN_OR_RETURN(db.pool, PgPool::Create(std::move(options)));
  return db;
}

absl::Status MigrateAll(PgPool& pool, const std::string& schema) {
  return MigrateApp(pool, schema);
}

// Migrates at the start of a long-running command (serve, project): a
// database that restarts, ends the session or leaves the commit in doubt
// at that moment is waited for, up to db.start_timeout (--start-timeout, a
// minute by default), instead of ending the process. Migrations are
// idempotent: one that did commit is skipped the next time.
absl::Status MigrateAtStart(const App& app, PgPool& pool,
                            const DatabaseFlags& db) {
  RetryOptions retry;
  retry.retry_for = db.start_timeout;
  retry.before_retry = [&](const absl::Status& s) {
    Log(LogLevel::kWarn, "database not ready at start, retrying",
        {{"program", app.name()}, {"error", std::string(s.message())}});
  };
  return RetryTransient(retry, [&] { return MigrateAll(pool, db.schema); });
}

int Fail(const App& app, const absl::Status& status) {
  std::cerr << app.name() << ": " << status.message() << std::endl;
  return kFailure;
}

int Migrate(App& app, const DatabaseFlags& db) {
  auto database = OpenDatabase(app.name(), db, 2);
  if (!database.ok()) return Fail(app, database.status());
  if (absl::Status s = MigrateAll(*database->pool, db.schema); !s.ok()) {
    return Fail(app, s);
  }
  std::cout << "schema '" << db.schema << "' is up to date" << std::endl;
  return kOk;
}

absl::StatusOr<std::optional<integration::AmqpRelayOptions>> RelayOptionsOf(
    const App& app, const DatabaseFlags& db, const RelayFlags& flags) {
  if (flags.url.empty()) return std::nullopt;
  // The URL may be for the app's consumers (App::Consume) alone.
  if (app.publication().types().empty() && !app.parts().consumers.empty()) {
    return std::nullopt;
  }
  if (app.publication().types().empty()) {
    return absl::FailedPreconditionError(
        "--amqp-url: this app publishes no events (App::Publish) to relay");
  }
  integration::AmqpRelayOptions options;
  options.schema = db.schema;
  options.name = flags.name;
  options.url = flags.url;
  options.exchange = flags.exchange.empty()
                         ? absl::StrCat(app.name(), ".events")
                         : flags.exchange;
  options.declare_exchange = flags.declare_exchange;
  options.mode = flags.mode == "structured"
                     ? integration::CloudEventsAmqpMode::kStructured
                     : integration::CloudEventsAmqpMode::kBinary;
  return options;
}

int Project(App& app, const DatabaseFlags& db,
            const integration::WebhookDelivererOptions& webhooks,
            const RelayFlags& relay_flags) {
  SetLogging(db);
  // Signals are taken synchronously: blocked here, before any thread
  // starts, and awaited below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto database = OpenDatabase(app.name(), db, 8);
  if (!database.ok()) return Fail(app, database.status());
  PgPool* pool = database->pool.get();
  if (absl::Status s = MigrateAtStart(app, *pool, db); !s.ok()) {
    return Fail(app, s);
  }
  auto store = OpenStore(pool, db.schema, nullptr);
  if (!store.ok()) return Fail(app, store.status());
  projections::ProjectionRunnerOptions options;
  options.schema = db.schema;
  auto runner = projections::ProjectionRunner::Create(
      pool, store->get(), RunnerProjections(app, store->get(), db.schema),
      options);
  if (!runner.ok()) return Fail(app, runner.status());
  // The webhooks are delivered where the projections run.
  std::unique_ptr<integration::WebhookDeliverer> deliverer;
  if (!app.publication().types().empty()) {
    integration::WebhookDelivererOptions deliverer_options = webhooks;
    deliverer_options.schema = db.schema;
    auto made = integration::WebhookDeliverer::Create(
        pool, store->get(), &app.publication(), std::move(deliverer_options));
    if (!made.ok()) return Fail(app, made.status());
    deliverer = *std::move(made);
  }
  // The relay to a broker, when one is configured: a bad configuration
  // (unreachable broker, missing exchange) stops the process here.
  std::unique_ptr<integration::AmqpRelay> relay;
  auto relay_options = RelayOptionsOf(app, db, relay_flags);
  if (!relay_options.ok()) return Fail(app, relay_options.status());
  if (relay_options->has_value()) {
    auto made = integration::AmqpRelay::Create(
        pool, store->get(), &app.publication(), **std::move(relay_options));
    if (!made.ok()) return Fail(app, made.status());
    relay = *std::move(made);
  }
  HeapTrimmer trimmer;
  (*runner)->Start();
  if (deliverer != nullptr) deliverer->Start();
  if (relay != nullptr) relay->Start();
  Log(LogLevel::kInfo, "projector running",
      {{"program", app.name()},
       {"schema", db.schema},
       {"webhooks", deliverer != nullptr ? "here" : "none"},
       {"relay", relay != nullptr ? relay_flags.name : "none"}});
  int signal = 0;
  sigwait(&signals, &signal);
  Log(LogLevel::kInfo, "projector stopping", {{"signal", signal}});
  if (relay != nullptr) relay->Stop();
  if (deliverer != nullptr) deliverer->Stop();
  (*runner)->Stop();
  return kOk;
}

int Serve(App& app, const DatabaseFlags& db, const ServeFlags& flags) {
  SetLogging(db);
  auto database = OpenDatabase(
      app.name(), db,
      flags.pool_size > 0 ? flags.pool_size : std::min(flags.workers + 4, 24));
  if (!database.ok()) return Fail(app, database.status());
  if (absl::Status s = MigrateAtStart(app, *database->pool, db); !s.ok()) {
    return Fail(app, s);
  }
  ServeOptions options;
  options.schema = db.schema;
  options.listen = flags.listen;
  options.network_threads = flags.threads;
  options.worker_threads = flags.workers;
  options.query_threads = flags.query_threads;
  options.max_connections = flags.max_connections;
  options.max_queued_requests = flags.max_queued_requests;
  options.idempotency_retention = absl::Hours(flags.idempotency_hours);
  options.run_projections = !flags.no_projections;
  options.authentication = !flags.no_auth;
  options.allow_unauthenticated_network = flags.allow_unauthenticated_network;
  options.auth_max_failures = flags.auth_max_failures;
  options.tls_cert_file = flags.tls_cert;
  options.tls_key_file = flags.tls_key;
  options.webhooks = flags.webhooks;
  options.amqp_url = flags.relay.url;
  auto relay = RelayOptionsOf(app, db, flags.relay);
  if (!relay.ok()) return Fail(app, relay.status());
  if (relay->has_value()) options.relay = **std::move(relay);
  HeapTrimmer trimmer;
  auto server = AppServer::Start(app, database->pool.get(), options);
  if (!server.ok()) return Fail(app, server.status());
  Log(LogLevel::kInfo, "listening",
      {{"program", app.name()},
       {"address", flags.listen},
       {"port", (*server)->port()},
       {"projections", flags.no_projections ? "elsewhere" : "here"},
       {"authentication", flags.no_auth ? "off" : "on"}});
  absl::Status ran = (*server)->Run();
  // Stopped in order; the pool goes last, with `database`.
  server->reset();
  if (!ran.ok()) return Fail(app, ran);
  Log(LogLevel::kInfo, "stopped", {{"program", app.name()}});
  return kOk;
}

}  // namespace cqrs::app_internal

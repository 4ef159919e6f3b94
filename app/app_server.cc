#include "app/app_server.h"

#include <algorithm>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "app/internal/commands.h"
#include "app/internal/inbound.h"
#include "app/internal/parts.h"
#include "commands/http_command.h"
#include "commands/idempotency.h"
#include "commands/process_manager.h"
#include "framework/auth/api_keys.h"
#include "framework/auth/scopes.h"
#include "framework/http/request_metrics.h"
#include "framework/http/server.h"
#include "framework/http/status_mapping.h"
#include "framework/log.h"
#include "framework/migrations.h"
#include "integration/amqp_relay.h"
#include "integration/webhook_store.h"
#include "queries/operations.h"
#include "queries/query_service.h"

namespace cqrs {
namespace {

// Deletes expired Idempotency-Key records every hour until destroyed.
class Maintenance {
 public:
  explicit Maintenance(commands::PostgresIdempotencyStore* idempotency)
      : thread_([this, idempotency] { Loop(idempotency); }) {}
  ~Maintenance() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    thread_.join();
  }

 private:
  void Loop(commands::PostgresIdempotencyStore* idempotency) {
    while (true) {
      absl::StatusOr<int64_t> purged = idempotency->PurgeExpired();
      if (!purged.ok()) {
        Log(LogLevel::kWarn, "idempotency purge failed",
            {{"error", purged.status().ToString()}});
      } else if (*purged > 0) {
        Log(LogLevel::kInfo, "idempotency records purged",
            {{"count", *purged}});
      }
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Hours(1))) {
        return;
      }
    }
  }

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

std::map<std::string, int> Versions(const App& app) {
  std::map<std::string, int> versions;
  for (const auto& p : app.parts().projections) versions[p.name] = p.version;
  for (const auto& pm : app.parts().process_managers) {
    versions[pm.name] = pm.version;
  }
  return versions;
}

http::Response Ready(PgPool& pool, const std::string& program,
                     const std::string& schema) {
  for (absl::string_view component : {"eventstore", "commands"}) {
    absl::StatusOr<int> version = MigratedVersion(pool, schema, component);
    if (!version.ok()) {
      return http::ErrorResponse(503, "not_ready",
                                 "the database is not reachable");
    }
    if (*version == 0) {
      return http::ErrorResponse(
          503, "not_ready",
          absl::StrCat("the schema is not migrated (", component, "): run `",
                       program, " migrate`"));
    }
  }
  return http::JsonResponse(200, "{\"status\":\"ready\"}");
}

}  // namespace

absl::Status MigrateApp(PgPool& pool, absl::string_view schema) {
  RETURN_IF_ERROR(eventstore::PostgresEventStore::Migrate(pool, schema));
  RETURN_IF_ERROR(projections::ProjectionRunner::Migrate(pool, schema));
  RETURN_IF_ERROR(commands::MigrateProcessManagers(pool, schema));
  RETURN_IF_ERROR(auth::ApiKeyStore::Migrate(pool, schema));
  RETURN_IF_ERROR(integration::WebhookStore::Migrate(pool, schema));
  RETURN_IF_ERROR(integration::AmqpRelay::Migrate(pool, schema));
  return commands::PostgresIdempotencyStore::Migrate(pool, schema);
}

// Declared in dependency order: destroyed in reverse.
struct AppServer::Parts {
  App* app = nullptr;
  PgPool* pool = nullptr;
  std::string schema;
  bool run_projections = true;
  MetricsRegistry metrics;
  std::unique_ptr<http::RequestMetrics> request_metrics;
  std::unique_ptr<eventstore::PostgresEventStore> store;
  // GET /events?wait= and /events/stream; null when nothing is published.
  std::unique_ptr<integration::FeedHub> feed_hub;
  std::unique_ptr<integration::FeedReadAhead> feed_read_ahead;
  // Null when nothing is published; the deliverer also when the
  // projections run elsewhere.
  std::unique_ptr<integration::WebhookStore> webhooks;
  std::unique_ptr<integration::WebhookDeliverer> webhook_deliverer;
  // Null unless options.relay.url is set and the projections run here.
  std::unique_ptr<integration::AmqpRelay> relay;
  std::unique_ptr<commands::PostgresIdempotencyStore> idempotency;
  std::unique_ptr<commands::HttpCommandRunner> commands;
  std::unique_ptr<queries::ProgressTracker> tracker;
  std::unique_ptr<projections::ProjectionRunner> runner;
  std::unique_ptr<queries::QueryService> queries;
  std::unique_ptr<queries::Operations> operations;
  std::unique_ptr<auth::ApiKeyStore> keys;
  std::unique_ptr<auth::ApiKeyAuthenticator> authenticator;
  std::string openapi;
  std::string asyncapi;  // empty: the app publishes nothing
  AppRuntime runtime;
  http::Router router;
  std::unique_ptr<Maintenance> maintenance;
  std::unique_ptr<http::Server> server;
  // App::Consume's consumers; empty without ServeOptions::amqp_url.
  std::vector<std::unique_ptr<app_internal::Inbound>> inbound;
  bool stopped = false;
};

absl::StatusOr<std::unique_ptr<AppServer>> AppServer::Start(
    App& app, PgPool* pool, ServeOptions options) {
  const std::vector<std::string> errors = app.Finalize();
  if (!errors.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("definition errors: ", absl::StrJoin(errors, "; ")));
  }
  if (!options.authentication) {
    ASSIGN_OR_RETURN(const bool loopback,
                     http::IsLoopbackListenAddress(options.listen));
    if (!loopback && !options.allow_unauthenticated_network) {
      return absl::InvalidArgumentError(absl::StrCat(
          "refusing to serve ", options.listen,
          " without authentication: anyone who reaches it could call every "
          "route. Leave authentication on, listen on 127.0.0.1, or say "
          "--allow-unauthenticated-network"));
    }
    Log(LogLevel::kWarn, "authentication is off: every route is open",
        {{"address", options.listen}});
  }
  auto p = std::make_unique<Parts>();
  p->app = &app;
  p->pool = pool;
  p->schema = options.schema.empty() ? app.options().schema : options.schema;
  p->run_projections = options.run_projections;
  const std::string& schema = p->schema;
  ASSIGN_OR_RETURN(p->request_metrics,
                   http::RequestMetrics::Create(&p->metrics));
  ASSIGN_OR_RETURN(CounterFamily * commands_counter,
                   commands::CommandsCounter(p->metrics));
  ASSIGN_OR_RETURN(CounterFamily * appended,
                   p->metrics.AddCounter(
                       "cqrs_events_appended_total",
                       "Events appended to the event store by this process."));
  ASSIGN_OR_RETURN(p->store, app_internal::OpenStore(
                                 pool, schema, &appended->WithLabels({})));
  commands::IdempotencyOptions idempotency_options;
  idempotency_options.retention = options.idempotency_retention;
  ASSIGN_OR_RETURN(p->idempotency,
                   commands::PostgresIdempotencyStore::Create(
                       pool, p->store.get(), schema, idempotency_options));
  p->commands = std::make_unique<commands::HttpCommandRunner>(
      p->store.get(), p->idempotency.get(), commands_counter);
  p->runtime.pool = pool;
  p->runtime.store = p->store.get();
  p->runtime.idempotency = p->idempotency.get();
  p->runtime.commands = p->commands.get();
  p->runtime.metrics = &p->metrics;
  p->runtime.schema = schema;

  queries::ProgressTrackerOptions tracker_options;
  tracker_options.schema = schema;
  tracker_options.refresh_interval = options.poll_interval;
  ASSIGN_OR_RETURN(p->tracker,
                   queries::ProgressTracker::Create(pool, tracker_options));
  projections::ProjectionRunnerOptions runner_options;
  runner_options.schema = schema;
  runner_options.poll_interval = options.poll_interval;
  runner_options.before_commit_for_testing =
      std::move(options.before_commit_for_testing);
  runner_options.on_progress = [t = p->tracker.get()](absl::string_view name,
                                                      eventstore::Position at) {
    t->Record(name, at);
  };
  // Created even when the projections run elsewhere: it creates the read
  // models' tables, so that queries find them before a projector runs.
  ASSIGN_OR_RETURN(p->runner, projections::ProjectionRunner::Create(
                                  pool, p->store.get(),
                                  app_internal::RunnerProjections(
                                      app, p->store.get(), schema),
                                  runner_options));

  const int max_queued =
      options.max_queued_requests > 0
          ? options.max_queued_requests
          : std::max(1, std::min(256, options.max_connections / 4));
  queries::QueryServiceOptions query_options;
  query_options.conninfo = pool->conninfo();
  query_options.threads = options.query_threads;
  query_options.batch_concurrency = options.batch_concurrency;
  query_options.max_queued = static_cast<size_t>(max_queued);
  query_options.schema = schema;
  ASSIGN_OR_RETURN(p->queries, queries::QueryService::Create(p->tracker.get(),
                                                             query_options));

  queries::OperationsOptions ops;
  ops.pool = pool;
  ops.schema = schema;
  ops.event_schema = schema;
  ops.metrics = &p->metrics;
  ops.pools = {{"commands", [pool] { return pool->stats(); }},
               {"queries", [q = p->queries.get()] { return q->pool_stats(); }}};
  ops.tracker = p->tracker.get();
  ops.projection_versions = Versions(app);
  ASSIGN_OR_RETURN(p->operations, queries::Operations::Create(std::move(ops)));

  // Routes.
  http::RouteOptions command_route;
  command_route.require_json_body = true;
  command_route.access =
      http::RouteAccess::Scope(std::string(auth::kCommandsScope));
  for (const App::Parts::CommandRoute& c : app.parts().command_routes) {
    const std::string name = c.name ? c.name() : "command";
    const App::RawCommand* handler = &c.handler;
    const commands::HttpCommandRunner* runner = p->commands.get();
    p->router.Add(
        c.method, c.pattern,
        [handler, runner, name](const http::Request& request) {
          return runner->Run(request, name,
                             [&](eventstore::EventStore& s,
                                 const commands::CommandContext& ctx) {
                               return (*handler)(request, s, ctx);
                             });
        },
        command_route);
  }
  for (const App::Parts::PlainRoute& r : app.parts().plain_routes) {
    http::RouteOptions route_options = r.options;
    if (route_options.access.kind == http::RouteAccess::Kind::kUndeclared) {
      route_options.access = http::RouteAccess::Scope(std::string(
          r.method == "GET" || r.method == "HEAD" ? auth::kQueriesScope
                                                  : auth::kCommandsScope));
    }
    p->router.Add(r.method, r.pattern, r.handler, route_options);
  }
  for (const queries::QueryRoute& q : app.parts().queries) {
    p->queries->Add(p->router, q);
  }
  p->operations->RegisterRoutes(p->router);
  ASSIGN_OR_RETURN(p->keys, auth::ApiKeyStore::Create(pool, schema));
  app_internal::AddKeyRoutes(app, p->keys.get(), p->router);
  if (!app.publication().types().empty()) {
    integration::FeedHubOptions hub_options = options.event_stream;
    hub_options.poll_interval = options.poll_interval;
    ASSIGN_OR_RETURN(
        GaugeFamily * streams,
        p->metrics.AddGauge("cqrs_event_stream_subscribers",
                            "Open GET /events/stream connections."));
    ASSIGN_OR_RETURN(
        CounterFamily * sent,
        p->metrics.AddCounter("cqrs_event_stream_events_sent_total",
                              "Events written to GET /events/stream clients."));
    ASSIGN_OR_RETURN(
        CounterFamily * closed,
        p->metrics.AddCounter(
            "cqrs_event_stream_closed_total",
            "Streams the server closed, by reason (too_slow: the client "
            "fell more than the buffer bound behind).",
            {"reason"}));
    hub_options.subscribers_gauge = &streams->WithLabels({});
    hub_options.events_sent = &sent->WithLabels({});
    hub_options.closed_too_slow = &closed->WithLabels({"too_slow"});
    p->feed_hub = std::make_unique<integration::FeedHub>(
        p->store.get(), &app.publication(), hub_options,
        integration::ChangeWaitOn(pool->conninfo(), schema));
  }
  if (!app.publication().types().empty()) {
    p->feed_read_ahead = std::make_unique<integration::FeedReadAhead>(
        p->store.get(), &app.publication());
  }
  app_internal::AddEventsRoute(app, p->feed_read_ahead.get(), p->feed_hub.get(),
                               p->router);
  if (!app.publication().types().empty()) {
    ASSIGN_OR_RETURN(p->webhooks, app_internal::OpenWebhookStore(
                                      pool, schema, app, p->store.get(),
                                      options.webhooks.allow_networks));
    app_internal::AddWebhookRoutes(p->webhooks.get(), p->router);
    if (p->run_projections) {
      integration::WebhookDelivererOptions deliverer_options = options.webhooks;
      deliverer_options.schema = schema;
      deliverer_options.poll_interval = options.poll_interval;
      deliverer_options.metrics = &p->metrics;
      ASSIGN_OR_RETURN(p->webhook_deliverer,
                       integration::WebhookDeliverer::Create(
                           pool, p->store.get(), &app.publication(),
                           std::move(deliverer_options)));
    }
  }
  if (!options.relay.url.empty() && p->run_projections) {
    if (app.publication().types().empty()) {
      return absl::FailedPreconditionError(
          "the AMQP relay: this app publishes no events (App::Publish)");
    }
    integration::AmqpRelayOptions relay_options = options.relay;
    relay_options.schema = schema;
    relay_options.metrics = &p->metrics;
    ASSIGN_OR_RETURN(p->relay, integration::AmqpRelay::Create(
                                   pool, p->store.get(), &app.publication(),
                                   std::move(relay_options)));
  }
  http::RouteOptions health;
  health.execution = http::Execution::kNetworkThread;
  health.operations = true;
  health.access = http::RouteAccess::Open();
  p->router.Add(
      "GET", "/healthz",
      [](const http::Request&) {
        return http::JsonResponse(200, "{\"status\":\"ok\"}");
      },
      health);
  http::RouteOptions readiness;
  readiness.operations = true;
  readiness.access = http::RouteAccess::Open();
  p->router.Add(
      "GET", "/readyz",
      [pool, program = app.name(), schema](const http::Request&) {
        return Ready(*pool, program, schema);
      },
      readiness);
  p->openapi = app.parts().openapi.empty() ? app_internal::GeneratedOpenApi(app)
                                           : app.parts().openapi;
  http::RouteOptions inline_route;
  inline_route.execution = http::Execution::kNetworkThread;
  inline_route.access = http::RouteAccess::Open();
  p->router.Add(
      "GET", "/openapi.json",
      [doc = &p->openapi](const http::Request&) {
        return http::JsonResponse(200, *doc);
      },
      inline_route);
  if (!app.publication().types().empty()) {
    p->asyncapi = app_internal::GeneratedAsyncApi(app);
    p->router.Add(
        "GET", "/asyncapi.json",
        [doc = &p->asyncapi](const http::Request&) {
          return http::JsonResponse(200, *doc);
        },
        inline_route);
  }

  http::ServerOptions server_options;
  server_options.listen_address = options.listen;
  server_options.network_threads = options.network_threads;
  server_options.worker_threads = options.worker_threads;
  server_options.max_connections = options.max_connections;
  server_options.max_queued_requests = static_cast<size_t>(max_queued);
  if (options.authentication) {
    p->authenticator =
        std::make_unique<auth::ApiKeyAuthenticator>(p->keys.get());
    server_options.auth.authenticator = p->authenticator.get();
    server_options.auth.max_failures = options.auth_max_failures;
    server_options.auth.failure_window = options.auth_failure_window;
  }
  server_options.tls_cert_file = options.tls_cert_file;
  server_options.tls_key_file = options.tls_key_file;
  server_options.on_request_done =
      [m = p->request_metrics.get()](const http::RequestInfo& info) {
        m->Record(info);
      };
  // Shutdown answers parked read-your-writes queries (503 with
  // Retry-After) and long-polls (their page so far) at once, and ends event
  // streams, before the server waits for requests in flight.
  server_options.on_shutdown = [t = p->tracker.get(), h = p->feed_hub.get()] {
    t->StopWaiting();
    if (h != nullptr) h->Stop();
  };
  ASSIGN_OR_RETURN(p->server, http::Server::Create(server_options, &p->router));
  if (!options.amqp_url.empty() && !app.parts().consumers.empty()) {
    app_internal::InboundOptions inbound_options;
    inbound_options.url = options.amqp_url;
    RETURN_IF_ERROR(app_internal::InboundCounters(p->metrics, inbound_options));
    for (const auto& consumer : app.parts().consumers) {
      ASSIGN_OR_RETURN(auto inbound,
                       app_internal::Inbound::Create(
                           consumer->spec(), &p->router, inbound_options));
      p->inbound.push_back(std::move(inbound));
    }
  }

  p->maintenance = std::make_unique<Maintenance>(p->idempotency.get());
  p->tracker->Start();
  if (p->run_projections) p->runner->Start();
  if (p->feed_hub != nullptr) p->feed_hub->Start();
  if (p->webhook_deliverer != nullptr) p->webhook_deliverer->Start();
  if (p->relay != nullptr) p->relay->Start();
  for (const auto& inbound : p->inbound) inbound->Start();
  std::unique_ptr<AppServer> server(new AppServer(std::move(p)));
  RETURN_IF_ERROR(server->parts_->server->Start());
  return server;
}

AppServer::AppServer(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}

AppServer::~AppServer() { Stop(); }

int AppServer::port() const { return parts_->server->port(); }

absl::Status AppServer::Run() {
  absl::Status ran = parts_->server->Run();
  Stop();
  return ran;
}

void AppServer::Stop() {
  if (parts_->stopped) return;
  parts_->stopped = true;
  // Unacknowledged messages go back to their queues.
  for (const auto& inbound : parts_->inbound) inbound->Stop();
  parts_->server->Shutdown();  // answers parked queries, drains
  if (parts_->feed_hub != nullptr) parts_->feed_hub->Stop();
  if (parts_->relay != nullptr) parts_->relay->Stop();
  if (parts_->webhook_deliverer != nullptr) parts_->webhook_deliverer->Stop();
  if (parts_->run_projections) parts_->runner->Stop();
  parts_->tracker->Stop();
  parts_->maintenance.reset();
  // The query threads go before the tracker whose waiters point at them.
  parts_->queries.reset();
}

eventstore::PostgresEventStore& AppServer::store() { return *parts_->store; }
integration::FeedHub* AppServer::event_hub() { return parts_->feed_hub.get(); }
MetricsRegistry& AppServer::metrics() { return parts_->metrics; }
queries::ProgressTracker& AppServer::tracker() { return *parts_->tracker; }
projections::ProjectionRunner* AppServer::projector() {
  return parts_->run_projections ? parts_->runner.get() : nullptr;
}
integration::WebhookDeliverer* AppServer::webhook_deliverer() {
  return parts_->webhook_deliverer.get();
}
const http::Router& AppServer::router() const { return parts_->router; }
const AppRuntime& AppServer::runtime() const { return parts_->runtime; }

}  // namespace cqrs

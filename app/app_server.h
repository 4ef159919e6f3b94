// A running app: what `APP serve` runs, for programs and tests that run an
// app in-process (App::Main's `serve` is OpenDatabase, migrate, Start, Run).
//
//   ASSIGN_OR_RETURN(auto server, cqrs::AppServer::Start(app, pool, {}));
//   ... requests to 127.0.0.1:server->port() ...
//   server->Stop();   // or Run(): until SIGINT or SIGTERM
//
// Start() builds the parts (one event store, the idempotency store and its
// hourly purge, the projection runner feeding the progress tracker, the
// query service, the operations endpoints, the router with every declared
// route, /healthz, /readyz, /openapi.json, and /events, /asyncapi.json,
// the /webhooks routes and the webhook deliverer when the app publishes
// events, the AMQP consumers of App::Consume with ServeOptions::amqp_url)
// and starts them and the HTTP server. Stop() shuts down in order: the
// AMQP consumers stop (unacknowledged messages go back to their queues),
// parked read-your-writes queries are answered 503 at once, requests in
// flight drain, then the event streams, the webhook deliverer, the
// projections, the tracker and the query threads stop.
//
// Thread-safety: Start/Run/Stop from one thread (Stop may also come from
// another while Run blocks). `app` and `pool` must outlive the server.
#ifndef APP_APP_SERVER_H_
#define APP_APP_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "app/app.h"
#include "eventstore/position.h"
#include "eventstore/postgres_event_store.h"
#include "framework/http/router.h"
#include "framework/metrics.h"
#include "framework/pg_pool.h"
#include "integration/amqp_relay.h"
#include "integration/feed_hub.h"
#include "integration/webhook_deliverer.h"
#include "projections/runner.h"
#include "queries/progress_tracker.h"

namespace cqrs {

struct ServeOptions {
  // The app's schema (migrated: MigrateApp()). Empty: the app's default.
  std::string schema;
  // HOST:PORT; port 0 picks a free one (AppServer::port()).
  std::string listen = "127.0.0.1:0";
  int network_threads = 2;
  int worker_threads = 16;
  int query_threads = 8;
  // Batches of one batched query route at once (0: query_threads).
  int batch_concurrency = 2;
  int max_connections = 1024;
  // Requests waiting for a worker (and queries for a query thread) beyond
  // this get 503 overloaded; 0: min(256, max_connections / 4).
  int max_queued_requests = 0;
  // HTTPS: PEM certificate (chain) and key files, both or neither
  // (http::ServerOptions::tls_cert_file); empty: plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
  absl::Duration idempotency_retention = absl::Hours(24);
  // Run the projections and process managers here (`serve` without
  // --no-projections); otherwise reads follow another process's.
  bool run_projections = true;
  // Bearer tokens (APP keys create) and per-route scopes on every route but
  // /healthz, /readyz, /openapi.json and /asyncapi.json
  // (framework/http/auth.h). Without
  // authentication every route is open: Start() then refuses a listen
  // address that is not loopback unless allow_unauthenticated_network.
  bool authentication = true;
  bool allow_unauthenticated_network = false;
  // Failed attempts per client address and window before 429.
  int auth_max_failures = 20;
  absl::Duration auth_failure_window = absl::Minutes(1);
  // GET /events/stream and long-polls (integration/feed_hub.h): buffer
  // bound per client, heartbeat, retry hint, catch-up pool. Its
  // poll_interval is the one below.
  integration::FeedHubOptions event_stream;
  // Webhook delivery (integration/webhook_deliverer.h), run here when the
  // app publishes events and run_projections is set. Its schema,
  // poll_interval and metrics are filled in by Start(); its allow_networks
  // also decide which endpoint URLs POST /webhooks accepts.
  integration::WebhookDelivererOptions webhooks;
  // The relay to a RabbitMQ broker (integration/amqp_relay.h), run here
  // when its url is set and run_projections is; Start() fails with the
  // relay's configuration error. Its schema and metrics are filled in by
  // Start().
  integration::AmqpRelayOptions relay;
  // The RabbitMQ broker whose queues the app's consumers (App::Consume)
  // apply as commands; empty: the consumers do not run. Start() declares
  // their queues and fails when the broker cannot be reached.
  std::string amqp_url;
  // For tests: how often the runner polls without a notification, the
  // tracker re-reads the checkpoints and the event stream reads the store
  // without a notification.
  absl::Duration poll_interval = absl::Seconds(1);
  // For tests: ProjectionRunnerOptions::before_commit_for_testing.
  std::function<absl::Status(absl::string_view projection,
                             eventstore::Position last)>
      before_commit_for_testing;
};

// Creates or upgrades every table an app needs in `schema` (idempotent).
absl::Status MigrateApp(PgPool& pool, absl::string_view schema);

class AppServer {
 public:
  // Errors: kFailedPrecondition for definition errors of `app` (all of
  // them in the message) or an unmigrated schema; kInvalidArgument for bad
  // options (TLS files that cannot be loaded included); kUnavailable when
  // the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<AppServer>> Start(App& app,
                                                          PgPool* pool,
                                                          ServeOptions options);
  ~AppServer();  // Stop()

  // The bound port.
  int port() const;
  // Blocks until SIGINT or SIGTERM (or Stop() from another thread), then
  // stops as Stop() does. With TLS, SIGHUP meanwhile reloads the
  // certificate and key (http::Server::ReloadTls()).
  absl::Status Run();
  // Graceful, ordered shutdown (see above); idempotent.
  void Stop();

  eventstore::PostgresEventStore& store();
  // The event stream's tail reader; nullptr when the app publishes nothing.
  integration::FeedHub* event_hub();
  MetricsRegistry& metrics();
  queries::ProgressTracker& tracker();
  // Null unless the projections run here.
  projections::ProjectionRunner* projector();
  // Null unless the app publishes events and the projections run here.
  integration::WebhookDeliverer* webhook_deliverer();
  const http::Router& router() const;
  // What raw routes get (AppRuntime).
  const AppRuntime& runtime() const;

 private:
  struct Parts;
  explicit AppServer(std::unique_ptr<Parts> parts);
  std::unique_ptr<Parts> parts_;
};

}  // namespace cqrs

#endif  // APP_APP_SERVER_H_

// The subcommands every app gets (App::Main): what they do, apart from how
// the command line is parsed (cli.cc).
#ifndef APP_INTERNAL_COMMANDS_H_
#define APP_INTERNAL_COMMANDS_H_

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "app/app.h"
#include "eventstore/postgres_event_store.h"
#include "framework/auth/api_keys.h"
#include "framework/embedded_postgres.h"
#include "framework/http/router.h"
#include "framework/metrics.h"
#include "framework/pg_pool.h"
#include "integration/amqp_relay.h"
#include "integration/feed_hub.h"
#include "integration/feed_read_ahead.h"
#include "integration/webhook_deliverer.h"
#include "integration/webhook_store.h"

namespace cqrs::app_internal {

inline constexpr int kOk = 0;
inline constexpr int kFailure = 1;
inline constexpr int kUsage = 2;

struct DatabaseFlags {
  std::string url;  // --database-url or $DATABASE_URL; empty: embedded
  std::string data_dir;
  std::string schema;
  std::string log_format = "text";
  // serve and project: how long to wait at start for a database that
  // cannot be reached or is restarting (--start-timeout).
  absl::Duration start_timeout = absl::Minutes(1);
};

// The AMQP relay of `serve` and `project` (--amqp-*), and `relay status`.
struct RelayFlags {
  std::string url;  // --amqp-url or $AMQP_URL; empty: no relay
  std::string exchange;
  bool declare_exchange = false;
  std::string mode = "binary";  // binary, structured
  std::string name = "default";
  bool json = false;  // relay status --json
};

struct ServeFlags {
  std::string listen;
  int threads = 2;
  // Commands block their worker for the append, so the workers bound the
  // appends that group commit can join into one statement (issue 19: 32
  // workers gave about 0.65x of the raw INSERT rate where 16 gave 0.5x).
  int workers = 32;
  int query_threads = 8;
  int pool_size = 0;  // 0: min(workers + 4, 24)
  int max_connections = 1024;
  int max_queued_requests = 0;  // 0: min(256, max_connections / 4)
  int idempotency_hours = 24;
  bool no_projections = false;
  bool no_auth = false;
  bool allow_unauthenticated_network = false;
  int auth_max_failures = 20;
  std::string tls_cert;  // --tls-cert; with --tls-key or neither
  std::string tls_key;
  // --webhook-*: how this process delivers webhooks (schema, poll interval
  // and metrics are AppServer's).
  integration::WebhookDelivererOptions webhooks;
  RelayFlags relay;
};

struct ProjectionsFlags {
  std::string command;  // list, status, rebuild, parked, replay-parked, resume
  std::vector<std::string> names;
  bool all = false;
  bool json = false;
  bool fast = false;
  // rebuild: how long it goes on resuming after the database went away.
  std::string retry_for = "5m";
};

struct WebhooksFlags {
  // create, list, show, update, delete, disable, enable, rotate-secret,
  // attempts, replay, parked, replay-parked, skip-parked, status
  std::string command;
  std::string id;
  std::optional<std::string> url;
  std::vector<std::string> types;
  std::vector<std::string> categories;
  std::optional<std::string> description;
  bool clear_types = false;
  bool clear_categories = false;
  int limit = 100;
  std::string from_position;
  std::string from_time;
  std::vector<std::string> allow_networks;
  bool json = false;
};

struct KeysFlags {
  std::string command;  // create, list, revoke
  std::string name;
  std::string scopes;  // comma-separated
  std::string expires_in;
  std::string id;
  bool json = false;
};

// The database, and the embedded cluster it runs in when no URL was given
// (kept running while this lives).
struct Database {
  std::unique_ptr<EmbeddedPostgres> embedded;
  std::unique_ptr<PgPool> pool;
};
absl::StatusOr<Database> OpenDatabase(const std::string& program,
                                      const DatabaseFlags& flags,
                                      int pool_size);

// The app's event store in `schema`; `events_appended` may be null.
absl::StatusOr<std::unique_ptr<eventstore::PostgresEventStore>> OpenStore(
    PgPool* pool, const std::string& schema, Counter* events_appended);

// What a runner runs: the read models, then the process managers
// (appending through `store`).
std::vector<projections::Projection> RunnerProjections(
    const App& app, eventstore::PostgresEventStore* store,
    const std::string& schema);

// Creates or upgrades every table the app's parts need in `schema`.
absl::Status MigrateAll(PgPool& pool, const std::string& schema);

// "<program>: <message>" on stderr; returns kFailure.
int Fail(const App& app, const absl::Status& status);

int Serve(App& app, const DatabaseFlags& db, const ServeFlags& flags);
int Project(App& app, const DatabaseFlags& db,
            const integration::WebhookDelivererOptions& webhooks,
            const RelayFlags& relay);
// The relay's options from its flags; nullopt without --amqp-url.
// kFailedPrecondition when the app publishes nothing.
absl::StatusOr<std::optional<integration::AmqpRelayOptions>> RelayOptionsOf(
    const App& app, const DatabaseFlags& db, const RelayFlags& flags);
// `APP relay status [--json]`.
int Relay(App& app, const DatabaseFlags& db, const RelayFlags& flags);
int Migrate(App& app, const DatabaseFlags& db);
int Projections(App& app, const DatabaseFlags& db,
                const ProjectionsFlags& flags);
int Keys(App& app, const DatabaseFlags& db, const KeysFlags& flags);
int Webhooks(App& app, const DatabaseFlags& db, const WebhooksFlags& flags);

// The scopes the framework's routes use and any the app's own routes
// declare: what `keys create` and POST /keys accept.
std::set<std::string> KnownScopes(const App& app);

// GET /keys, POST /keys, POST /keys/{id}/revoke (scope admin) on `router`.
// `keys` must outlive the router's server.
void AddKeyRoutes(const App& app, auth::ApiKeyStore* keys,
                  http::Router& router);

// GET /events and GET /events/stream (scope events) when the app publishes
// events (App::Publish): pages of integration/feed.h read through `feed`,
// their long-poll (wait=) and Server-Sent Events through `hub`. `feed` and
// `hub` must outlive the router's server.
void AddEventsRoute(const App& app, integration::FeedReadAhead* feed,
                    integration::FeedHub* hub, http::Router& router);

// The /webhooks routes (scope admin; integration/webhook_store.h) on
// `router`. `hooks` must outlive the router's server.
void AddWebhookRoutes(integration::WebhookStore* hooks, http::Router& router);

// The JSON Schema of a /webhooks request body: "CreateWebhook",
// "UpdateWebhook" or "ReplayWebhook".
std::string WebhookBodySchema(absl::string_view name);

// WebhookStoreOptions::check_url of an app: the URL's form, and (when the
// SSRF checks land) its resolved addresses against the private ranges but
// `allow_networks` (CIDRs).
std::function<absl::Status(absl::string_view)> WebhookUrlCheck(
    const std::vector<std::string>& allow_networks);

// Replay() from a position token, or ReplayFrom() an RFC 3339 time when
// `from_position` is empty: what POST /webhooks/{id}/replay and `webhooks
// replay` do. kInvalidArgument (invalid_request) for a malformed token or
// time.
absl::StatusOr<integration::WebhookEndpoint> ReplayEndpoint(
    integration::WebhookStore& hooks, absl::string_view id,
    absl::string_view from_position, absl::string_view from_time);

// The store an app's routes and commands use: `publication` and `events`
// as WebhookStoreOptions; must outlive it.
absl::StatusOr<std::unique_ptr<integration::WebhookStore>> OpenWebhookStore(
    PgPool* pool, const std::string& schema, const App& app,
    eventstore::PostgresEventStore* events,
    const std::vector<std::string>& allow_networks);

// "30d", or what absl::ParseDuration reads ("12h", "90m"); positive.
absl::StatusOr<absl::Duration> ParseExpiry(absl::string_view text);

// The OpenAPI document generated from the app's routes.
std::string GeneratedOpenApi(const App& app);

// The AsyncAPI 3.0.0 document of the app's published events (App::Publish):
// a message per published type (its CloudEvent, `data` with the JSON Schema
// of the event's shape), the channels /events and /events/stream, a
// receive operation on each, the bearer scheme and its scope `events`.
// Served at GET /asyncapi.json when the app publishes any type.
std::string GeneratedAsyncApi(const App& app);

}  // namespace cqrs::app_internal

#endif  // APP_INTERNAL_COMMANDS_H_

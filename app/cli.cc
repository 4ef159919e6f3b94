// App::Main: the command line every app gets, parsed with CLI11 (Debian's
// libcli11-dev, header-only: subcommands, help on every level, checks and
// environment variables, instead of a parser written by hand).
#include <arpa/inet.h>

#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "app/app.h"
#include "app/internal/commands.h"
#include "app/internal/parts.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "integration/webhook_deliverer.h"

namespace cqrs {
namespace {

using app_internal::DatabaseFlags;
using app_internal::kOk;
using app_internal::kUsage;

// Upper bound of --max-connections and --max-queued-requests.
constexpr int kMaxConnectionsLimit = 1000000;

void AddDatabaseOptions(CLI::App& command, DatabaseFlags& db, const App& app) {
  command
      .add_option("--database-url", db.url,
                  "PostgreSQL connection string (default: $DATABASE_URL, "
                  "else the embedded cluster in --data-dir)")
      ->envname("DATABASE_URL");
  command
      .add_option("--data-dir", db.data_dir,
                  "embedded PostgreSQL cluster directory")
      ->default_str(app.options().data_dir);
  command.add_option("--schema", db.schema, "PostgreSQL schema")
      ->default_str(app.options().schema)
      ->check([](const std::string& value) -> std::string {
        absl::Status valid = ValidateSchemaName(value);
        return valid.ok() ? "" : std::string(valid.message());
      });
}

void AddLogFormat(CLI::App& command, DatabaseFlags& db) {
  command.add_option("--log-format", db.log_format, "log line format")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
}

// --start-timeout of the long-running commands, parsed into
// db.start_timeout once CLI11 has checked it.
void AddStartTimeout(CLI::App& command, std::string& value) {
  command
      .add_option("--start-timeout", value,
                  "how long to wait at start for a database that cannot be "
                  "reached or is restarting, e.g. 30s or 5m (0s: fail at "
                  "once; at most 1h)")
      ->check([](const std::string& text) -> std::string {
        absl::Duration d;
        if (absl::ParseDuration(text, &d) && d >= absl::ZeroDuration() &&
            d <= absl::Hours(1)) {
          return "";
        }
        return absl::StrCat("'", text,
                            "' is not a duration from 0s to 1h (such as "
                            "30s or 5m)");
      })
      ->capture_default_str();
}

// --webhook-* as typed; checked by WebhookOptionsOf().
struct WebhookFlags {
  std::vector<std::string> allow_networks;
  std::string retry_schedule;  // empty: the default
  std::string timeout = "15s";
  int concurrency = 8;
  std::string disable_after = "120h";
  std::string ca_file;
};

void AddAllowNetwork(CLI::App& command, std::vector<std::string>& networks) {
  command
      .add_option("--webhook-allow-network", networks,
                  "a network (CIDR, e.g. 127.0.0.0/8) webhook endpoints may "
                  "be in although it is loopback, private, link-local or "
                  "metadata; repeatable (default: $WEBHOOK_ALLOW_NETWORKS, "
                  "comma-separated)")
      ->delimiter(',')
      ->envname("WEBHOOK_ALLOW_NETWORKS");
}

void AddWebhookOptions(CLI::App& command, WebhookFlags& flags) {
  AddAllowNetwork(command, flags.allow_networks);
  command.add_option(
      "--webhook-retry-schedule", flags.retry_schedule,
      "the delays before each delivery attempt, comma-separated, e.g. "
      "0s,5s,5m,30m,2h,5h,10h,10h (the default); 1 to 50, each at most 48h; "
      "after the last a delivery is parked");
  command
      .add_option("--webhook-timeout", flags.timeout,
                  "time allowed for one delivery attempt (100ms to 5m)")
      ->capture_default_str();
  command
      .add_option("--webhook-concurrency", flags.concurrency,
                  "streams of one endpoint delivered at once")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  command
      .add_option("--webhook-disable-after", flags.disable_after,
                  "disable an endpoint whose attempts all failed this long")
      ->capture_default_str();
  command
      .add_option("--webhook-ca-file", flags.ca_file,
                  "PEM CA bundle to verify endpoints' certificates with "
                  "(default: the system's)")
      ->check(CLI::ExistingFile);
}

// --amqp-*: the relay of published events to a RabbitMQ broker.
void AddRelayOptions(CLI::App& command, app_internal::RelayFlags& flags,
                     const std::string& app_name) {
  command
      .add_option("--amqp-url", flags.url,
                  "also relay the published events to this RabbitMQ broker "
                  "and, with serve, apply its queues the app consumes as "
                  "commands (amqp://user:password@host:port/vhost; "
                  "default: $AMQP_URL; none: neither)")
      ->envname("AMQP_URL");
  command.add_option("--amqp-exchange", flags.exchange,
                     absl::StrCat("the exchange to publish to (default: ",
                                  app_name, ".events)"));
  command
      .add_flag("--amqp-declare-exchange", flags.declare_exchange,
                "declare the exchange (durable topic) when it does not "
                "exist; without it a missing exchange is an error")
      ->disable_flag_override();
  command
      .add_option("--amqp-mode", flags.mode,
                  "CloudEvents AMQP binding: binary (attributes in "
                  "application properties) or structured (the whole "
                  "CloudEvent as the body)")
      ->check(CLI::IsMember({"binary", "structured"}))
      ->capture_default_str();
  command
      .add_option("--amqp-relay-name", flags.name,
                  "the relay's name (its checkpoint)")
      ->capture_default_str();
}

// A CIDR such as 10.0.0.0/8 or fd00::/8.
bool IsCidr(const std::string& text) {
  const std::vector<std::string> parts = absl::StrSplit(text, '/');
  if (parts.size() != 2) return false;
  unsigned char address[16];
  int bits = 0;
  if (inet_pton(AF_INET, parts[0].c_str(), address) == 1) {
    bits = 32;
  } else if (inet_pton(AF_INET6, parts[0].c_str(), address) == 1) {
    bits = 128;
  } else {
    return false;
  }
  int prefix = -1;
  return absl::SimpleAtoi(parts[1], &prefix) && prefix >= 0 && prefix <= bits;
}

absl::Status CheckAllowNetworks(const std::vector<std::string>& networks) {
  for (const std::string& n : networks) {
    if (!IsCidr(n)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--webhook-allow-network '", n,
          "' is not a network in CIDR form such as 127.0.0.0/8 or ::1/128"));
    }
  }
  return absl::OkStatus();
}

// kInvalidArgument with a message for the user when a flag is bad.
absl::StatusOr<integration::WebhookDelivererOptions> WebhookOptionsOf(
    const WebhookFlags& flags) {
  integration::WebhookDelivererOptions options;
  RETURN_IF_ERROR(CheckAllowNetworks(flags.allow_networks));
  options.allow_networks = flags.allow_networks;
  if (!flags.retry_schedule.empty()) {
    options.retry_schedule.clear();
    for (absl::string_view item : absl::StrSplit(flags.retry_schedule, ',')) {
      absl::Duration d;
      if (!absl::ParseDuration(item, &d) || d < absl::ZeroDuration() ||
          d > absl::Hours(48)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--webhook-retry-schedule: '", item,
            "' is not a duration from 0s to 48h (such as 0s, 5s, 5m, 2h)"));
      }
      options.retry_schedule.push_back(d);
    }
    if (options.retry_schedule.size() > 50) {
      return absl::InvalidArgumentError(
          "--webhook-retry-schedule takes at most 50 delays");
    }
  }
  if (!absl::ParseDuration(flags.timeout, &options.attempt_timeout) ||
      options.attempt_timeout < absl::Milliseconds(100) ||
      options.attempt_timeout > absl::Minutes(5)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--webhook-timeout must be a duration from 100ms to 5m, "
                     "not '",
                     flags.timeout, "'"));
  }
  options.concurrency = flags.concurrency;
  if (!absl::ParseDuration(flags.disable_after, &options.disable_after) ||
      options.disable_after <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--webhook-disable-after must be a positive duration "
                     "such as 120h, not '",
                     flags.disable_after, "'"));
  }
  options.ca_file = flags.ca_file;
  return options;
}

// The subcommand path of `argv` that the user typed ("projections rebuild"),
// for "see `APP <path> --help`".
std::string CommandPath(const CLI::App& root, int argc, char** argv) {
  std::string path;
  const CLI::App* at = &root;
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') continue;
    const CLI::App* sub = nullptr;
    for (const CLI::App* s : at->get_subcommands({})) {
      if (s->get_name() == word) sub = s;
    }
    if (sub == nullptr) break;
    absl::StrAppend(&path, word, " ");
    at = sub;
  }
  return path;
}

// The word of `argv` right after the subcommands the user typed, when it
// names no subcommand ("frobnicate" in `APP projections frobnicate`), or "".
std::string UnknownCommand(const CLI::App& root, int argc, char** argv) {
  const CLI::App* at = &root;
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') return "";
    const CLI::App* sub = nullptr;
    for (const CLI::App* s : at->get_subcommands({})) {
      if (s->get_name() == word) sub = s;
    }
    if (sub == nullptr) return at->get_subcommands({}).empty() ? "" : word;
    at = sub;
  }
  return "";
}

}  // namespace

int App::Main(int argc, char** argv) {
#ifdef NDEBUG
  // Debian builds Abseil without NDEBUG, so its Mutex records the order of
  // every lock taken in a global graph and aborts the process on a cycle
  // that could deadlock, even one that never does. That costs every lock
  // of a release build a trip through the graph and could take a server
  // down for nothing; builds without NDEBUG (the sanitizer tests) keep the
  // check.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  return CommandLine(argc, argv, true);
}

int App::CheckCommandLine(int argc, char** argv) {
  return CommandLine(argc, argv, false);
}

int App::CommandLine(int argc, char** argv, bool run) {
  const std::vector<std::string> errors = Finalize();
  if (!errors.empty()) {
    for (const std::string& e : errors) {
      std::cerr << name_ << ": definition error: " << e << "\n";
    }
    return app_internal::kFailure;
  }

  CLI::App cli(options_.description.empty()
                   ? absl::StrCat(name_,
                                  ": an application on the cqrs "
                                  "framework")
                   : options_.description,
               name_);
  cli.require_subcommand(1);
  cli.footer(absl::StrCat(
      "Without --database-url or DATABASE_URL, ", name_,
      " runs on an embedded PostgreSQL cluster kept in --data-dir (default ",
      options_.data_dir,
      ").\nExit codes: 0 success, 1 failure, 2 usage "
      "error."));

  DatabaseFlags db;
  db.data_dir = options_.data_dir;
  db.schema = options_.schema;
  app_internal::ServeFlags serve_flags;
  serve_flags.listen = options_.listen;
  app_internal::ProjectionsFlags projections_flags;

  app_internal::RelayFlags relay_flags;
  CLI::App* serve = cli.add_subcommand(
      "serve",
      "run the HTTP API (and the projections and process managers, unless "
      "--no-projections) until SIGINT or SIGTERM; migrates first");
  serve->add_option("--listen", serve_flags.listen, "HOST:PORT to listen on")
      ->capture_default_str();
  AddDatabaseOptions(*serve, db, *this);
  AddLogFormat(*serve, db);
  std::string start_timeout = "1m";
  AddStartTimeout(*serve, start_timeout);
  serve->add_option("--threads", serve_flags.threads, "network threads")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  serve
      ->add_option("--workers", serve_flags.workers,
                   "threads for commands and other database work")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  serve
      ->add_option("--query-threads", serve_flags.query_threads,
                   "threads (and read-only sessions) for queries")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  serve
      ->add_option("--pool-size", serve_flags.pool_size,
                   "database connections for commands (default: --workers "
                   "+ 4, at most 24)")
      ->check(CLI::Range(1, 1024));
  serve
      ->add_option("--max-connections", serve_flags.max_connections,
                   "open HTTP connections, idle ones included; up to 64 "
                   "beyond it are answered 503 overloaded")
      ->check(CLI::Range(2, kMaxConnectionsLimit))
      ->capture_default_str();
  serve
      ->add_option("--max-queued-requests", serve_flags.max_queued_requests,
                   "requests waiting for a worker beyond this many get 503 "
                   "overloaded (default: 256, at most a quarter of "
                   "--max-connections)")
      ->check(CLI::Range(1, kMaxConnectionsLimit));
  serve
      ->add_option("--idempotency-hours", serve_flags.idempotency_hours,
                   "keep Idempotency-Key records this many hours")
      ->check(CLI::Range(24, 24 * 365))
      ->capture_default_str();
  // Flags take no value: `--no-projections=yes` is a usage error.
  serve
      ->add_flag("--no-projections", serve_flags.no_projections,
                 absl::StrCat("do not run the projections here (run `", name_,
                              " project` beside it)"))
      ->disable_flag_override();
  serve
      ->add_flag("--no-auth", serve_flags.no_auth,
                 "serve every route without bearer tokens (loopback "
                 "addresses only, unless --allow-unauthenticated-network)")
      ->disable_flag_override();
  serve
      ->add_flag("--allow-unauthenticated-network",
                 serve_flags.allow_unauthenticated_network,
                 "with --no-auth: listen on a non-loopback address anyway")
      ->disable_flag_override();
  serve
      ->add_option("--auth-max-failures", serve_flags.auth_max_failures,
                   "failed authentication attempts per client address and "
                   "minute before 429 too_many_requests")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  // Both or neither: CLI11 reports one alone as a usage error.
  CLI::Option* tls_cert = serve->add_option(
      "--tls-cert", serve_flags.tls_cert,
      "serve HTTPS with this PEM certificate (chain); SIGHUP reloads it");
  CLI::Option* tls_key = serve->add_option("--tls-key", serve_flags.tls_key,
                                           "the PEM private key of --tls-cert");
  tls_cert->needs(tls_key);
  tls_key->needs(tls_cert);
  WebhookFlags webhook_flags;
  AddWebhookOptions(*serve, webhook_flags);
  AddRelayOptions(*serve, relay_flags, name_);

  CLI::App* project = cli.add_subcommand(
      "project",
      "run the projections and process managers only (a worker process), "
      "until SIGINT or SIGTERM; migrates first");
  AddDatabaseOptions(*project, db, *this);
  AddLogFormat(*project, db);
  AddStartTimeout(*project, start_timeout);
  AddWebhookOptions(*project, webhook_flags);
  AddRelayOptions(*project, relay_flags, name_);

  CLI::App* migrate = cli.add_subcommand(
      "migrate", "create or upgrade the database schema and exit");
  AddDatabaseOptions(*migrate, db, *this);

  CLI::App* projections =
      cli.add_subcommand("projections",
                         "operate the projections: list, status, rebuild, "
                         "parked, replay-parked, resume");
  projections->require_subcommand(1);
  AddDatabaseOptions(*projections, db, *this);
  auto sub = [&](const std::string& name, const std::string& help) {
    CLI::App* c = projections->add_subcommand(name, help);
    c->fallthrough();  // database options after the subcommand too
    c->callback(
        [&projections_flags, name] { projections_flags.command = name; });
    return c;
  };
  sub("list", "the projections this build has");
  sub("status",
      "state, checkpoint, lag, owner, parked events, last error and the "
      "error being retried of every projection")
      ->add_flag("--json", projections_flags.json, "as JSON")
      ->disable_flag_override();
  CLI::App* rebuild =
      sub("rebuild",
          "rebuild read models without downtime (a progress bar on a "
          "terminal); Ctrl-C stops it and leaves the live read model "
          "untouched; running it again resumes");
  rebuild->add_option("names", projections_flags.names, "projections");
  rebuild->add_flag("--all", projections_flags.all, "every read model")
      ->disable_flag_override();
  rebuild
      ->add_option(
          "--retry-for", projections_flags.retry_for,
          "how long a rebuild goes on when the database goes away or ends its "
          "session, resuming from its last committed batch, before it gives "
          "up (a duration: 5m, 30s; 0s gives up at once)")
      ->capture_default_str();
  rebuild
      ->add_flag("--fast", projections_flags.fast,
                 "whole pages without pauses: several times faster, for "
                 "quiet hours (live projections wait up to a page's "
                 "write)")
      ->disable_flag_override();
  sub("parked", "the parked (dead-letter) events, oldest first")
      ->add_option("name", projections_flags.names, "projection");
  sub("replay-parked",
      "apply a projection's parked events again, in order; those that fail "
      "again stay parked")
      ->add_option("name", projections_flags.names, "projection")
      ->required();
  sub("resume",
      "go on with a projection or process manager that an error stopped, "
      "from its checkpoint (the failed event is tried again: fix its cause "
      "first)")
      ->add_option("name", projections_flags.names, "projection")
      ->required();

  CLI::App* relay = cli.add_subcommand(
      "relay",
      "the relay of published events to a RabbitMQ broker (run by "
      "`project --amqp-url`): status");
  relay->require_subcommand(1);
  AddDatabaseOptions(*relay, db, *this);
  CLI::App* relay_status = relay->add_subcommand(
      "status",
      "state, checkpoint, published and unroutable counts, lag and last "
      "error of a relay");
  relay_status->fallthrough();
  relay_status->add_flag("--json", relay_flags.json, "as JSON")
      ->disable_flag_override();
  relay_status->add_option("--name", relay_flags.name, "the relay's name")
      ->capture_default_str();

  app_internal::KeysFlags keys_flags;
  CLI::App* keys = cli.add_subcommand(
      "keys",
      "the API keys clients send as `Authorization: Bearer <token>`: "
      "create, list, revoke");
  keys->require_subcommand(1);
  AddDatabaseOptions(*keys, db, *this);
  auto key_command = [&](const std::string& name, const std::string& help) {
    CLI::App* c = keys->add_subcommand(name, help);
    c->fallthrough();
    c->callback([&keys_flags, name] { keys_flags.command = name; });
    return c;
  };
  CLI::App* create = key_command(
      "create", "a new key; its token is printed once, alone on the last line");
  create->add_option("--name", keys_flags.name, "what the key is for")
      ->required();
  create
      ->add_option("--scopes", keys_flags.scopes,
                   "what it may do, comma-separated (commands, queries, "
                   "events, admin, metrics)")
      ->required();
  create->add_option("--expires-in", keys_flags.expires_in,
                     "lifetime, e.g. 30d, 12h, 90m (default: none)");
  key_command("list", "every key: id, name, scopes, times (never the token)")
      ->add_flag("--json", keys_flags.json, "as JSON")
      ->disable_flag_override();
  key_command("revoke",
              "refuse a key's token from now on (within a second "
              "in every process)")
      ->add_option("id", keys_flags.id, "the key's id")
      ->required();

  app_internal::WebhooksFlags webhooks_flags;
  CLI::App* webhooks = cli.add_subcommand(
      "webhooks",
      "the endpoints published events are pushed to (Standard Webhooks): "
      "create, list, show, update, delete, disable, enable, rotate-secret, "
      "attempts, replay, parked, replay-parked, skip-parked, status");
  webhooks->require_subcommand(1);
  AddDatabaseOptions(*webhooks, db, *this);
  auto hook_command = [&](const std::string& name, const std::string& help,
                          bool with_id) {
    CLI::App* c = webhooks->add_subcommand(name, help);
    c->fallthrough();
    c->callback([&webhooks_flags, name] { webhooks_flags.command = name; });
    if (with_id) {
      c->add_option("id", webhooks_flags.id, "the endpoint's id (wh_...)")
          ->required();
    }
    return c;
  };
  const auto json_flag = [&](CLI::App* c) {
    c->add_flag("--json", webhooks_flags.json, "as JSON")
        ->disable_flag_override();
  };
  // --url and --description of create and update: set when given.
  std::string hook_url;
  std::string hook_description;
  std::vector<CLI::Option*> url_options;
  std::vector<CLI::Option*> description_options;
  const auto endpoint_options = [&](CLI::App* c, bool update) {
    CLI::Option* url = c->add_option(
        "--url", hook_url, "where to send: an http:// or https:// URL");
    if (!update) url->required();
    url_options.push_back(url);
    c->add_option("--type", webhooks_flags.types,
                  "send only this published type: <public type>.v<n>, or "
                  "the public type for every version; repeatable "
                  "(default: every type)");
    c->add_option("--category", webhooks_flags.categories,
                  "send only events of this stream category; repeatable "
                  "(default: every category)");
    description_options.push_back(c->add_option(
        "--description", hook_description, "what the endpoint is for"));
    AddAllowNetwork(*c, webhooks_flags.allow_networks);
  };
  endpoint_options(
      hook_command("create",
                   "a new endpoint, sent the events committed from now on; "
                   "its signing secret is printed once, alone on the last "
                   "line",
                   false),
      false);
  json_flag(hook_command("list", "every endpoint (never a secret)", false));
  json_flag(
      hook_command("show", "an endpoint with its delivery statistics", true));
  CLI::App* update = hook_command(
      "update", "change an endpoint's URL, filters or description", true);
  endpoint_options(update, true);
  update
      ->add_flag("--clear-types", webhooks_flags.clear_types,
                 "send every published type")
      ->disable_flag_override();
  update
      ->add_flag("--clear-categories", webhooks_flags.clear_categories,
                 "send every category")
      ->disable_flag_override();
  hook_command("delete", "delete an endpoint and its waiting deliveries", true);
  hook_command("disable",
               "stop delivering to an endpoint (events keep their place)",
               true);
  hook_command("enable", "deliver again, from where the endpoint stopped",
               true);
  hook_command("rotate-secret",
               "a new signing secret, printed once alone on the last line; "
               "the previous one also signs for 24 hours",
               true);
  CLI::App* attempts = hook_command(
      "attempts", "an endpoint's recent attempts, newest first", true);
  attempts->add_option("--limit", webhooks_flags.limit, "at most this many")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  json_flag(attempts);
  CLI::App* replay = hook_command(
      "replay",
      "deliver again the events after a position or from a time "
      "(already delivered ones too, with their original webhook-id)",
      true);
  CLI::Option* from_position =
      replay->add_option("--from-position", webhooks_flags.from_position,
                         "a position token: the events after it");
  CLI::Option* from_time = replay->add_option(
      "--from-time", webhooks_flags.from_time,
      "an RFC 3339 time (2024-05-01T12:00:00Z): the events recorded from "
      "then");
  from_position->excludes(from_time);
  CLI::App* parked = hook_command(
      "parked", "deliveries that failed every attempt, oldest first", true);
  parked->add_option("--limit", webhooks_flags.limit, "at most this many")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  json_flag(parked);
  hook_command("replay-parked",
               "queue an endpoint's parked deliveries again, in order", true);
  hook_command("skip-parked",
               "drop an endpoint's parked deliveries; their streams go on",
               true);
  json_flag(hook_command(
      "status",
      "every endpoint: state, pending, parked, delivered, failed attempts, "
      "lag, last success and failure",
      false));

  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      cli.exit(e);  // --help: prints it
      return kOk;
    }
    const std::string unknown = UnknownCommand(cli, argc, argv);
    std::cerr << name_ << ": "
              << (unknown.empty()
                      ? std::string(e.what())
                      : absl::StrCat("unknown command '", unknown, "'"))
              << " (see `" << name_ << " " << CommandPath(cli, argc, argv)
              << "--help`)" << std::endl;
    return kUsage;
  }
  const auto usage = [&](const absl::Status& status, const char* command) {
    std::cerr << name_ << ": " << status.message() << " (see `" << name_ << " "
              << command << " --help`)" << std::endl;
    return kUsage;
  };
  if (serve->parsed() || project->parsed()) {
    // Checked by AddStartTimeout's validator.
    absl::ParseDuration(start_timeout, &db.start_timeout);
    absl::StatusOr<integration::WebhookDelivererOptions> hooks =
        WebhookOptionsOf(webhook_flags);
    if (!hooks.ok()) {
      return usage(hooks.status(), serve->parsed() ? "serve" : "project");
    }
    serve_flags.webhooks = *std::move(hooks);
  }
  if (webhooks->parsed()) {
    for (CLI::Option* o : url_options) {
      if (o->count() > 0) webhooks_flags.url = hook_url;
    }
    for (CLI::Option* o : description_options) {
      if (o->count() > 0) webhooks_flags.description = hook_description;
    }
    if (absl::Status s = CheckAllowNetworks(webhooks_flags.allow_networks);
        !s.ok()) {
      return usage(s, "webhooks");
    }
    if (!run) return kOk;
    return app_internal::Webhooks(*this, db, webhooks_flags);
  }
  if (serve->parsed()) {
    if (serve_flags.max_queued_requests > 0 &&
        serve_flags.max_queued_requests >= serve_flags.max_connections) {
      std::cerr << name_
                << ": --max-queued-requests must be less than "
                   "--max-connections (see `"
                << name_ << " serve --help`)" << std::endl;
      return kUsage;
    }
    if (!run) return kOk;
    serve_flags.relay = relay_flags;
    return app_internal::Serve(*this, db, serve_flags);
  }
  if (!run) return kOk;
  if (project->parsed()) {
    return app_internal::Project(*this, db, serve_flags.webhooks, relay_flags);
  }
  if (migrate->parsed()) return app_internal::Migrate(*this, db);
  if (relay->parsed()) return app_internal::Relay(*this, db, relay_flags);
  if (keys->parsed()) return app_internal::Keys(*this, db, keys_flags);
  return app_internal::Projections(*this, db, projections_flags);
}

}  // namespace cqrs

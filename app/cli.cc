// App::Main: the command line every app gets, parsed with CLI11 (Debian's
// libcli11-dev, header-only: subcommands, help on every level, checks and
// environment variables, instead of a parser written by hand).
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "app/app.h"
#include "app/internal/commands.h"
#include "app/internal/parts.h"
#include "framework/migrations.h"

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

  CLI::App* serve = cli.add_subcommand(
      "serve",
      "run the HTTP API (and the projections and process managers, unless "
      "--no-projections) until SIGINT or SIGTERM; migrates first");
  serve->add_option("--listen", serve_flags.listen, "HOST:PORT to listen on")
      ->capture_default_str();
  AddDatabaseOptions(*serve, db, *this);
  AddLogFormat(*serve, db);
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
                   "+ 4)")
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

  CLI::App* project = cli.add_subcommand(
      "project",
      "run the projections and process managers only (a worker process), "
      "until SIGINT or SIGTERM; migrates first");
  AddDatabaseOptions(*project, db, *this);
  AddLogFormat(*project, db);

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
  if (serve->parsed()) {
    if (serve_flags.max_queued_requests > 0 &&
        serve_flags.max_queued_requests >= serve_flags.max_connections) {
      std::cerr << name_
                << ": --max-queued-requests must be less than "
                   "--max-connections (see `"
                << name_ << " serve --help`)" << std::endl;
      return kUsage;
    }
    return app_internal::Serve(*this, db, serve_flags);
  }
  if (project->parsed()) return app_internal::Project(*this, db);
  if (migrate->parsed()) return app_internal::Migrate(*this, db);
  if (keys->parsed()) return app_internal::Keys(*this, db, keys_flags);
  return app_internal::Projections(*this, db, projections_flags);
}

}  // namespace cqrs

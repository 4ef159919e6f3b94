// The `bank` command: the example bank's HTTP API and its operations.
// Usage and exit codes follow ../shared/specs/bank-api.md (CLI section):
// 0 success, 1 runtime failure, 2 usage error.
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "eventstore/postgres_event_store.h"
#include "example_app/bank_app.h"
#include "example_app/bank_projections.h"
#include "example_app/bank_service.h"
#include "example_app/projection_cli.h"
#include "framework/embedded_postgres.h"
#include "framework/http/server.h"
#include "framework/log.h"
#include "framework/migrations.h"
#include "framework/pg_pool.h"
#include "projections/runner.h"

namespace {

constexpr int kOk = 0;
constexpr int kFailure = 1;
constexpr int kUsage = 2;
// Upper bound of --max-connections and --max-queued-requests.
constexpr int kMaxConnectionsLimit = 1000000;

constexpr char kMainHelp[] = R"(usage: bank <command> [options]

commands:
  serve        run the HTTP API (and the projections and the transfer
               process manager, unless --no-projections)
  project      run the projections and the transfer process manager only
               (a separate worker process)
  projections  list, status, rebuild, parked, replay-parked, resume:
               operate the projections
  migrate      create or upgrade the database schema and exit

Run `bank <command> --help` for the options of a command.
Without --database-url or DATABASE_URL, bank runs on an embedded PostgreSQL
cluster kept in --data-dir (default ./bank-data).
)";

constexpr char kServeHelp[] = R"(usage: bank serve [options]

Runs the bank's HTTP API until SIGINT or SIGTERM. Migrates the schema first.
On SIGINT or SIGTERM, queries waiting for read-your-writes are answered 503
at once and requests in flight get up to 10 s.

options:
  --listen HOST:PORT     address to listen on (default 127.0.0.1:8080)
  --database-url URL     PostgreSQL connection string (default: $DATABASE_URL,
                         else the embedded cluster in --data-dir)
  --data-dir DIR         embedded cluster directory (default ./bank-data)
  --schema NAME          PostgreSQL schema (default bank)
  --threads N            network threads (default 2)
  --workers N            threads for commands and other database work
                         (default 16)
  --query-threads N      threads (and read-only sessions) for queries
                         (default 8)
  --pool-size N          database connections for commands (default:
                         --workers + 4; queries have their own sessions)
  --max-connections N    open HTTP connections, idle ones included
                         (default 1024); from 3/4 of it idle connections
                         get 2 s; up to 64 beyond it are answered 503
                         overloaded (operations endpoints are served)
  --max-queued-requests N
                         requests waiting for a worker beyond this many get
                         503 overloaded (default: 256, at most a quarter of
                         --max-connections); below --max-connections
  --log-format text|json log line format (default text)
  --idempotency-hours N  keep Idempotency-Key records N hours (default 24)
  --no-projections       do not run the projections in this process (run
                         `bank project` beside it)
  --help                 show this help
)";

constexpr char kProjectHelp[] = R"(usage: bank project [options]

Runs the projections (read models) and the transfer process manager until
SIGINT or SIGTERM: a worker process beside `bank serve --no-projections`.
Several may run: each projection is owned by one process at a time, the
others stand by and take over within seconds. Migrates the schema first.

options:
  --database-url URL     PostgreSQL connection string (default: $DATABASE_URL,
                         else the embedded cluster in --data-dir)
  --data-dir DIR         embedded cluster directory (default ./bank-data)
  --schema NAME          PostgreSQL schema (default bank)
  --log-format text|json log line format (default text)
  --help                 show this help
)";

constexpr char kMigrateHelp[] = R"(usage: bank migrate [options]

Creates or upgrades the bank's tables and exits.

options:
  --database-url URL     PostgreSQL connection string (default: $DATABASE_URL,
                         else the embedded cluster in --data-dir)
  --data-dir DIR         embedded cluster directory (default ./bank-data)
  --schema NAME          PostgreSQL schema (default bank)
  --help                 show this help
)";

struct Flags {
  std::string listen = "127.0.0.1:8080";
  std::string database_url;
  std::string data_dir = "./bank-data";
  std::string schema = "bank";
  std::string log_format = "text";
  int threads = 2;
  int workers = 16;
  int query_threads = 8;
  int pool_size = 0;
  int max_connections = 1024;
  int max_queued_requests = 0;  // 0: derived from max_connections
  int idempotency_hours = 24;
  bool no_projections = false;
  bool help = false;
  std::vector<std::string> positional;  // when the command takes them
};

int UsageError(absl::string_view message, absl::string_view command) {
  std::cerr << "bank: " << message << " (see `bank "
            << (command.empty() ? "" : absl::StrCat(command, " ")) << "--help`)"
            << std::endl;
  return kUsage;
}

// Parses `args` (after the command) into `flags`; returns a usage error
// message, or empty on success. `allowed` lists the flags this command takes.
std::string ParseFlags(const std::vector<std::string>& args,
                       const std::vector<std::string>& allowed, Flags& flags) {
  auto allowed_flag = [&](const std::string& name) {
    for (const auto& a : allowed) {
      if (a == name) return true;
    }
    return false;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "--help" || name == "-h") {
      flags.help = true;
      continue;
    }
    if (name == "--no-projections" && allowed_flag(name)) {
      if (has_value) return "--no-projections takes no value";
      flags.no_projections = true;
      continue;
    }
    if (allowed_flag("positional") &&
        (name.rfind("--", 0) != 0 || name == "--json" || name == "--all" ||
         name == "--fast")) {
      flags.positional.push_back(args[i]);
      continue;
    }
    if (name.rfind("--", 0) != 0 || !allowed_flag(name)) {
      return absl::StrCat("unknown option '", args[i], "'");
    }
    if (!has_value) {
      if (i + 1 >= args.size()) return absl::StrCat(name, " needs a value");
      value = args[++i];
    }
    auto positive = [&](int* out) {
      return absl::SimpleAtoi(value, out) && *out > 0 && *out <= 1024;
    };
    if (name == "--listen") {
      flags.listen = value;
    } else if (name == "--database-url") {
      flags.database_url = value;
    } else if (name == "--data-dir") {
      flags.data_dir = value;
    } else if (name == "--schema") {
      if (absl::Status valid = cqrs::ValidateSchemaName(value); !valid.ok()) {
        return std::string(valid.message());
      }
      flags.schema = value;
    } else if (name == "--log-format") {
      if (value != "text" && value != "json") {
        return "--log-format must be text or json";
      }
      flags.log_format = value;
    } else if (name == "--threads") {
      if (!positive(&flags.threads)) return "--threads must be 1 to 1024";
    } else if (name == "--workers") {
      if (!positive(&flags.workers)) return "--workers must be 1 to 1024";
    } else if (name == "--query-threads") {
      if (!positive(&flags.query_threads)) {
        return "--query-threads must be 1 to 1024";
      }
    } else if (name == "--idempotency-hours") {
      if (!absl::SimpleAtoi(value, &flags.idempotency_hours) ||
          flags.idempotency_hours < 24 || flags.idempotency_hours > 24 * 365) {
        return "--idempotency-hours must be 24 to 8760";
      }
    } else if (name == "--pool-size") {
      if (!positive(&flags.pool_size)) return "--pool-size must be 1 to 1024";
    } else if (name == "--max-connections") {
      if (!absl::SimpleAtoi(value, &flags.max_connections) ||
          flags.max_connections < 2 ||
          flags.max_connections > kMaxConnectionsLimit) {
        return absl::StrCat("--max-connections must be 2 to ",
                            kMaxConnectionsLimit);
      }
    } else if (name == "--max-queued-requests") {
      if (!absl::SimpleAtoi(value, &flags.max_queued_requests) ||
          flags.max_queued_requests < 1 ||
          flags.max_queued_requests > kMaxConnectionsLimit) {
        return absl::StrCat("--max-queued-requests must be 1 to ",
                            kMaxConnectionsLimit);
      }
    }
  }
  if (flags.max_queued_requests == 0) {
    flags.max_queued_requests =
        std::max(1, std::min(256, flags.max_connections / 4));
  } else if (flags.max_queued_requests >= flags.max_connections) {
    return "--max-queued-requests must be less than --max-connections";
  }
  return "";
}

// The database to use: --database-url, $DATABASE_URL, or the embedded
// cluster (started here and kept in `embedded` for the life of the caller).
absl::StatusOr<std::string> DatabaseUrl(
    const Flags& flags, std::unique_ptr<cqrs::EmbeddedPostgres>& embedded) {
  if (!flags.database_url.empty()) return flags.database_url;
  if (const char* env = std::getenv("DATABASE_URL"); env && *env) return env;
  cqrs::EmbeddedPostgresOptions options;
  options.data_dir = flags.data_dir;
  auto started = cqrs::EmbeddedPostgres::Start(options);
  if (!started.ok()) return started.status();
  embedded = *std::move(started);
  cqrs::Log(cqrs::LogLevel::kInfo, "embedded PostgreSQL ready",
            {{"data_dir", flags.data_dir},
             {"owner", embedded->owns_server() ? "this process" : "another"}});
  return embedded->conninfo();
}

absl::StatusOr<std::unique_ptr<cqrs::PgPool>> OpenPool(const std::string& url,
                                                       int size) {
  cqrs::PgPoolOptions options;
  options.conninfo = url;
  options.max_connections = size;
  return cqrs::PgPool::Create(std::move(options));
}

int Fail(const absl::Status& status) {
  std::cerr << "bank: " << status.message() << std::endl;
  return kFailure;
}

int Migrate(const Flags& flags) {
  std::unique_ptr<cqrs::EmbeddedPostgres> embedded;
  absl::StatusOr<std::string> url = DatabaseUrl(flags, embedded);
  if (!url.ok()) return Fail(url.status());
  auto pool = OpenPool(*url, 2);
  if (!pool.ok()) return Fail(pool.status());
  absl::Status migrated = bank::BankApp::Migrate(**pool, flags.schema);
  if (!migrated.ok()) return Fail(migrated);
  std::cout << "schema '" << flags.schema << "' is up to date" << std::endl;
  return kOk;
}

int Project(const Flags& flags) {
  cqrs::SetLogFormat(flags.log_format == "json" ? cqrs::LogFormat::kJson
                                                : cqrs::LogFormat::kText);
  std::unique_ptr<cqrs::EmbeddedPostgres> embedded;
  absl::StatusOr<std::string> url = DatabaseUrl(flags, embedded);
  if (!url.ok()) return Fail(url.status());
  auto pool = OpenPool(*url, 8);
  if (!pool.ok()) return Fail(pool.status());
  if (absl::Status s = bank::BankApp::Migrate(**pool, flags.schema); !s.ok()) {
    return Fail(s);
  }
  return bank::RunProjector(**pool, flags.schema);
}

int Projections(const Flags& flags) {
  std::unique_ptr<cqrs::EmbeddedPostgres> embedded;
  absl::StatusOr<std::string> url = DatabaseUrl(flags, embedded);
  if (!url.ok()) return Fail(url.status());
  auto pool = OpenPool(*url, 4);
  if (!pool.ok()) return Fail(pool.status());
  if (absl::Status s = bank::BankApp::Migrate(**pool, flags.schema); !s.ok()) {
    return Fail(s);
  }
  return bank::RunProjectionsCommand(**pool, flags.schema, flags.positional);
}

int Serve(const Flags& flags) {
  cqrs::SetLogFormat(flags.log_format == "json" ? cqrs::LogFormat::kJson
                                                : cqrs::LogFormat::kText);
  std::unique_ptr<cqrs::EmbeddedPostgres> embedded;
  absl::StatusOr<std::string> url = DatabaseUrl(flags, embedded);
  if (!url.ok()) return Fail(url.status());
  const int pool_size =
      flags.pool_size > 0 ? flags.pool_size : flags.workers + 4;
  auto pool = OpenPool(*url, pool_size);
  if (!pool.ok()) return Fail(pool.status());
  if (absl::Status s = bank::BankApp::Migrate(**pool, flags.schema); !s.ok()) {
    return Fail(s);
  }
  bank::BankServiceOptions options;
  options.schema = flags.schema;
  options.run_projections = !flags.no_projections;
  options.query_threads = flags.query_threads;
  options.max_queued_queries = static_cast<size_t>(flags.max_queued_requests);
  options.idempotency_retention = absl::Hours(flags.idempotency_hours);
  auto service = bank::BankService::Create(pool->get(), options);
  if (!service.ok()) return Fail(service.status());
  cqrs::http::Router router;
  (*service)->RegisterRoutes(router);

  cqrs::http::ServerOptions server_options;
  server_options.listen_address = flags.listen;
  server_options.network_threads = flags.threads;
  server_options.worker_threads = flags.workers;
  server_options.max_connections = flags.max_connections;
  server_options.max_queued_requests =
      static_cast<size_t>(flags.max_queued_requests);
  (*service)->InstrumentServer(server_options);
  // Shutdown answers parked read-your-writes queries (503 with Retry-After)
  // at once, before the server waits for requests in flight.
  cqrs::queries::ProgressTracker* tracker = &(*service)->tracker();
  server_options.on_shutdown = [tracker] { tracker->StopWaiting(); };
  auto server = cqrs::http::Server::Create(server_options, &router);
  if (!server.ok()) return Fail(server.status());
  (*service)->Start();
  cqrs::Log(cqrs::LogLevel::kInfo, "bank listening",
            {{"address", flags.listen},
             {"projections", flags.no_projections ? "elsewhere" : "here"}});
  absl::Status ran = (*server)->Run();
  // Order matters: the server has drained, so nothing uses the pool now.
  server->reset();
  service->reset();
  pool->reset();
  if (!ran.ok()) return Fail(ran);
  cqrs::Log(cqrs::LogLevel::kInfo, "bank stopped");
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << kMainHelp;
    return kUsage;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  if (command == "--help" || command == "-h" || command == "help") {
    std::cout << kMainHelp;
    return kOk;
  }
  Flags flags;
  if (command == "serve") {
    std::string error =
        ParseFlags(args,
                   {"--listen", "--database-url", "--data-dir", "--schema",
                    "--threads", "--workers", "--query-threads", "--pool-size",
                    "--max-connections", "--max-queued-requests",
                    "--log-format", "--idempotency-hours", "--no-projections"},
                   flags);
    if (flags.help) {
      std::cout << kServeHelp;
      return kOk;
    }
    if (!error.empty()) return UsageError(error, command);
    return Serve(flags);
  }
  if (command == "project") {
    std::string error = ParseFlags(
        args, {"--database-url", "--data-dir", "--schema", "--log-format"},
        flags);
    if (flags.help) {
      std::cout << kProjectHelp;
      return kOk;
    }
    if (!error.empty()) return UsageError(error, command);
    return Project(flags);
  }
  if (command == "projections") {
    std::string error = ParseFlags(
        args, {"--database-url", "--data-dir", "--schema", "positional"},
        flags);
    if (flags.help) {
      std::cout << bank::kProjectionsHelp;
      return kOk;
    }
    if (!error.empty()) return UsageError(error, command);
    if (flags.positional.empty()) {
      return UsageError("missing projections command", command);
    }
    const std::string& sub = flags.positional[0];
    if (sub != "list" && sub != "status" && sub != "rebuild" &&
        sub != "parked" && sub != "replay-parked" && sub != "resume") {
      return UsageError(absl::StrCat("unknown projections command '", sub, "'"),
                        command);
    }
    return Projections(flags);
  }
  if (command == "migrate") {
    std::string error =
        ParseFlags(args, {"--database-url", "--data-dir", "--schema"}, flags);
    if (flags.help) {
      std::cout << kMigrateHelp;
      return kOk;
    }
    if (!error.empty()) return UsageError(error, command);
    return Migrate(flags);
  }
  return UsageError(absl::StrCat("unknown command '", command, "'"), "");
}

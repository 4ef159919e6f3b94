// The server side of scripts/bench-queries: the whole bank (its cqrs::App
// run by cqrs::AppServer, projections in-process) plus one extra route, GET
// /bench/constant, that answers inline on the network thread with the exact
// body GET /accounts/<prefix><accounts/2> returns: the HTTP ceiling of this
// server for a response of that size.
//
//   query_server --database-url URL --accounts 10000 --listen 127.0.0.1:8090
//
// Before it prints that it is ready it opens --accounts accounts
// <prefix>0.. (those that exist already are kept) and waits until the
// projections have processed them. Runs until SIGINT/SIGTERM. A benchmark
// tool, not a test.
#include <atomic>
#include <cstdio>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "app/app.h"
#include "app/app_server.h"
#include "app/internal/parts.h"
#include "commands/command_metadata.h"
#include "example_app/account.h"
#include "example_app/bank_app.h"
#include "framework/auth/api_keys.h"
#include "framework/http/server.h"
#include "framework/http/status_mapping.h"
#include "framework/log.h"

namespace {

namespace http = cqrs::http;

struct Flags {
  std::string database_url;
  std::string listen = "127.0.0.1:8090";
  std::string schema = "bench_queries";
  std::string prefix = "bench-";
  int accounts = 10000;
  int threads = 2;
  int query_threads = 8;
  int batch_concurrency = 2;
  // Where the token of a key with the scope "queries" is written.
  std::string token_file;
  // --access-log on: one log line per request on stderr, as `serve` writes
  // by default; off: warnings only.
  bool access_log = false;
};

bool ParseFlags(int argc, char** argv, Flags& f) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string name = argv[i];
    const std::string value = argv[i + 1];
    if (name == "--database-url") {
      f.database_url = value;
    } else if (name == "--listen") {
      f.listen = value;
    } else if (name == "--token-file") {
      f.token_file = value;
    } else if (name == "--schema") {
      f.schema = value;
    } else if (name == "--access-log") {
      if (value != "on" && value != "off") return false;
      f.access_log = value == "on";
    } else if (name == "--accounts") {
      if (!absl::SimpleAtoi(value, &f.accounts) || f.accounts < 1) return false;
    } else if (name == "--threads") {
      if (!absl::SimpleAtoi(value, &f.threads) || f.threads < 1) return false;
    } else if (name == "--batch-concurrency") {
      if (!absl::SimpleAtoi(value, &f.batch_concurrency) ||
          f.batch_concurrency < 0) {
        return false;
      }
    } else if (name == "--query-threads") {
      if (!absl::SimpleAtoi(value, &f.query_threads) || f.query_threads < 1) {
        return false;
      }
    } else {
      return false;
    }
  }
  return argc % 2 == 1 && !f.database_url.empty();
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "query_server: %s\n", status.ToString().c_str());
  return 1;
}

// Opens the accounts from 4 threads; returns the newest position.
absl::StatusOr<cqrs::eventstore::Position> OpenAccounts(
    cqrs::eventstore::EventStore& store, const Flags& f) {
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  absl::Mutex mu;
  cqrs::eventstore::Position newest;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      const auto meta =
          cqrs::commands::CommandMetadata::ForCommand("seed", "bench");
      for (int i = next++; i < f.accounts && !failed; i = next++) {
        auto out = bank::AccountAggregate().Execute(
            store, absl::StrCat(f.prefix, i), meta, {},
            bank::DecideOpen("bench", "EUR"));
        if (!out.ok() && !absl::IsAlreadyExists(out.status()) &&
            cqrs::http::ErrorCodeOf(out.status()) != "account_exists") {
          std::fprintf(stderr, "open failed: %s\n",
                       out.status().ToString().c_str());
          failed = true;
        }
        if (out.ok()) {
          absl::MutexLock lock(&mu);
          if (newest < out->position) newest = out->position;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  if (failed) return absl::InternalError("opening the accounts failed");
  return newest;
}

// The response of a GET through the router, as the server would send it.
http::Response Get(const http::Router& router, const std::string& target) {
  http::RouteMatch match = router.Match("GET", target);
  auto request = http::Request::Create("GET", target, {}, "");
  request->set_path_params(match.params);
  std::promise<http::Response> promise;
  http::Responder responder(
      [&promise](http::Response r) { promise.set_value(std::move(r)); });
  if (match.route->handler) {
    responder(match.route->handler(*request));
  } else {
    match.route->async_handler(*request, responder);
  }
  return promise.get_future().get();
}

int Main(int argc, char** argv) {
  Flags f;
  if (!ParseFlags(argc, argv, f)) {
    std::fprintf(stderr,
                 "usage: query_server --database-url URL [--listen H:P] "
                 "[--accounts N] [--threads N] [--query-threads N] "
                 "[--schema S] [--token-file PATH] [--access-log on|off]\n");
    return 2;
  }
  // As App::Main does in a release build.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  cqrs::SetMinLogLevel(f.access_log ? cqrs::LogLevel::kInfo
                                    : cqrs::LogLevel::kWarn);
  cqrs::PgPoolOptions pool_options;
  pool_options.conninfo = f.database_url;
  pool_options.max_connections = 16;
  auto pool = cqrs::PgPool::Create(pool_options);
  if (!pool.ok()) return Fail(pool.status());
  if (auto s = cqrs::MigrateApp(**pool, f.schema); !s.ok()) return Fail(s);
  cqrs::App app("bank");
  bank::DeclareBank(app);
  // The body of GET /bench/constant, set once the reference is known.
  struct Constant {
    absl::Mutex mu;
    std::string body ABSL_GUARDED_BY(mu);
  } constant;
  http::RouteOptions inline_route;
  inline_route.execution = http::Execution::kNetworkThread;
  inline_route.access = http::RouteAccess::Open();
  // GET /bench/open/accounts/{id}: the bank's account query as an open
  // route, so that one run compares it with and without a bearer token.
  for (const cqrs::queries::QueryRoute& q : app.parts().queries) {
    if (q.pattern != "/accounts/{id}") continue;
    cqrs::queries::QueryRoute open = q;
    open.pattern = "/bench/open/accounts/{id}";
    open.access = http::RouteAccess::Open();
    open.prepared.clear();  // the original route prepares them already
    app.AddQuery(std::move(open));
    break;
  }
  app.AddRoute(
      "GET", "/bench/constant",
      [&constant](const http::Request&) {
        absl::MutexLock lock(&constant.mu);
        return http::JsonResponse(200, constant.body);
      },
      inline_route);
  cqrs::ServeOptions options;
  options.schema = f.schema;
  options.listen = f.listen;
  options.network_threads = f.threads;
  options.worker_threads = 4;
  options.query_threads = f.query_threads;
  options.batch_concurrency = f.batch_concurrency;
  auto server = cqrs::AppServer::Start(app, pool->get(), options);
  if (!server.ok()) return Fail(server.status());

  auto newest = OpenAccounts((*server)->store(), f);
  if (!newest.ok()) return Fail(newest.status());
  while ((*server)->tracker().Current({"account_balances"}) < *newest) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  const std::string sample =
      absl::StrCat("/accounts/", f.prefix, f.accounts / 2);
  http::Response reference = Get((*server)->router(), sample);
  if (reference.status != 200) {
    return Fail(absl::InternalError(
        absl::StrCat(sample, " answered ", reference.status)));
  }
  {
    absl::MutexLock lock(&constant.mu);
    constant.body = reference.body;
  }
  auto keys = cqrs::auth::ApiKeyStore::Create(pool->get(), f.schema);
  if (!keys.ok()) return Fail(keys.status());
  auto key = (*keys)->CreateKey("bench", {"queries"}, absl::Hours(1));
  if (!key.ok()) return Fail(key.status());
  if (!f.token_file.empty()) {
    // Renamed into place: a script waiting for the file never reads half.
    const std::string partial = f.token_file + ".partial";
    std::FILE* out = std::fopen(partial.c_str(), "w");
    if (out == nullptr) {
      return Fail(absl::UnavailableError("cannot write --token-file"));
    }
    std::fprintf(out, "%s\n", key->token.c_str());
    std::fclose(out);
    if (std::rename(partial.c_str(), f.token_file.c_str()) != 0) {
      return Fail(absl::UnavailableError("cannot write --token-file"));
    }
  }
  std::printf(
      "query_server: %d accounts ready; %s is %zu bytes; listening "
      "on %s\n",
      f.accounts, sample.c_str(), reference.body.size(), f.listen.c_str());
  std::fflush(stdout);
  absl::Status ran = (*server)->Run();
  server->reset();
  return ran.ok() ? 0 : Fail(ran);
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }

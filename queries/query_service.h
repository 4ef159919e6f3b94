// Serves REST reads from projections: binds query handlers to GET routes,
// runs them on their own threads in read-only sessions, and implements
// read-your-writes (../shared/specs/bank-api.md, "Queries").
//
//   ASSIGN_OR_RETURN(auto queries, QueryService::Create(tracker.get(), opts));
//   queries->Add(router, {"/accounts/{id}", {"account_balances"},
//       [](QueryContext& q) -> absl::StatusOr<http::Response> {
//         return q.One("SELECT account_id, balance FROM {account_balances} "
//                      "WHERE account_id = $1",
//                      {q.Param("id")}, "account_not_found");
//       }});
//
// For each request the service:
//  - reads the wanted position from `X-Min-Position` (or `?min_position=`,
//    the header wins) and the wait from `X-Max-Wait-Ms` (default 5000, at
//    most 30000); a malformed value is 400 invalid_request;
//  - with a position, waits (without holding any thread) until every
//    projection the route declares has processed it, else answers 503
//    projection_lagging when the wait is over, or 503 unavailable at once
//    when the process shuts down (ProgressTracker::StopWaiting(), which the
//    server's on_shutdown should call); both with Retry-After: 1;
//  - answers 503 overloaded with Retry-After: 1 when `max_queued` queries
//    wait for a query thread already;
//  - runs the handler on a query thread with a session that is read-only
//    (`default_transaction_read_only`), so a handler cannot write;
//  - sets `X-Projection-Position` on every response, errors included: the
//    least checkpoint of the route's projections taken before the read, so
//    the answer reflects at least every event up to it.
// Handlers read the projections' views (`<schema>.<table>`), never the
// event store's tables: SQL given to the service (QueryRoute::prepared, and
// QueryContext's statements) names them `{table}`, expanded with
// QueryServiceOptions::schema (queries/query_context.h).
//
// This header is for PostgreSQL-facing code: handlers receive a libpqxx
// transaction.
//
// Thread-safety: Add() before the server starts; the rest is thread-safe.
// `tracker` must outlive the service, and the service must outlive the
// server that routes to it.
#ifndef QUERIES_QUERY_SERVICE_H_
#define QUERIES_QUERY_SERVICE_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "eventstore/position.h"
#include "framework/http/router.h"
#include "framework/pg_pool.h"
#include "framework/worker_pool.h"
#include "queries/progress_tracker.h"
#include "queries/query_context.h"

namespace pqxx {
class transaction_base;
}  // namespace pqxx

namespace cqrs::queries {

inline constexpr absl::string_view kMinPositionHeader = "X-Min-Position";
inline constexpr absl::string_view kMaxWaitHeader = "X-Max-Wait-Ms";
inline constexpr absl::string_view kProjectionPositionHeader =
    "X-Projection-Position";

// Returns the response, or an error that becomes one
// (http::ResponseFromStatus): attach codes with cqrs::WithErrorCode.
using ContextQueryHandler =
    std::function<absl::StatusOr<http::Response>(QueryContext&)>;
// The earlier form, without placeholders or response helpers.
using QueryHandler = std::function<absl::StatusOr<http::Response>(
    const http::Request&, pqxx::transaction_base&)>;

// QueryRoute::handler: holds a function of either form above.
class RouteHandler {
 public:
  RouteHandler() = default;
  template <
      typename F,
      std::enable_if_t<std::is_invocable_r_v<absl::StatusOr<http::Response>, F&,
                                             QueryContext&>,
                       int> = 0>
  RouteHandler(F f) {  // NOLINT: implicit, to assign and brace-init routes
    if (IsSet(f)) fn_ = std::move(f);
  }
  template <
      typename F,
      std::enable_if_t<!std::is_invocable_v<F&, QueryContext&> &&
                           std::is_invocable_r_v<absl::StatusOr<http::Response>,
                                                 F&, const http::Request&,
                                                 pqxx::transaction_base&>,
                       int> = 0>
  RouteHandler(F f) {  // NOLINT
    if (!IsSet(f)) return;
    fn_ =
        [f = std::move(f)](QueryContext& q) -> absl::StatusOr<http::Response> {
      return f(q.request(), q.tx());
    };
  }

  explicit operator bool() const { return static_cast<bool>(fn_); }
  absl::StatusOr<http::Response> operator()(QueryContext& q) const {
    return fn_(q);
  }

 private:
  // An empty std::function stays an empty handler.
  template <typename F>
  static bool IsSet(const F& f) {
    if constexpr (std::is_constructible_v<bool, const F&> &&
                  !std::is_class_v<F>) {
      return static_cast<bool>(f);  // a function pointer
    } else if constexpr (std::is_same_v<F, QueryHandler> ||
                         std::is_same_v<F, ContextQueryHandler>) {
      return static_cast<bool>(f);
    } else {
      return true;
    }
  }

  ContextQueryHandler fn_;
};

// Answers several requests of one route at once (typically with one
// statement over all their keys): returns exactly one response or error per
// request, in the order given. Batch handlers keep this form: they name their
// tables through QueryRoute::prepared, and build bodies with RowToJson()
// (queries/json_rows.h).
using BatchQueryHandler =
    std::function<std::vector<absl::StatusOr<http::Response>>(
        const std::vector<const http::Request*>&, pqxx::transaction_base&)>;

enum class Snapshot {
  // Each statement sees the data committed when it starts (autocommit):
  // the cheapest, right for handlers that run one statement.
  kPerStatement,
  // One read-only REPEATABLE READ transaction for all statements.
  kShared,
};

// Every member but `pattern` has a default initializer, so that the short
// form `{pattern, projections, handler}` compiles without
// -Wmissing-field-initializers.
struct QueryRoute {
  // Absolute path pattern (http::Router syntax); the method is GET.
  std::string pattern;
  // The projections whose tables the handler reads; read-your-writes waits
  // for all of them.
  std::vector<std::string> projections{};
  // Exactly one of the two. With `batch_handler`, requests that arrive
  // while the query threads are busy are answered together, up to
  // `max_batch` at a time: under load, one statement serves many requests.
  // `handler` takes a QueryContext&, or (const http::Request&,
  // pqxx::transaction_base&).
  RouteHandler handler{};
  BatchQueryHandler batch_handler{};
  Snapshot snapshot = Snapshot::kPerStatement;
  // Statements prepared on every read session as (name, SQL), for
  // Statement::Prepared(name) or tx.exec_prepared(name, ...) in the handler.
  // The SQL's `{table}` placeholders are expanded by Add(). Names are global
  // to the service: give each statement its own.
  std::vector<std::pair<std::string, std::string>> prepared{};
  // Who may call it (framework/http/auth.h); undeclared: the scope
  // "queries".
  http::RouteAccess access{};
};

struct QueryServiceOptions {
  // libpq connection string for the read sessions. Never logged.
  std::string conninfo;
  // The schema of the projections' views, for `{table}` placeholders
  // (cqrs::ValidateSchemaName). Empty: SQL with a placeholder is an error.
  std::string schema;
  // Query threads, and read sessions (one each).
  int threads = 8;
  // Queries waiting for a thread beyond this many get 503 overloaded (per
  // route for batch routes). Keep it below the server's max_connections, so
  // that it fills, and refuses, before the connection table does.
  size_t max_queued = 256;
  absl::Duration default_wait = absl::Seconds(5);
  absl::Duration max_wait = absl::Seconds(30);
  // Requests per call of a BatchQueryHandler.
  int max_batch = 64;
  // Batches of one route running at once (0: `threads`). Fewer, larger
  // batches cost the database less per request, and the other threads stay
  // free for other routes: with 2, GET /accounts/{id} reached 0.67x of the
  // HTTP ceiling against 0.59x with 8 (bench/results.md).
  int batch_concurrency = 2;
};

// What a request asks of read-your-writes.
struct Consistency {
  // Absent: answer at once with whatever is there.
  std::optional<eventstore::Position> min_position;
  absl::Duration max_wait;
};

// Parses X-Min-Position / ?min_position= and X-Max-Wait-Ms. Returns
// kInvalidArgument (invalid_request) for a malformed position, or a wait
// that is not an integer in 0..max_wait milliseconds.
absl::StatusOr<Consistency> ParseConsistency(
    const http::Request& request, const QueryServiceOptions& options);

class QueryService {
 public:
  // kInvalidArgument for bad options. Does not connect: the first query
  // does.
  static absl::StatusOr<std::unique_ptr<QueryService>> Create(
      ProgressTracker* tracker, QueryServiceOptions options);
  // Stops the query threads; queries not started are dropped (their
  // connections get 500 if the server still runs: stop the server first).
  ~QueryService();

  // Registers `route` as GET in `router`. A route without exactly one
  // handler, or with a prepared statement whose placeholders do not expand
  // (ExpandTables()), is recorded in router.status() as kInvalidArgument and
  // not registered.
  void Add(http::Router& router, QueryRoute route);

  // QueryServiceOptions::schema: where `{table}` placeholders point.
  const std::string& schema() const { return options_.schema; }

  // The read sessions' pool, for metrics.
  PgPool::Stats pool_stats() const { return pool_->stats(); }

 private:
  // Lets callbacks that outlive the service (a tracker's waiters) find out
  // that it is gone.
  struct Lifeline;
  // A registered route and, for batch routes, its requests waiting.
  struct RouteState;
  struct Pending {
    std::shared_ptr<const http::Request> request;
    http::Responder responder;
  };

  QueryService(ProgressTracker* tracker, QueryServiceOptions options);
  void Handle(RouteState& route, const http::Request& request,
              http::Responder responder);
  // Queues the request for a query thread.
  void Submit(RouteState& route, Pending pending);
  // Answers one batch of `route`'s waiting requests, then hands the rest
  // to another task.
  void Drain(RouteState& route);
  http::Response Run(const QueryRoute& route,
                     const http::Request& request) const;
  std::vector<http::Response> RunBatch(const QueryRoute& route,
                                       const std::vector<Pending>& batch) const;
  // Runs `read` on a read session, in autocommit or in one read-only
  // REPEATABLE READ transaction; errors are those of PgPool::Run.
  absl::Status InSession(
      Snapshot snapshot,
      const std::function<void(pqxx::transaction_base&)>& read) const;
  void Prepare(pqxx::connection& conn) const;

  // Constant after Create().
  ProgressTracker* const tracker_;
  const QueryServiceOptions options_;
  std::unique_ptr<PgPool> pool_;
  // Written by Add() only, before serving; the router's handlers and the
  // read sessions' setup point into it.
  std::vector<std::unique_ptr<RouteState>> routes_;
  std::shared_ptr<Lifeline> lifeline_;
  // Last: stopped (threads joined) before the members above go.
  WorkerPool workers_;
};

}  // namespace cqrs::queries

#endif  // QUERIES_QUERY_SERVICE_H_

#include "queries/query_service.h"

#include <algorithm>
#include <deque>
#include <utility>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "framework/auth/scopes.h"
#include "framework/http/status_mapping.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"

namespace cqrs::queries {
namespace {

using eventstore::Position;

absl::Status Invalid(std::string message) {
  return http::WithErrorCode(absl::InvalidArgumentError(std::move(message)),
                             "invalid_request");
}

// The response for a handler's result, or for a failed read.
http::Response ToResponse(absl::StatusOr<http::Response> result) {
  if (result.ok()) return *std::move(result);
  const absl::Status& status = result.status();
  if (absl::IsFailedPrecondition(status) && http::ErrorCodeOf(status).empty()) {
    // The database refused the statement itself (a missing table): the
    // read model is not there (yet), which is not the client's fault.
    http::Response response = http::ErrorResponse(
        503, "unavailable", "the read model is not available; retry later");
    response.log_detail = std::string(status.message());
    return response;
  }
  return http::ResponseFromStatus(status);
}

}  // namespace

struct QueryService::RouteState {
  explicit RouteState(QueryRoute r) : route(std::move(r)) {}
  const QueryRoute route;
  absl::Mutex mu;
  std::deque<Pending> waiting ABSL_GUARDED_BY(mu);
  // Drain() tasks queued or running.
  int draining ABSL_GUARDED_BY(mu) = 0;
};

struct QueryService::Lifeline {
  absl::Mutex mu;
  QueryService* service ABSL_GUARDED_BY(mu);
  explicit Lifeline(QueryService* s) : service(s) {}
};

absl::StatusOr<Consistency> ParseConsistency(
    const http::Request& request, const QueryServiceOptions& options) {
  Consistency out;
  out.max_wait = options.default_wait;
  absl::optional<absl::string_view> token = request.Header(kMinPositionHeader);
  const char* source = "X-Min-Position";
  if (!token.has_value()) {
    token = request.Query("min_position");
    source = "min_position";
  }
  if (token.has_value()) {
    absl::StatusOr<Position> position = Position::FromToken(*token);
    if (!position.ok()) {
      return Invalid(absl::StrCat(
          source, " must be a position token from a command response"));
    }
    out.min_position = *position;
  }
  if (absl::optional<absl::string_view> wait = request.Header(kMaxWaitHeader)) {
    int64_t ms = -1;
    const int64_t max_ms = absl::ToInt64Milliseconds(options.max_wait);
    if (wait->size() > 12 || !absl::SimpleAtoi(*wait, &ms) || ms < 0 ||
        ms > max_ms || (*wait)[0] == '+' || (*wait)[0] == '-') {
      return Invalid(
          absl::StrCat("X-Max-Wait-Ms must be an integer from 0 to ", max_ms));
    }
    out.max_wait = absl::Milliseconds(ms);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<QueryService>> QueryService::Create(
    ProgressTracker* tracker, QueryServiceOptions options) {
  if (tracker == nullptr) return absl::InvalidArgumentError("no tracker");
  if (options.threads < 1 || options.max_queued < 1) {
    return absl::InvalidArgumentError(
        "query threads and max_queued must be at least 1");
  }
  if (!options.schema.empty()) {
    RETURN_IF_ERROR(ValidateSchemaName(options.schema));
  }
  if (options.default_wait < absl::ZeroDuration() ||
      options.default_wait > options.max_wait) {
    return absl::InvalidArgumentError(
        "the default wait must be between 0 and the maximum wait");
  }
  std::unique_ptr<QueryService> service(
      new QueryService(tracker, std::move(options)));
  PgPoolOptions pool_options;
  pool_options.conninfo = service->options_.conninfo;
  pool_options.max_connections = service->options_.threads;
  QueryService* self = service.get();
  pool_options.on_connect = [self](pqxx::connection& conn) {
    self->Prepare(conn);
  };
  ASSIGN_OR_RETURN(service->pool_, PgPool::Create(std::move(pool_options)));
  return service;
}

QueryService::QueryService(ProgressTracker* tracker,
                           QueryServiceOptions options)
    : tracker_(tracker),
      options_(std::move(options)),
      lifeline_(std::make_shared<Lifeline>(this)),
      workers_(options_.threads, options_.max_queued) {}

QueryService::~QueryService() {
  {
    absl::MutexLock lock(&lifeline_->mu);
    lifeline_->service = nullptr;
  }
  workers_.Stop();
}

void QueryService::Prepare(pqxx::connection& conn) const {
  {
    pqxx::nontransaction tx(conn);
    // Read-only sessions: a query handler cannot write, whatever it runs.
    tx.exec("SET default_transaction_read_only = on");
    tx.exec("SET application_name = 'cqrs queries'");
    // What queries/json_rows.h reads timestamps and dates in.
    tx.exec("SET DateStyle = ISO");
  }
  for (const auto& route : routes_) {
    for (const auto& [name, sql] : route->route.prepared) {
      conn.prepare(name, sql);
    }
  }
}

void QueryService::Add(http::Router& router, QueryRoute route) {
  if (static_cast<bool>(route.handler) ==
      static_cast<bool>(route.batch_handler)) {
    router.RecordError(absl::InvalidArgumentError(
        absl::StrCat("query route ", route.pattern,
                     " needs exactly one of handler and batch_handler")));
    return;
  }
  for (auto& [name, sql] : route.prepared) {
    absl::StatusOr<std::string> expanded = ExpandTables(sql, options_.schema);
    if (!expanded.ok()) {
      router.RecordError(absl::InvalidArgumentError(
          absl::StrCat("query route ", route.pattern, ", statement ", name,
                       ": ", expanded.status().message())));
      return;
    }
    sql = *std::move(expanded);
  }
  routes_.push_back(std::make_unique<RouteState>(std::move(route)));
  RouteState* r = routes_.back().get();
  http::RouteOptions options;
  // Handle() only parses and queues; the reads run on the query threads.
  options.execution = http::Execution::kNetworkThread;
  options.access =
      r->route.access.kind == http::RouteAccess::Kind::kUndeclared
          ? http::RouteAccess::Scope(std::string(auth::kQueriesScope))
          : r->route.access;
  router.AddAsync(
      "GET", r->route.pattern,
      [this, r](const http::Request& request, http::Responder responder) {
        Handle(*r, request, std::move(responder));
      },
      options);
}

void QueryService::Handle(RouteState& state, const http::Request& request,
                          http::Responder responder) {
  const QueryRoute& route = state.route;
  absl::StatusOr<Consistency> consistency = ParseConsistency(request, options_);
  if (!consistency.ok()) {
    http::Response response = http::ResponseFromStatus(consistency.status());
    response.SetHeader(kProjectionPositionHeader,
                       tracker_->Current(route.projections).ToToken());
    responder(std::move(response));
    return;
  }
  Pending pending{std::make_shared<const http::Request>(request), responder};
  if (!consistency->min_position.has_value()) {
    Submit(state, std::move(pending));
    return;
  }
  const Position target = *consistency->min_position;
  const int64_t wait_ms = absl::ToInt64Milliseconds(consistency->max_wait);
  tracker_->WhenReached(
      route.projections, target, absl::Now() + consistency->max_wait,
      [lifeline = lifeline_, state = &state, pending = std::move(pending),
       tracker = tracker_, target, wait_ms](WaitOutcome outcome) mutable {
        if (outcome == WaitOutcome::kReached) {
          absl::MutexLock lock(&lifeline->mu);
          // Gone: the responder answers 500 when dropped.
          if (lifeline->service != nullptr) {
            lifeline->service->Submit(*state, std::move(pending));
          }
          return;
        }
        const QueryRoute& route = state->route;
        http::Response response =
            outcome == WaitOutcome::kShutdown
                ? http::ErrorResponse(
                      503, "unavailable",
                      "the server is shutting down; retry later")
                : http::ErrorResponse(
                      503, "projection_lagging",
                      absl::StrCat("the read model (",
                                   absl::StrJoin(route.projections, ", "),
                                   ") has not reached position ",
                                   target.ToToken(), " within ", wait_ms,
                                   " ms; retry later"));
        response.SetHeader("Retry-After", "1");
        response.SetHeader(kProjectionPositionHeader,
                           tracker->Current(route.projections).ToToken());
        pending.responder(std::move(response));
      });
}

void QueryService::Submit(RouteState& state, Pending pending) {
  http::Response overloaded = http::ErrorResponse(
      503, "overloaded", "too many queries are waiting; retry later");
  overloaded.SetHeader("Retry-After", "1");
  if (!state.route.batch_handler) {
    if (!workers_.TrySubmit([this, &state, pending] {
          pending.responder(Run(state.route, *pending.request));
        })) {
      pending.responder(std::move(overloaded));
    }
    return;
  }
  {
    absl::MutexLock lock(&state.mu);
    if (state.waiting.size() >= options_.max_queued) {
      pending.responder(std::move(overloaded));
      return;
    }
    state.waiting.push_back(std::move(pending));
    // Enough tasks are on it already: they take this one with the others.
    const int concurrency = options_.batch_concurrency > 0
                                ? options_.batch_concurrency
                                : options_.threads;
    if (state.draining >= concurrency) return;
    ++state.draining;
  }
  if (!workers_.TrySubmit([this, &state] { Drain(state); })) {
    std::deque<Pending> refused;
    {
      absl::MutexLock lock(&state.mu);
      --state.draining;
      if (state.draining == 0) refused.swap(state.waiting);
    }
    for (Pending& p : refused) p.responder(overloaded);
  }
}

void QueryService::Drain(RouteState& state) {
  std::vector<Pending> batch;
  {
    absl::MutexLock lock(&state.mu);
    const size_t n =
        std::min(state.waiting.size(), static_cast<size_t>(options_.max_batch));
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(state.waiting.front()));
      state.waiting.pop_front();
    }
    if (batch.empty()) {
      --state.draining;
      return;
    }
  }
  std::vector<http::Response> responses = RunBatch(state.route, batch);
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i].responder(std::move(responses[i]));
  }
  // More waiting: queue behind the other routes' tasks rather than loop,
  // so that one busy route cannot starve the rest.
  {
    absl::MutexLock lock(&state.mu);
    if (state.waiting.empty()) {
      --state.draining;
      return;
    }
  }
  if (!workers_.TrySubmit([this, &state] { Drain(state); })) {
    Drain(state);  // the queue is full: carry on here
  }
}

absl::Status QueryService::InSession(
    Snapshot snapshot,
    const std::function<void(pqxx::transaction_base&)>& read) const {
  // Reads are safe to repeat on a fresh session.
  return pool_->Run(PgPool::Retry::kOnBrokenConnection,
                    [&](pqxx::connection& conn) {
                      if (snapshot == Snapshot::kShared) {
                        pqxx::transaction<pqxx::repeatable_read,
                                          pqxx::readwrite_policy::read_only>
                            tx(conn);
                        read(tx);
                        tx.commit();
                      } else {
                        pqxx::nontransaction tx(conn);
                        read(tx);
                      }
                      return absl::OkStatus();
                    });
}

std::vector<http::Response> QueryService::RunBatch(
    const QueryRoute& route, const std::vector<Pending>& batch) const {
  // Taken before the read: the read reflects at least this position.
  const Position position = tracker_->Current(route.projections);
  std::vector<const http::Request*> requests;
  requests.reserve(batch.size());
  for (const Pending& p : batch) requests.push_back(p.request.get());
  std::vector<absl::StatusOr<http::Response>> results;
  absl::Status status =
      InSession(route.snapshot, [&](pqxx::transaction_base& tx) {
        results = route.batch_handler(requests, tx);
      });
  if (status.ok() && results.size() != batch.size()) {
    status = absl::InternalError(
        absl::StrCat("the batch handler of ", route.pattern, " returned ",
                     results.size(), " responses for ", batch.size()));
  }
  std::vector<http::Response> responses;
  responses.reserve(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    http::Response response =
        status.ok() ? ToResponse(std::move(results[i])) : ToResponse(status);
    response.SetHeader(kProjectionPositionHeader, position.ToToken());
    responses.push_back(std::move(response));
  }
  return responses;
}

http::Response QueryService::Run(const QueryRoute& route,
                                 const http::Request& request) const {
  // Taken before the read: the read reflects at least this position.
  const Position position = tracker_->Current(route.projections);
  absl::StatusOr<http::Response> result;
  absl::Status status =
      InSession(route.snapshot, [&](pqxx::transaction_base& tx) {
        QueryContext context(request, tx, options_.schema);
        result = route.handler(context);
      });
  http::Response response =
      status.ok() ? ToResponse(std::move(result)) : ToResponse(status);
  response.SetHeader(kProjectionPositionHeader, position.ToToken());
  return response;
}

}  // namespace cqrs::queries

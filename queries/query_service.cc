#include "queries/query_service.h"

#include <utility>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "framework/http/status_mapping.h"
#include "framework/status_macros.h"

namespace cqrs::queries {
namespace {

using eventstore::Position;

absl::Status Invalid(std::string message) {
  return http::WithErrorCode(absl::InvalidArgumentError(std::move(message)),
                             "invalid_request");
}

}  // namespace

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
  }
  for (const auto& route : routes_) {
    for (const auto& [name, sql] : route->prepared) conn.prepare(name, sql);
  }
}

void QueryService::Add(http::Router& router, QueryRoute route) {
  routes_.push_back(std::make_unique<QueryRoute>(std::move(route)));
  const QueryRoute* r = routes_.back().get();
  http::RouteOptions options;
  // Handle() only parses and queues; the reads run on the query threads.
  options.execution = http::Execution::kNetworkThread;
  router.AddAsync(
      "GET", r->pattern,
      [this, r](const http::Request& request, http::Responder responder) {
        Handle(*r, request, std::move(responder));
      },
      options);
}

void QueryService::Handle(const QueryRoute& route, const http::Request& request,
                          http::Responder responder) {
  absl::StatusOr<Consistency> consistency = ParseConsistency(request, options_);
  if (!consistency.ok()) {
    http::Response response = http::ResponseFromStatus(consistency.status());
    response.SetHeader(kProjectionPositionHeader,
                       tracker_->Current(route.projections).ToToken());
    responder(std::move(response));
    return;
  }
  // Runs the query on a query thread, if the service still exists.
  auto submit = [lifeline = lifeline_, route = &route,
                 request = std::make_shared<const http::Request>(request),
                 responder]() {
    absl::MutexLock lock(&lifeline->mu);
    QueryService* self = lifeline->service;
    if (self == nullptr) return;  // the responder answers 500
    if (!self->workers_.TrySubmit([self, route, request, responder] {
          responder(self->Run(*route, *request));
        })) {
      responder(http::ErrorResponse(
          503, "overloaded", "too many queries are waiting; retry later"));
    }
  };
  if (!consistency->min_position.has_value()) {
    submit();
    return;
  }
  const Position target = *consistency->min_position;
  const int64_t wait_ms = absl::ToInt64Milliseconds(consistency->max_wait);
  tracker_->WhenReached(
      route.projections, target, absl::Now() + consistency->max_wait,
      [submit = std::move(submit), tracker = tracker_, route = &route, target,
       wait_ms, responder](bool reached) {
        if (reached) {
          submit();
          return;
        }
        http::Response response = http::ErrorResponse(
            503, "projection_lagging",
            absl::StrCat("the read model (",
                         absl::StrJoin(route->projections, ", "),
                         ") has not reached position ", target.ToToken(),
                         " within ", wait_ms, " ms; retry later"));
        response.SetHeader("Retry-After", "1");
        response.SetHeader(kProjectionPositionHeader,
                           tracker->Current(route->projections).ToToken());
        responder(std::move(response));
      });
}

http::Response QueryService::Run(const QueryRoute& route,
                                 const http::Request& request) const {
  // Taken before the read: the read reflects at least this position.
  const Position position = tracker_->Current(route.projections);
  absl::StatusOr<http::Response> result;
  absl::Status status = pool_->Run(
      PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        if (route.snapshot == Snapshot::kShared) {
          pqxx::transaction<pqxx::repeatable_read,
                            pqxx::readwrite_policy::read_only>
              tx(conn);
          result = route.handler(request, tx);
          tx.commit();
        } else {
          pqxx::nontransaction tx(conn);
          result = route.handler(request, tx);
        }
        return absl::OkStatus();
      });
  http::Response response;
  if (absl::IsFailedPrecondition(status)) {
    // The database refused the statement itself (a missing table): the
    // read model is not there (yet), which is not the client's fault.
    response = http::ErrorResponse(
        503, "unavailable", "the read model is not available; retry later");
    response.log_detail = std::string(status.message());
  } else if (!status.ok()) {
    response = http::ResponseFromStatus(status);
  } else if (!result.ok()) {
    response = http::ResponseFromStatus(result.status());
  } else {
    response = *std::move(result);
  }
  response.SetHeader(kProjectionPositionHeader, position.ToToken());
  return response;
}

}  // namespace cqrs::queries

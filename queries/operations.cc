#include "queries/operations.h"

#include "framework/auth/scopes.h"

#include "absl/strings/str_cat.h"
#include "eventstore/position.h"
#include "framework/http/status_mapping.h"
#include "framework/log.h"
#include "framework/status_macros.h"
#include "projections/status.h"

namespace cqrs::queries {
namespace {

constexpr const char* kStates[] = {"running", "catching_up", "rebuilding",
                                   "stopped", "failed",      "outdated"};

}  // namespace

struct Operations::Gauges {
  GaugeFamily* position = nullptr;
  GaugeFamily* lag_events = nullptr;
  GaugeFamily* lag_seconds = nullptr;
  GaugeFamily* state = nullptr;
  GaugeFamily* parked = nullptr;
  Gauge* scrape_ok = nullptr;
  GaugeFamily* pool_connections = nullptr;
  GaugeFamily* pool_waiting = nullptr;
  Gauge* queries_waiting = nullptr;
};

absl::StatusOr<std::unique_ptr<Operations>> Operations::Create(
    OperationsOptions options) {
  if (options.pool == nullptr || options.metrics == nullptr) {
    return absl::InvalidArgumentError("operations need a pool and a registry");
  }
  MetricsRegistry& r = *options.metrics;
  auto g = std::make_unique<Gauges>();
  ASSIGN_OR_RETURN(
      g->position,
      r.AddGauge("cqrs_projection_position",
                 "Global position of the projection's committed checkpoint.",
                 {"projection"}));
  ASSIGN_OR_RETURN(g->lag_events,
                   r.AddGauge("cqrs_projection_lag_events",
                              "Events after the projection's checkpoint "
                              "(an estimate: positions have gaps).",
                              {"projection"}));
  ASSIGN_OR_RETURN(g->lag_seconds,
                   r.AddGauge("cqrs_projection_lag_seconds",
                              "Age of the oldest event the projection has "
                              "not processed; 0 when caught up.",
                              {"projection"}));
  ASSIGN_OR_RETURN(g->state,
                   r.AddGauge("cqrs_projection_state",
                              "1 for the projection's current state, 0 for "
                              "the others.",
                              {"projection", "state"}));
  ASSIGN_OR_RETURN(g->parked,
                   r.AddGauge("cqrs_projection_parked_events",
                              "Events in the projection's dead-letter table.",
                              {"projection"}));
  ASSIGN_OR_RETURN(GaugeFamily * scrape_ok,
                   r.AddGauge("cqrs_projections_scrape_ok",
                              "1 when the projection gauges were read from "
                              "the database at this scrape, else 0."));
  g->scrape_ok = &scrape_ok->WithLabels({});
  ASSIGN_OR_RETURN(g->pool_connections,
                   r.AddGauge("cqrs_db_pool_connections",
                              "Open database connections by pool and state.",
                              {"pool", "state"}));
  ASSIGN_OR_RETURN(
      g->pool_waiting,
      r.AddGauge("cqrs_db_pool_waiting",
                 "Callers waiting for a connection, by pool.", {"pool"}));
  ASSIGN_OR_RETURN(GaugeFamily * waiting,
                   r.AddGauge("cqrs_queries_waiting",
                              "Read-your-writes queries waiting for the "
                              "projections to reach their position."));
  g->queries_waiting = &waiting->WithLabels({});
  return std::unique_ptr<Operations>(
      new Operations(std::move(options), std::move(g)));
}

Operations::Operations(OperationsOptions options,
                       std::unique_ptr<Gauges> gauges)
    : options_(std::move(options)), gauges_(std::move(gauges)) {}

Operations::~Operations() = default;

void Operations::RegisterRoutes(http::Router& router) {
  // On the server's operations lane: they answer while the application's
  // routes are saturated.
  http::RouteOptions metrics;
  metrics.operations = true;
  metrics.access = http::RouteAccess::Scope(std::string(auth::kMetricsScope));
  http::RouteOptions admin;
  admin.operations = true;
  admin.access = http::RouteAccess::Scope(std::string(auth::kAdminScope));
  router.Add(
      "GET", "/metrics", [this](const http::Request&) { return Metrics(); },
      metrics);
  router.Add(
      "GET", "/projections",
      [this](const http::Request&) { return Projections(); }, admin);
  router.Add(
      "POST", "/projections/{name}/resume",
      [this](const http::Request& request) {
        return ResumeProjection(request.PathParam("name"));
      },
      admin);
}

http::Response Operations::Metrics() const {
  absl::StatusOr<std::vector<projections::StoredStatus>> statuses =
      projections::ReadProjectionStatuses(*options_.pool, options_.schema,
                                          options_.event_schema,
                                          options_.projection_versions);
  if (statuses.ok()) {
    for (const projections::StoredStatus& s : *statuses) {
      absl::StatusOr<eventstore::Position> p =
          eventstore::Position::FromToken(s.position);
      if (p.ok()) {
        gauges_->position->WithLabels({s.name}).Set(
            static_cast<double>(p->global_position));
      }
      gauges_->lag_events->WithLabels({s.name}).Set(
          static_cast<double>(s.lag_events));
      gauges_->lag_seconds->WithLabels({s.name}).Set(s.lag_seconds);
      gauges_->parked->WithLabels({s.name}).Set(static_cast<double>(s.parked));
      for (const char* state : kStates) {
        gauges_->state->WithLabels({s.name, state})
            .Set(s.state == state ? 1 : 0);
      }
    }
    gauges_->scrape_ok->Set(1);
  } else {
    Log(LogLevel::kWarn, "metrics could not read the projections",
        {{"error", statuses.status().ToString()}});
    gauges_->scrape_ok->Set(0);
  }
  for (const auto& [name, stats_of] : options_.pools) {
    const PgPool::Stats stats = stats_of();
    gauges_->pool_connections->WithLabels({name, "in_use"}).Set(stats.in_use);
    gauges_->pool_connections->WithLabels({name, "idle"})
        .Set(stats.open - stats.in_use);
    gauges_->pool_waiting->WithLabels({name}).Set(stats.waiting);
  }
  if (options_.tracker != nullptr) {
    gauges_->queries_waiting->Set(
        static_cast<double>(options_.tracker->waiting()));
  }
  http::Response response;
  response.status = 200;
  response.content_type = MetricsRegistry::kContentType;
  response.body = options_.metrics->Render();
  return response;
}

http::Response Operations::Projections() const {
  absl::StatusOr<std::vector<projections::StoredStatus>> statuses =
      projections::ReadProjectionStatuses(*options_.pool, options_.schema,
                                          options_.event_schema,
                                          options_.projection_versions);
  if (!statuses.ok()) return http::ResponseFromStatus(statuses.status());
  return http::JsonResponse(
      200,
      projections::StatusesJson(*statuses, projections::StatusFields::kApi));
}

http::Response Operations::ResumeProjection(absl::string_view name) const {
  absl::Status resumed =
      projections::ResumeProjection(*options_.pool, options_.schema, name);
  if (absl::IsNotFound(resumed)) {
    return http::ResponseFromStatus(
        http::WithErrorCode(resumed, "projection_not_found"));
  }
  if (absl::IsFailedPrecondition(resumed)) {
    // A conflict with the projection's state, not a business rule.
    return http::ResponseFromStatus(http::WithHttpStatus(
        http::WithErrorCode(resumed, "projection_not_failed"), 409));
  }
  if (!resumed.ok()) return http::ResponseFromStatus(resumed);
  absl::StatusOr<std::vector<projections::StoredStatus>> statuses =
      projections::ReadProjectionStatuses(*options_.pool, options_.schema,
                                          options_.event_schema,
                                          options_.projection_versions);
  if (!statuses.ok()) return http::ResponseFromStatus(statuses.status());
  for (const projections::StoredStatus& s : *statuses) {
    if (s.name != name) continue;
    return http::JsonResponse(
        200, projections::StatusJson(s, projections::StatusFields::kApi));
  }
  // Resumed, then gone (the schema was dropped meanwhile).
  return http::ResponseFromStatus(http::WithErrorCode(
      absl::NotFoundError(absl::StrCat("no projection '", name, "'")),
      "projection_not_found"));
}

}  // namespace cqrs::queries

#include "example_app/bank_service.h"

#include <utility>

#include "example_app/bank_projections.h"
#include "example_app/bank_queries.h"
#include "example_app/transfer_process.h"
#include "framework/status_macros.h"

namespace bank {

namespace http = cqrs::http;

absl::StatusOr<std::unique_ptr<BankService>> BankService::Create(
    cqrs::PgPool* pool, BankServiceOptions options) {
  std::unique_ptr<BankService> s(new BankService());
  s->schema_ = options.schema;
  s->run_projections_ = options.run_projections;
  ASSIGN_OR_RETURN(s->request_metrics_,
                   http::RequestMetrics::Create(&s->metrics_));

  BankOptions app_options;
  app_options.schema = options.schema;
  app_options.idempotency.retention = options.idempotency_retention;
  app_options.metrics = &s->metrics_;
  ASSIGN_OR_RETURN(s->app_, BankApp::Create(pool, app_options));

  cqrs::queries::ProgressTrackerOptions tracker_options;
  tracker_options.schema = options.schema;
  tracker_options.refresh_interval = options.poll_interval;
  ASSIGN_OR_RETURN(s->tracker_, cqrs::queries::ProgressTracker::Create(
                                    pool, tracker_options));

  // The runner also creates the read-model tables, so that queries find
  // them even before a `bank project` process first runs; it is started
  // only when the projections run here.
  {
    cqrs::eventstore::PostgresEventStoreOptions store_options;
    store_options.schema = options.schema;
    ASSIGN_OR_RETURN(
        s->projection_store_,
        cqrs::eventstore::PostgresEventStore::Create(pool, store_options));
    cqrs::projections::ProjectionRunnerOptions runner_options;
    runner_options.schema = options.schema;
    runner_options.poll_interval = options.poll_interval;
    runner_options.before_commit_for_testing =
        std::move(options.before_commit_for_testing);
    cqrs::queries::ProgressTracker* tracker = s->tracker_.get();
    // Reads in this process learn of progress without a round trip.
    runner_options.on_progress = [tracker](absl::string_view name,
                                           cqrs::eventstore::Position p) {
      tracker->Record(name, p);
    };
    ASSIGN_OR_RETURN(
        s->process_store_,
        NewProcessStore(pool, options.schema, s->app_->events_appended()));
    std::vector<cqrs::projections::Projection> projections =
        BankRunnerProjections(s->process_store_.get(), options.schema);
    for (const cqrs::projections::Projection& p : projections) {
      s->projection_versions_[p.name] = p.version;
    }
    ASSIGN_OR_RETURN(s->projector_,
                     cqrs::projections::ProjectionRunner::Create(
                         pool, s->projection_store_.get(),
                         std::move(projections), runner_options));
  }

  cqrs::queries::QueryServiceOptions query_options;
  query_options.conninfo = pool->conninfo();
  query_options.schema = options.schema;
  query_options.threads = options.query_threads;
  query_options.batch_concurrency = options.batch_concurrency;
  query_options.max_queued = options.max_queued_queries;
  ASSIGN_OR_RETURN(s->queries_, cqrs::queries::QueryService::Create(
                                    s->tracker_.get(), query_options));

  cqrs::queries::OperationsOptions ops;
  ops.pool = pool;
  ops.schema = options.schema;
  ops.event_schema = options.schema;
  ops.metrics = &s->metrics_;
  ops.pools = {
      {"commands", [pool] { return pool->stats(); }},
      {"queries", [q = s->queries_.get()] { return q->pool_stats(); }}};
  ops.tracker = s->tracker_.get();
  ops.projection_versions = s->projection_versions_;
  ASSIGN_OR_RETURN(s->operations_,
                   cqrs::queries::Operations::Create(std::move(ops)));
  return s;
}

BankService::~BankService() {
  Stop();
  // The query threads go before the tracker whose waiters point at them.
  queries_.reset();
}

void BankService::RegisterRoutes(http::Router& router) {
  app_->RegisterRoutes(router);
  RegisterBankQueries(*queries_, router, schema_);
  operations_->RegisterRoutes(router);
  http::RouteOptions inline_route;
  inline_route.execution = http::Execution::kNetworkThread;
  router.Add(
      "GET", "/openapi.json",
      [](const http::Request&) {
        return http::JsonResponse(200, std::string(OpenApiDocument()));
      },
      inline_route);
}

void BankService::InstrumentServer(http::ServerOptions& options) {
  options.on_request_done =
      [m = request_metrics_.get()](const http::RequestInfo& info) {
        m->Record(info);
      };
}

void BankService::Start() {
  if (started_) return;
  started_ = true;
  app_->StartMaintenance();
  tracker_->Start();
  if (run_projections_) projector_->Start();
}

void BankService::Stop() {
  if (!started_) return;
  started_ = false;
  if (run_projections_) projector_->Stop();
  tracker_->Stop();
}

}  // namespace bank

// Everything `bank serve` runs, in one object: the command side (BankApp),
// the projections (unless turned off), the query side with
// read-your-writes, the operations endpoints and the metrics, wired to one
// router.
//
//   BankServiceOptions options;
//   options.schema = "bank";
//   ASSIGN_OR_RETURN(auto service, BankService::Create(pool.get(), options));
//   http::Router router;
//   service->RegisterRoutes(router);
//   http::ServerOptions server_options = ...;
//   service->InstrumentServer(server_options);
//   service->Start();
//   ... run the server; stop it ...
//   service->Stop();        // after the server has drained
//
// Thread-safety: Start/Stop from one thread; the routes are thread-safe.
// `pool` must outlive the service.
#ifndef EXAMPLE_APP_BANK_SERVICE_H_
#define EXAMPLE_APP_BANK_SERVICE_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "example_app/bank_app.h"
#include "framework/http/request_metrics.h"
#include "framework/http/router.h"
#include "framework/http/server.h"
#include "framework/metrics.h"
#include "framework/pg_pool.h"
#include "projections/runner.h"
#include "queries/operations.h"
#include "queries/progress_tracker.h"
#include "queries/query_service.h"

namespace bank {

struct BankServiceOptions {
  std::string schema = "bank";
  // Run the projections in this process (`bank serve` without
  // --no-projections). Without them, reads follow the projections of
  // another process (`bank project`) through its notifications.
  bool run_projections = true;
  // Threads (and read-only sessions) for queries.
  int query_threads = 8;
  // Batches of one batched query route at once (0: query_threads).
  int batch_concurrency = 2;
  // Queries waiting for a query thread before the next gets 503 overloaded
  // (`bank serve --max-queued-requests`, as the server's worker queue).
  size_t max_queued_queries = 256;
  absl::Duration idempotency_retention = absl::Hours(24);
  // For tests: how often the runner looks for events without a
  // notification, and how often the tracker re-reads the checkpoints.
  absl::Duration poll_interval = absl::Seconds(1);
  // For tests: fault injection in the projection runner
  // (ProjectionRunnerOptions::before_commit_for_testing).
  std::function<absl::Status(absl::string_view projection,
                             cqrs::eventstore::Position last)>
      before_commit_for_testing;
};

class BankService {
 public:
  // Creates the parts; the schema must be migrated (BankApp::Migrate).
  // Errors as BankApp::Create and ProjectionRunner::Create.
  static absl::StatusOr<std::unique_ptr<BankService>> Create(
      cqrs::PgPool* pool, BankServiceOptions options);
  ~BankService();  // stops

  // Commands, queries, /healthz, /readyz, /metrics, /projections and
  // /openapi.json.
  void RegisterRoutes(cqrs::http::Router& router);
  // Counts the server's requests in the metrics.
  void InstrumentServer(cqrs::http::ServerOptions& options);

  // Starts the projections (if run here), the progress tracker and the
  // idempotency maintenance.
  void Start();
  // Stops them. Stop the HTTP server first.
  void Stop();

  BankApp& app() { return *app_; }
  cqrs::MetricsRegistry& metrics() { return metrics_; }
  // Null unless the projections run here.
  cqrs::projections::ProjectionRunner* projector() {
    return run_projections_ ? projector_.get() : nullptr;
  }
  cqrs::queries::ProgressTracker& tracker() { return *tracker_; }

 private:
  BankService() = default;

  // Declared first: the parts below keep pointers into it.
  cqrs::MetricsRegistry metrics_;
  std::unique_ptr<cqrs::http::RequestMetrics> request_metrics_;
  std::unique_ptr<BankApp> app_;
  std::unique_ptr<cqrs::queries::ProgressTracker> tracker_;
  std::unique_ptr<cqrs::eventstore::PostgresEventStore> projection_store_;
  std::unique_ptr<cqrs::eventstore::PostgresEventStore> process_store_;
  std::unique_ptr<cqrs::projections::ProjectionRunner> projector_;
  std::unique_ptr<cqrs::queries::QueryService> queries_;
  std::unique_ptr<cqrs::queries::Operations> operations_;
  std::string schema_;
  // Of this build's projections, for their status.
  std::map<std::string, int> projection_versions_;
  bool run_projections_ = false;
  bool started_ = false;
};

// The bank's OpenAPI 3 document (example_app/openapi.json), as served at
// GET /openapi.json.
absl::string_view OpenApiDocument();

}  // namespace bank

#endif  // EXAMPLE_APP_BANK_SERVICE_H_

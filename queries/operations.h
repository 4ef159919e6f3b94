// The operations endpoints of an application built on the framework:
//
//   GET /metrics      Prometheus text format: everything in the registry,
//                     plus gauges refreshed at each scrape (projection
//                     position, lag, state and dead letters; connection
//                     pools in use, idle and waiting; read-your-writes
//                     queries waiting)
//   GET /projections  the stored status of every projection, as JSON
//   POST /projections/{name}/resume
//                     resumes a projection or process manager that an
//                     error stopped (projections::ResumeProjection): 200
//                     with its status object, 404 projection_not_found,
//                     409 projection_not_failed
//
//   OperationsOptions options;
//   options.pool = pool.get(); options.schema = "bank"; ...
//   ASSIGN_OR_RETURN(auto ops, Operations::Create(options));
//   ops->RegisterRoutes(router);
//
// The routes read (or write) the database (the projections' rows) and so
// run on the server's worker pool. When the database cannot be reached,
// /metrics still answers with what this process knows and
// cqrs_projections_scrape_ok 0.
//
// Thread-safety: thread-safe. Everything in the options must outlive it.
#ifndef QUERIES_OPERATIONS_H_
#define QUERIES_OPERATIONS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "framework/http/router.h"
#include "framework/metrics.h"
#include "framework/pg_pool.h"
#include "queries/progress_tracker.h"

namespace cqrs::queries {

struct OperationsOptions {
  // Reads the projections' rows and the event store's head.
  PgPool* pool = nullptr;
  // Schema of the projections' bookkeeping tables, and of the event store.
  std::string schema = "cqrs";
  std::string event_schema = "cqrs";
  MetricsRegistry* metrics = nullptr;
  // Connection pools to report, by name ("commands", "queries"); each
  // function returns the pool's current stats.
  std::vector<std::pair<std::string, std::function<PgPool::Stats()>>> pools;
  // Optional: its waiting read-your-writes queries are reported.
  const ProgressTracker* tracker = nullptr;
  // The versions of this build's projections (name -> version): a stored
  // read model of another version shows as "outdated".
  std::map<std::string, int> projection_versions;
};

class Operations {
 public:
  // Registers the scrape-time gauges. kInvalidArgument for missing options
  // or when the registry has those gauges already.
  static absl::StatusOr<std::unique_ptr<Operations>> Create(
      OperationsOptions options);
  ~Operations();

  // GET /metrics, GET /projections, POST /projections/{name}/resume.
  void RegisterRoutes(http::Router& router);

  http::Response Metrics() const;
  http::Response Projections() const;
  http::Response ResumeProjection(absl::string_view name) const;

 private:
  struct Gauges;
  Operations(OperationsOptions options, std::unique_ptr<Gauges> gauges);

  const OperationsOptions options_;
  const std::unique_ptr<Gauges> gauges_;
};

}  // namespace cqrs::queries

#endif  // QUERIES_OPERATIONS_H_

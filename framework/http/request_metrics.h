// HTTP metrics for a Server: requests by method, route and status, and a
// latency histogram by method and route (framework/metrics.h).
//
//   ASSIGN_OR_RETURN(auto http_metrics,
//   http::RequestMetrics::Create(&registry)); options.on_request_done = [m =
//   http_metrics.get()](
//       const http::RequestInfo& info) { m->Record(info); };
//
// Routes are the matched patterns ("/accounts/{id}"), or "unmatched", so
// the number of series stays bounded whatever clients send.
//
// Thread-safety: Record() is thread-safe. `registry` must outlive this.
#ifndef FRAMEWORK_HTTP_REQUEST_METRICS_H_
#define FRAMEWORK_HTTP_REQUEST_METRICS_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "framework/http/server.h"
#include "framework/metrics.h"

namespace cqrs {
namespace http {

class RequestMetrics {
 public:
  // Registers cqrs_http_requests_total and
  // cqrs_http_request_duration_seconds. kInvalidArgument when `registry`
  // has them already.
  static absl::StatusOr<std::unique_ptr<RequestMetrics>> Create(
      MetricsRegistry* registry);

  void Record(const RequestInfo& info);

 private:
  RequestMetrics(CounterFamily* requests, HistogramFamily* latency)
      : requests_(requests), latency_(latency) {}

  // The series of one (method, route, status): looked up once, then found
  // here without building label vectors for every request.
  struct Series {
    Counter* requests;
    Histogram* latency;
  };

  // Owned by the registry.
  CounterFamily* const requests_;
  HistogramFamily* const latency_;
  absl::Mutex mu_;
  // Keyed by method, route and status joined by newlines (which a route
  // pattern cannot hold).
  absl::flat_hash_map<std::string, Series> series_ ABSL_GUARDED_BY(mu_);
};

}  // namespace http
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_REQUEST_METRICS_H_

#include "framework/http/request_metrics.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "framework/status_macros.h"

namespace cqrs {
namespace http {

absl::StatusOr<std::unique_ptr<RequestMetrics>> RequestMetrics::Create(
    MetricsRegistry* registry) {
  ASSIGN_OR_RETURN(CounterFamily * requests,
                   registry->AddCounter("cqrs_http_requests_total",
                                        "HTTP requests answered.",
                                        {"method", "route", "status"}));
  ASSIGN_OR_RETURN(
      HistogramFamily * latency,
      registry->AddHistogram(
          "cqrs_http_request_duration_seconds",
          "Time from a request's arrival to its response being written.",
          {"method", "route"}, MetricsRegistry::DefaultLatencyBuckets()));
  return std::unique_ptr<RequestMetrics>(new RequestMetrics(requests, latency));
}

namespace {

// Clients may send any token as a method: only the standard ones get their
// own series.
absl::string_view MethodLabel(absl::string_view method) {
  for (absl::string_view known :
       {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}) {
    if (method == known) return known;
  }
  return "other";
}

}  // namespace

void RequestMetrics::Record(const RequestInfo& info) {
  const std::string method(MethodLabel(info.method));
  const std::string route(info.route);
  requests_->WithLabels({method, route, absl::StrCat(info.status)}).Increment();
  latency_->WithLabels({method, route})
      .Observe(absl::ToDoubleSeconds(info.duration));
}

}  // namespace http
}  // namespace cqrs

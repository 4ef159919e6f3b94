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
  const absl::string_view method = MethodLabel(info.method);
  // Reused by each thread: no allocation once it has grown.
  thread_local std::string key;
  key.clear();
  absl::StrAppend(&key, method, "\n", info.route, "\n", info.status);
  Series series;
  bool found = false;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = series_.find(key);
    if (it != series_.end()) {
      series = it->second;
      found = true;
    }
  }
  if (!found) {
    const std::string method_label(method);
    const std::string route(info.route);
    series.requests = &requests_->WithLabels(
        {method_label, route, absl::StrCat(info.status)});
    series.latency = &latency_->WithLabels({method_label, route});
    absl::MutexLock lock(&mu_);
    series_.emplace(key, series);
  }
  series.requests->Increment();
  series.latency->Observe(absl::ToDoubleSeconds(info.duration));
}

}  // namespace http
}  // namespace cqrs

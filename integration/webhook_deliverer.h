// Delivers the published events to the webhook endpoints of
// integration/webhook_store.h, signed per Standard Webhooks, retried,
// in stream order per endpoint, with dead letters.
//
//   WebhookDelivererOptions options;
//   options.schema = "bank";
//   ASSIGN_OR_RETURN(auto deliverer, WebhookDeliverer::Create(
//       pool, store, &publication, std::move(options)));
//   deliverer->Start();  ...  deliverer->Stop();
//
// Ownership: one process at a time delivers (a PostgreSQL advisory lock on
// a dedicated session, as projections are owned); another one started
// beside it is a hot standby that takes over within `takeover_interval`
// after the owner's session ends (its process died or lost the database).
//
// How an event reaches an endpoint (docs/webhooks.md):
// 1. Queueing. For each enabled endpoint, the events after its cursor are
//    read in commit order (the store's ReadAll: never skips a late commit);
//    each published one that passes the endpoint's filters gets a row in
//    webhook_deliveries (its CloudEvent JSON, the body that is signed and
//    sent byte for byte on every attempt), and the cursor moves past them,
//    in one transaction. An endpoint with max_queued deliveries waiting is
//    not queued for until it has fewer (the log keeps the rest).
// 2. Sending. Per endpoint and stream, only the lowest stream version
//    waiting is sent, and only when it is due; up to `concurrency` streams
//    of one endpoint are in flight at once. Headers: webhook-id (the event
//    id, the same on every attempt and replay), webhook-timestamp (unix
//    seconds of the attempt), webhook-signature (one `v1,` signature per
//    secret: two during a rotation), Content-Type application/json, and
//    User-Agent.
// 3. Outcome. 2xx: delivered (row deleted). 410 Gone: the endpoint is
//    disabled (reason "gone"); the delivery keeps its place. Anything else
//    (other statuses, timeouts, connection errors, a refused address): the
//    next attempt after retry_schedule[attempts] (± jitter), or after
//    Retry-After on 429 and 503 (at most max_retry_after); after the last
//    one the delivery is parked, and the later events of its stream wait
//    behind it until it is replayed or skipped (WebhookStore). An endpoint
//    whose attempts all failed for `disable_after` is disabled (reason
//    "failing"), with a warning in the log.
// Outcomes are written to PostgreSQL in batches (a few milliseconds
// later): after a crash, a delivery whose success was not yet written is
// sent again, with the same webhook-id. Every event is delivered at least
// once.
//
// Thread-safety: Start/Stop from one thread; Statuses() from any thread.
// `pool`, `store`, `publication` and options.metrics must outlive it.
#ifndef INTEGRATION_WEBHOOK_DELIVERER_H_
#define INTEGRATION_WEBHOOK_DELIVERER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "eventstore/postgres_event_store.h"
#include "framework/metrics.h"
#include "framework/pg_pool.h"
#include "integration/cloud_events.h"

namespace cqrs::integration {

struct WebhookDelivererOptions {
  std::string schema;
  // The delay before each attempt (the first usually zero); its size is
  // the number of attempts before a delivery is parked. Close to the
  // Standard Webhooks' suggestion.
  std::vector<absl::Duration> retry_schedule = {
      absl::ZeroDuration(), absl::Seconds(5), absl::Minutes(5),
      absl::Minutes(30),    absl::Hours(2),   absl::Hours(5),
      absl::Hours(10),      absl::Hours(10)};
  // Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter].
  double jitter = 0.2;
  absl::Duration attempt_timeout = absl::Seconds(15);
  // Streams of one endpoint in flight at once.
  int concurrency = 8;
  // An endpoint failing continuously this long is disabled.
  absl::Duration disable_after = absl::Hours(24 * 5);
  absl::Duration max_retry_after = absl::Hours(1);
  // Deliveries waiting per endpoint (in memory) before queueing pauses.
  int max_queued = 10000;
  // CIDRs whose addresses endpoints may have although they are loopback,
  // private, link-local or metadata (http::AddressPolicy::Allow).
  std::vector<std::string> allow_networks;
  // PEM CA bundle to verify endpoints' certificates with; empty: the
  // system's.
  std::string ca_file;
  std::string user_agent = "cqrs-webhooks/1";
  // Without a notification: how often to look for new events. Endpoint
  // changes are looked for this often too (at most every second).
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration takeover_interval = absl::Seconds(1);
  // cqrs_webhook_* metrics (see docs/webhooks.md); may be null.
  MetricsRegistry* metrics = nullptr;
};

// What the owning process knows of one endpoint.
struct WebhookEndpointStatus {
  std::string id;
  std::string url;
  bool enabled = true;
  int64_t queued = 0;     // pending deliveries in memory
  int64_t in_flight = 0;  // attempts under way
  int64_t parked = 0;
  // Age of the oldest waiting event (commit to now); zero when none.
  absl::Duration lag;
};

class WebhookDeliverer {
 public:
  // kInvalidArgument for bad options (an empty retry schedule, a bad CIDR,
  // a CA file that cannot be read, concurrency below 1).
  static absl::StatusOr<std::unique_ptr<WebhookDeliverer>> Create(
      PgPool* pool, eventstore::PostgresEventStore* store,
      const Publication* publication, WebhookDelivererOptions options);
  ~WebhookDeliverer();  // Stop()

  // Starts trying to own the deliveries, and delivering once it does.
  void Start();
  // Stops sending; attempts in flight finish (or time out) and their
  // outcomes are written. Idempotent.
  void Stop();

  bool owner() const;
  // CPU time of the HTTP client's thread (for benchmarks).
  absl::Duration client_cpu_time() const;
  // Empty unless this process owns the deliveries.
  std::vector<WebhookEndpointStatus> Statuses() const;

 private:
  class Impl;
  explicit WebhookDeliverer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cqrs::integration

#endif  // INTEGRATION_WEBHOOK_DELIVERER_H_

// Relays the published events (integration/cloud_events.h) to a RabbitMQ
// exchange, in commit order, with publisher confirms.
//
//   AmqpRelayOptions options;
//   options.schema = "bank";
//   options.url = "amqp://guest:guest@127.0.0.1:5672/";
//   options.exchange = "bank.events";
//   ASSIGN_OR_RETURN(auto relay, AmqpRelay::Create(pool, store, &pub,
//                                                  std::move(options)));
//   relay->Start();  ...  relay->Stop();
//
// Each published event becomes one persistent message on `exchange`, routing
// key "<category>.<CloudEvents type>" (e.g.
// "account.bank.account.deposited.v1"), message_id the event id, published
// with the mandatory flag, in the CloudEvents AMQP binding: binary mode (the
// default) puts every attribute but `data` in `cloudEvents:`-prefixed
// application properties, `datacontenttype` in content-type and `data` in
// the body; structured mode sends the whole CloudEvent JSON as the body
// (content-type application/cloudevents+json).
//
// Delivery: the relay reads a page of the log after its checkpoint (commit
// order: a late commit is never skipped), publishes the page on one channel
// (so the messages of a stream keep their order), waits for the broker's
// confirms, and only then stores the new checkpoint. After a crash, a lost
// connection or a nack, the unconfirmed part is published again: a consumer
// may see a message twice, always with the same message_id, never a gap.
// A message the broker cannot route (no queue bound for its key) comes back
// (mandatory): the relay logs it, counts it in
// cqrs_relay_unroutable_total and shows it as its last error, and goes on;
// RabbitMQ would have dropped it silently.
//
// Ownership: one process relays at a time (an advisory lock on a dedicated
// session); another one is a hot standby that takes over within
// `takeover_interval` after the owner's session ends. Broker down or
// restarting: the relay reconnects with backoff (0.25 s doubling to 10 s),
// and resumes from its checkpoint.
//
// Table: <schema>.amqp_relays (one row per relay name: checkpoint,
// published and unroutable counts, state, last error).
//
// Thread-safety: Start/Stop from one thread; Status() from any thread.
// `pool`, `store`, `publication` and options.metrics must outlive it.
#ifndef INTEGRATION_AMQP_RELAY_H_
#define INTEGRATION_AMQP_RELAY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "eventstore/position.h"
#include "eventstore/postgres_event_store.h"
#include "framework/metrics.h"
#include "framework/pg_pool.h"
#include "integration/cloud_events.h"

namespace cqrs::integration {

enum class CloudEventsAmqpMode { kBinary, kStructured };

struct AmqpRelayOptions {
  std::string schema;
  // Which relay (its checkpoint row): several relays may follow one log to
  // different brokers.
  std::string name = "default";
  std::string url;  // amqp://user:password@host:port/vhost
  std::string exchange;
  // Declare the exchange (durable, `exchange_type`) when it does not exist;
  // otherwise a missing exchange is an error at Create().
  bool declare_exchange = false;
  std::string exchange_type = "topic";
  CloudEventsAmqpMode mode = CloudEventsAmqpMode::kBinary;
  // Events read (and published) per page.
  int batch_size = 1000;
  // Pages published before waiting for the oldest one's confirms; 1
  // publishes a page and waits for all of it.
  int pipeline_pages = 4;
  absl::Duration confirm_timeout = absl::Seconds(30);
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration takeover_interval = absl::Seconds(1);
  absl::Duration max_backoff = absl::Seconds(10);
  // cqrs_relay_* metrics; may be null.
  MetricsRegistry* metrics = nullptr;
};

struct AmqpRelayStatus {
  std::string name;
  // As the owner last wrote it: "connecting", "relaying", "caught_up",
  // "disconnected" (retrying); "stopped" when no process holds the relay.
  std::string state;
  eventstore::Position checkpoint;
  int64_t published = 0;
  int64_t unroutable = 0;
  std::string last_error;
  std::optional<absl::Time> last_error_at;
  std::optional<absl::Time> updated_at;
  // Events after the checkpoint (at most 1,000,000 counted), and the age of
  // the oldest of them.
  int64_t lag_events = 0;
  absl::Duration lag;
};

class AmqpRelay {
 public:
  // Creates or upgrades <schema>.amqp_relays (idempotent).
  static absl::Status Migrate(PgPool& pool, absl::string_view schema);

  // Connects once to check the configuration: kInvalidArgument for bad
  // options (a bad URL, no exchange); kUnavailable ("cannot reach the AMQP
  // broker at ...") when the broker cannot be reached or refuses the login;
  // kNotFound when the exchange does not exist and declare_exchange is off;
  // kFailedPrecondition when the schema is not migrated.
  static absl::StatusOr<std::unique_ptr<AmqpRelay>> Create(
      PgPool* pool, eventstore::PostgresEventStore* store,
      const Publication* publication, AmqpRelayOptions options);
  ~AmqpRelay();  // Stop()

  void Start();
  // Stops after the page in flight is confirmed (or its wait fails).
  // Idempotent.
  void Stop();

  bool owner() const;

  // The relay `name` in `schema` as stored (any process may ask; state as
  // the owner last wrote it), with its lag.
  static absl::StatusOr<AmqpRelayStatus> ReadStatus(
      PgPool& pool, eventstore::PostgresEventStore& store,
      absl::string_view schema, absl::string_view name);

 private:
  class Impl;
  explicit AmqpRelay(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The AMQP message of a published event (a CloudEvent JSON object) in
// `mode`, for `exchange`. kInvalidArgument when `cloud_event` is not a
// CloudEvent JSON object.
struct AmqpMessageParts {
  std::string routing_key;
  std::string message_id;
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};
absl::StatusOr<AmqpMessageParts> CloudEventToAmqp(absl::string_view cloud_event,
                                                  CloudEventsAmqpMode mode);

}  // namespace cqrs::integration

#endif  // INTEGRATION_AMQP_RELAY_H_

// The consumers App::Consume declares: messages of an AMQP queue applied as
// commands through the command route's own handler (docs/amqp.md
// "Inbound").
//
//   ASSIGN_OR_RETURN(auto inbound, Inbound::Create(spec, &router, options));
//   inbound->Start();   // ... Stop(), or destroy it
//
// Threads: one consumer thread owns the AMQP connection (deliveries, acks,
// dead letters, reconnecting); `spec.concurrency` workers run the commands.
// A delivery goes to worker hash(aggregate id) % concurrency, so one
// aggregate's messages apply in queue order; the worker posts the outcome
// back and the consumer thread acks. A transient failure (5xx, 429) is
// retried by its worker with backoff until it applies or Stop(); a message
// not acked when the process stops (or the connection breaks) is
// redelivered by the broker, and its Idempotency-Key (the message_id)
// makes the redelivery apply once.
//
// Thread-safety: Start and Stop from one thread. `router` must outlive the
// object, and so must what its command handlers use (the stores).
#ifndef APP_INTERNAL_INBOUND_H_
#define APP_INTERNAL_INBOUND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "app/app.h"
#include "framework/http/router.h"
#include "framework/metrics.h"
#include "integration/amqp_client.h"

namespace cqrs::app_internal {

struct InboundOptions {
  std::string url;  // amqp://...
  // From InboundCounters(); null: no metrics.
  CounterFamily* messages = nullptr;  // {queue, outcome}
  CounterFamily* retries = nullptr;   // {queue}
  // For tests: the first transient retry's wait (then doubling to 5 s).
  absl::Duration first_backoff = absl::Milliseconds(100);
};

// Registers cqrs_inbound_messages_total{queue,outcome} and
// cqrs_inbound_retries_total{queue} in `registry`; sets them in `options`.
absl::Status InboundCounters(MetricsRegistry& registry,
                             InboundOptions& options);

// The default ConsumerBuilder::IdFrom: the header cloudEvents:subject, or
// the `subject` of a structured CloudEvent (content type
// application/cloudevents+json); "" when there is none.
std::string CloudEventSubject(const integration::amqp::Delivery& delivery);

class Inbound {
 public:
  // Connects and declares the topology: the dead-letter exchange (fanout,
  // durable), "<queue>.dead" bound to it, the queue (durable,
  // x-dead-letter-exchange), and its bindings (spec.bindings: each exchange
  // declared as a durable topic exchange when missing, then the queue
  // bound with its routing key). Returns the connection's errors
  // (amqp::Connection::Open: kUnavailable, kUnauthenticated, ...) and
  // kFailedPrecondition when the queue exists with other arguments.
  // `spec` comes from a finalized App.
  static absl::StatusOr<std::unique_ptr<Inbound>> Create(
      ConsumerBuilder::Spec spec, const http::Router* router,
      InboundOptions options);
  ~Inbound();  // Stop()
  Inbound(const Inbound&) = delete;
  Inbound& operator=(const Inbound&) = delete;

  // Starts consuming.
  void Start();
  // Stops the workers after the command each is running, acks what has
  // applied, and closes the connection; unacknowledged messages go back to
  // the queue. Idempotent.
  void Stop();

 private:
  struct State;
  explicit Inbound(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace cqrs::app_internal

#endif  // APP_INTERNAL_INBOUND_H_

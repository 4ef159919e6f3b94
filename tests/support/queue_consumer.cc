#include "tests/support/queue_consumer.h"

#include <utility>

#include "absl/time/clock.h"
#include "tests/support/test_broker.h"

namespace cqrs::testing {

namespace amqp = integration::amqp;

QueueConsumer::QueueConsumer(std::string queue)
    : url_(TestAmqpUrl()),
      queue_(std::move(queue)),
      thread_([this] { Run(); }) {}

QueueConsumer::~QueueConsumer() {
  stop_ = true;
  thread_.join();
}

std::vector<amqp::Delivery> QueueConsumer::Deliveries() const {
  absl::MutexLock lock(&mu_);
  return deliveries_;
}

std::set<std::string> QueueConsumer::Ids() const {
  absl::MutexLock lock(&mu_);
  return ids_;
}

size_t QueueConsumer::DistinctIds() const {
  absl::MutexLock lock(&mu_);
  return ids_.size();
}

size_t QueueConsumer::Count() const {
  absl::MutexLock lock(&mu_);
  return deliveries_.size();
}

void QueueConsumer::Run() {
  while (!stop_) {
    auto conn = amqp::Connection::Open(url_);
    if (!conn.ok() || !(*conn)->Qos(500).ok() ||
        !(*conn)->Consume(queue_).ok()) {
      // The broker is down (the test restarts or kills it): reconnect
      // pacing, until it is back.
      absl::SleepFor(absl::Milliseconds(100));
      continue;
    }
    while (!stop_) {
      auto d = (*conn)->Next(absl::Milliseconds(100));
      if (!d.ok()) break;  // the connection broke: connect again
      if (!d->has_value()) continue;
      const uint64_t tag = (*d)->delivery_tag;
      {
        absl::MutexLock lock(&mu_);
        ids_.insert((*d)->message_id);
        deliveries_.push_back(std::move(**d));
      }
      if (!(*conn)->Ack(tag).ok()) break;
    }
  }
}

}  // namespace cqrs::testing

// A queue on the test broker consumed on a thread of its own, as a durable
// downstream consumer would: it reconnects whenever its connection breaks
// (the broker was restarted or killed), records every delivery and
// acknowledges each once recorded, so a message the broker redelivers
// after a break shows up again.
//
//   cqrs::testing::QueueConsumer consumer(queue);  // the queue exists
//   REQUIRE(Eventually([&] { return consumer.DistinctIds() == n; }));
//   for (const auto& d : consumer.Deliveries()) ...
//
// Thread-safety: construct and destroy on the test's thread; the accessors
// are thread-safe. No Catch2 on the consumer's thread.
#ifndef TESTS_SUPPORT_QUEUE_CONSUMER_H_
#define TESTS_SUPPORT_QUEUE_CONSUMER_H_

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "integration/amqp_client.h"

namespace cqrs::testing {

class QueueConsumer {
 public:
  // Starts consuming `queue` (which must exist) on the node of
  // TestAmqpUrl().
  explicit QueueConsumer(std::string queue);
  ~QueueConsumer();  // stops and joins the thread

  QueueConsumer(const QueueConsumer&) = delete;
  QueueConsumer& operator=(const QueueConsumer&) = delete;

  // Every delivery so far, in the order they arrived, repeats included.
  std::vector<integration::amqp::Delivery> Deliveries() const;
  // The distinct message ids among them, and how many deliveries in all.
  std::set<std::string> Ids() const;
  size_t DistinctIds() const;
  size_t Count() const;

 private:
  void Run();

  const std::string url_;
  const std::string queue_;
  std::atomic<bool> stop_{false};
  mutable absl::Mutex mu_;
  std::vector<integration::amqp::Delivery> deliveries_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> ids_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace cqrs::testing

#endif  // TESTS_SUPPORT_QUEUE_CONSUMER_H_

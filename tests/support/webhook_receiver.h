// An HTTP server in a test that takes webhook deliveries: it records the
// `webhook-id` of every POST /hook it gets and answers 204. Its access
// lines (one per POST) are not logged while it lives.
//
//   WebhookReceiver receiver;  // outlives whatever delivers to it
//   ... `APP webhooks create --url receiver.Url() ...` ...
//   CHECK(receiver.Ids() == expected);
//
// Thread-safety: Ids() and Posts() may be called from any thread while the
// server's own threads record deliveries.
#ifndef TESTS_SUPPORT_WEBHOOK_RECEIVER_H_
#define TESTS_SUPPORT_WEBHOOK_RECEIVER_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "framework/http/router.h"
#include "framework/http/server.h"
#include "framework/log.h"

namespace cqrs::testing {

class WebhookReceiver {
 public:
  // Listens on 127.0.0.1:0; fails the test when it cannot.
  WebhookReceiver();
  ~WebhookReceiver();

  // http://127.0.0.1:<port>/hook
  std::string Url() const;
  // The distinct `webhook-id`s received so far.
  std::set<std::string> Ids() const;
  // Every POST so far, repeats included.
  int64_t Posts() const;

 private:
  const LogLevel log_level_;
  http::Router router_;
  std::unique_ptr<http::Server> server_;
  mutable absl::Mutex mu_;
  std::set<std::string> ids_ ABSL_GUARDED_BY(mu_);
  int64_t posts_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cqrs::testing

#endif  // TESTS_SUPPORT_WEBHOOK_RECEIVER_H_

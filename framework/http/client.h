// An asynchronous HTTP/1.1 client for outgoing requests (webhook
// deliveries), on libcurl's multi interface.
//
//   ASSIGN_OR_RETURN(auto client, http::HttpClient::Create({}));
//   http::ClientRequest request;
//   request.url = "https://hooks.example.com/x";
//   client->Send(std::move(request), [](http::ClientResponse r) { ... });
//
// Why libcurl: its multi interface drives hundreds of transfers on one
// thread, keeps a cache of connections per host (keep-alive reuse),
// verifies TLS certificates and host names with OpenSSL and the system CA
// bundle, enforces timeouts, and CURLOPT_OPENSOCKETFUNCTION lets the client
// check the exact address it is about to connect to: DNS may answer
// differently by the time of a delivery than when the endpoint was accepted
// (framework/http/address_policy.h), so every connection is checked.
//
// Threads: one thread of the client's own runs every transfer
// (curl_multi_poll / curl_multi_perform) and every `done` callback. Send()
// from any thread queues the request and wakes it.
//
// Per request: HTTP/1.1 with keep-alive, at most max_connections_per_host
// connections to one host (further requests wait for one) and
// max_total_connections in all; redirects are not followed (a 3xx is a
// status like any other); no proxy, whatever the environment says; http and
// https only; TLS certificates and host names verified; no
// `Expect: 100-continue`. `timeout` bounds the whole attempt, waiting for a
// connection included. Of the response headers only Retry-After is read.
// Of the body, the first max_response_body bytes are kept and the rest is
// read and dropped. An address the policy refuses is never connected to:
// the request fails with kBlockedAddress.
//
// Shutdown: the destructor stops the thread; requests not finished by then
// complete with Failure::kOther "client stopped".
//
// Thread-safety: Send(), CpuTime() and in_flight() are thread-safe.
// Destroy the client only once no other thread calls Send(), and never from
// a callback; callbacks may call Send() (during shutdown such a request
// completes at once, as stopped).
#ifndef FRAMEWORK_HTTP_CLIENT_H_
#define FRAMEWORK_HTTP_CLIENT_H_

#include <atomic>
#include <cstddef>
#include <ctime>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "framework/http/address_policy.h"

namespace cqrs {
namespace http {

struct ClientRequest {
  std::string method = "POST";
  // An absolute http or https URL (see CheckUrl()).
  std::string url;
  // Sent as given. Without a Content-Type, none is sent. A name or value
  // with CR, LF or NUL, or a name with ':', fails the request (kOther).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // The whole attempt: waiting for a connection, connecting, TLS, sending
  // and receiving.
  absl::Duration timeout = absl::Seconds(15);
};

struct ClientResponse {
  // The HTTP status; 0 when no complete response arrived (see failure).
  int status = 0;
  enum class Failure {
    kNone,
    // `timeout` passed.
    kTimeout,
    // The host did not resolve, or no connection could be made (refused,
    // unreachable).
    kConnect,
    // Every address tried was refused by the address policy; none was
    // connected to.
    kBlockedAddress,
    // The TLS handshake failed, the certificate included.
    kTls,
    // Anything else: the connection broke, the response was not HTTP, the
    // request was invalid, the client stopped.
    kOther,
  };
  Failure failure = Failure::kNone;
  // For humans, when failure != kNone. Never contains the request body.
  std::string error;
  // From a Retry-After header (delta-seconds or HTTP-date; a date in the
  // past is zero), when present and valid.
  std::optional<absl::Duration> retry_after;
  // The first max_response_body bytes of the body at most.
  std::string body;
  absl::Duration elapsed;
};

struct HttpClientOptions {
  // Checked on every connect, against the address about to be connected.
  AddressPolicy address_policy;
  std::string user_agent = "cqrs-webhooks/1";
  // PEM CA certificates to trust; empty: the system CA bundle.
  std::string ca_file;
  int max_connections_per_host = 8;
  int max_total_connections = 256;
  // Response body bytes kept (ClientResponse::body).
  size_t max_response_body = 4096;
};

class HttpClient {
 public:
  // Starts the client's thread. Returns kInvalidArgument when a connection
  // limit is below 1 or `ca_file` cannot be read, and kInternal when
  // libcurl cannot be initialised.
  static absl::StatusOr<std::unique_ptr<HttpClient>> Create(
      HttpClientOptions options);

  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;
  // Stops the thread. Requests in flight or queued complete with
  // Failure::kOther "client stopped" (each callback still runs exactly
  // once, on the client's thread, before this returns).
  ~HttpClient();

  // Starts `request`. `done` runs exactly once, on the client's thread:
  // keep it short, never block, never throw. Failures arrive there, never
  // here.
  void Send(ClientRequest request, std::function<void(ClientResponse)> done);

  // CPU time the client's thread has used so far (for benchmarks).
  absl::Duration CpuTime() const;

  // Requests sent whose callback has not returned yet.
  size_t in_flight() const { return in_flight_.load(); }

 private:
  class Impl;
  struct Queued {
    ClientRequest request;
    std::function<void(ClientResponse)> done;
  };

  explicit HttpClient(std::unique_ptr<Impl> impl);
  // The client's thread.
  void Run();

  // Runs `done` and counts the request as finished.
  void Complete(std::function<void(ClientResponse)>& done,
                ClientResponse response);

  // Constant after construction. Only the client's thread uses *impl_
  // (curl_multi_wakeup() aside).
  const std::unique_ptr<Impl> impl_;

  std::atomic<size_t> in_flight_{0};

  absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Written by Create() only (and joined by the destructor).
  std::thread thread_;
  clockid_t cpu_clock_{};
};

}  // namespace http
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_CLIENT_H_

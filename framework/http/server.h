// An HTTP/1.1 server (1.0 too) that feeds requests to a Router.
//
//   http::ServerOptions options;
//   options.listen_address = "127.0.0.1:8080";
//   ASSIGN_OR_RETURN(auto server, http::Server::Create(options, &router));
//   RETURN_IF_ERROR(server->Run());   // Until SIGINT/SIGTERM or Shutdown().
//   pool.reset();                     // Only now close the database pool.
//
// Threads: `network_threads` threads run one io_context that accepts,
// parses and writes; they never block. Handlers with Execution::kWorkerPool
// (the default) run on `worker_threads` separate threads fed by a queue of at
// most `max_queued_requests`. Handlers with Execution::kNetworkThread run
// inline. Operations routes (RouteOptions::operations: /healthz, /readyz,
// /metrics, /projections...) run their kWorkerPool handlers on a lane of
// their own (`operations_threads`, a queue of 64), so that they answer
// while the workers are saturated.
//
// Limits, and how the server degrades when they are reached:
//  - Worker queue. A request that finds `max_queued_requests` waiting is
//    answered 503 overloaded with Retry-After: 1 at once; one that waits
//    `queue_timeout` without a worker taking it gets the same and its
//    handler never runs. The queue bound must be below max_connections
//    (each connection has at most one request in flight), so the queue
//    fills, and refuses, before the connection table does.
//  - Connections. `max_connections` counts every open connection, idle and
//    parked ones included. From 3/4 of it the server is under pressure
//    (until it is back to 1/2): a connection waiting for a request (a new
//    one before its first byte, or an idle kept-alive one) and a request
//    header started meanwhile get at most `pressure_timeout` instead of
//    read_timeout / idle_timeout, and connections already waiting are cut
//    to that too. So connections that send nothing hold a full table for
//    seconds, not for the read timeout.
//  - Beyond max_connections, up to `overflow_connections` more are accepted
//    and read with pressure_timeout: a request for an operations route is
//    served, any other is answered 503 overloaded with Retry-After: 1; then
//    the connection closes. Only beyond those is a connection closed
//    without a response.
//
// Per request the server: enforces header_limit (431) and body_limit (413,
// also when Content-Length announces more), answers malformed HTTP with 400
// and closes, refuses a NUL byte anywhere in the target (raw or as "%00"),
// a header or the body with 400 invalid_request (http::Request::Create()),
// takes X-Correlation-Id (1..200 printable ASCII; otherwise a new UUID) and
// echoes it, routes (404 / 405 with Allow; HEAD runs the GET route and gets
// its status and headers, Content-Length included, without the body;
// OPTIONS on an existing path is 204 with Allow and needs no token; see
// router.h), applies the route's access (framework/http/auth.h: 429, 401,
// 403), its options (415), runs the handler (an exception escaping it
// becomes 500), and
// writes exactly one access-log line (framework/log.h) once the response is
// written: method, path, status, duration_ms, correlation_id, route, actor
// (the key id of an authenticated request, "-" otherwise).
//
// HTTPS, when tls_cert_file and tls_key_file are set (PEM): TLS 1.2 and 1.3
// only, for TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305 in the server's
// order, no compression, no renegotiation. A new connection's first byte
// decides: a TLS handshake must complete within the first request's
// deadline (read_timeout from accept, pressure_timeout when it began under
// pressure; a handshake under way is not cut when pressure begins), and a
// failed one closes the connection (logged at debug level only); anything
// else gets one plain-text 400 invalid_request "this port serves HTTPS" with
// Connection: close, and the connection closes as after a malformed
// request. Everything above then holds over TLS as it does in plain HTTP; a
// connection that closes after a response first sends close_notify (without
// waiting for the client's).
// Certificate rotation: ReloadTls(), or SIGHUP during Run(), reads both
// files again into a new context. Connections whose handshake begins from
// then on use it; those already past it keep theirs, so nothing is
// dropped. When the files are bad, the certificate in use stays and a
// warning is logged. Write the new files before signalling (the key and
// certificate are read one after the other, so rename new files into place
// rather than editing them where they are).
//
// Shutdown, on Shutdown() or a signal during Run(): stop accepting; close
// idle keep-alive connections; call `on_shutdown`, where the application
// answers the requests it parks (read-your-writes waits) at once; let
// requests in flight finish and their responses be written, each connection
// closing after its response; after `drain_timeout` close whatever remains;
// then wait for handlers still running on the worker pools to return. When
// Run() or Shutdown() returns, no handler is running and none will start, so
// the owner may then close what handlers use (the database pool). A
// Responder called after that is ignored.
//
// Thread-safety: Start(), Run(), Shutdown(), ReloadTls() and port() are
// thread-safe.
// Shutdown() blocks and must not be called from a handler.
#ifndef FRAMEWORK_HTTP_SERVER_H_
#define FRAMEWORK_HTTP_SERVER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "framework/http/auth.h"
#include "framework/http/router.h"

namespace cqrs {
namespace http {

// What on_request_done learns about each request.
struct RequestInfo {
  absl::string_view method;
  // The matched route pattern, or "unmatched" (404, 405, malformed, ...).
  absl::string_view route;
  int status = 0;
  absl::Duration duration;
};

struct ServerOptions {
  // "host:port" with a numeric IPv4 or bracketed IPv6 host ("[::1]:8080").
  // Port 0 picks a free port; see Server::port().
  std::string listen_address = "127.0.0.1:8080";
  int network_threads = 2;
  // Threads for blocking handlers; size it like the database pool.
  int worker_threads = 16;
  // Requests waiting for a worker beyond this many get 503 overloaded with
  // Retry-After. Must be less than max_connections.
  size_t max_queued_requests = 256;
  // A request that waited this long for a worker gets 503 overloaded with
  // Retry-After instead; its handler never runs.
  absl::Duration queue_timeout = absl::Seconds(5);
  // Largest accepted request body in bytes (413 payload_too_large above).
  size_t body_limit = 1 << 20;
  // Largest accepted request line plus headers (431 above).
  size_t header_limit = 16 << 10;
  // Time allowed to receive a whole request once its first byte arrived, and
  // for a new connection's first request to arrive.
  absl::Duration read_timeout = absl::Seconds(30);
  // Time a kept-alive connection may wait for its next request.
  absl::Duration idle_timeout = absl::Seconds(60);
  // Time allowed to write one response.
  absl::Duration write_timeout = absl::Seconds(30);
  // How long shutdown waits for requests in flight.
  absl::Duration drain_timeout = absl::Seconds(10);
  // Open connections, idle and parked ones included (see the limits above).
  int max_connections = 1024;
  // Connections beyond max_connections that are still answered (operations
  // routes served, others 503 overloaded) before they close; 0: none.
  int overflow_connections = 64;
  // Under pressure, the most a connection may wait for a request or for a
  // request's header.
  absl::Duration pressure_timeout = absl::Seconds(2);
  // SO_SNDBUF of a connection once it streams a response (the kernel
  // doubles it; 0: the kernel's autotuned default, up to megabytes). Keeps
  // what waits for a client that stops reading in StreamWriter::buffered(),
  // where the producer bounds it, rather than in kernel memory.
  int stream_send_buffer = 128 << 10;
  // Threads of the operations lane (routes with RouteOptions::operations).
  int operations_threads = 2;
  // Authentication and per-route scopes (framework/http/auth.h); off
  // unless auth.authenticator is set. With it, Create() refuses a router
  // with a route whose RouteOptions::access is undeclared.
  AuthOptions auth;
  // HTTPS (see above): the PEM certificate, its chain after it, and its
  // unencrypted PEM private key. Both or neither; empty: plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Called once when shutdown begins, on the thread that shuts down, after
  // the server stopped accepting and before it waits for requests in
  // flight: answer parked requests here (their Responders still deliver).
  // Must not block for long.
  std::function<void()> on_shutdown;
  // Called once per request after its response is written (or failed to
  // be), on a network thread: keep it cheap and thread-safe. For metrics.
  std::function<void(const RequestInfo&)> on_request_done;
};

// Whether "host:port" (ServerOptions::listen_address) names a loopback
// address only (127.0.0.0/8, ::1). kInvalidArgument when it does not parse.
absl::StatusOr<bool> IsLoopbackListenAddress(absl::string_view address);

class Server {
 public:
  // Validates `options`, loads the TLS files, resolves and binds the listen
  // address. Returns kInvalidArgument for bad options (max_queued_requests
  // not below max_connections included, only one of the TLS files given),
  // a TLS file that cannot be read, is not PEM or whose key does not match
  // the certificate (the message names the file), or a router whose
  // status() is not OK; and kUnavailable when the address cannot be bound
  // (e.g. in use).
  // `router` must outlive the server.
  static absl::StatusOr<std::unique_ptr<Server>> Create(ServerOptions options,
                                                        const Router* router);

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  // Shuts down (see above) if still running.
  ~Server();

  // Starts the threads and accepting; returns at once. Returns
  // kFailedPrecondition when already started or shut down.
  absl::Status Start();

  // Starts if not started, then blocks until SIGINT or SIGTERM arrives or
  // Shutdown() is called, and shuts down gracefully. With TLS, SIGHUP
  // meanwhile calls ReloadTls() (a failure is logged; serving goes on).
  // Returns kFailedPrecondition when the server was already shut down.
  absl::Status Run();

  // Reads tls_cert_file and tls_key_file again (see above). On success, new
  // connections get the new certificate and open ones keep theirs. Returns
  // kFailedPrecondition when the server has no TLS, and kInvalidArgument as
  // Create() does when the files are bad: the certificate in use stays (a
  // warning is logged); fix the files and call again. Blocks while it reads
  // the two files.
  absl::Status ReloadTls();

  // Graceful shutdown as described above; blocks until it completes.
  // Idempotent: later and concurrent calls wait for the same shutdown.
  void Shutdown();

  // The bound port (useful with port 0).
  int port() const { return port_; }

  // Connections open now, regular and overflow: a connection counts until
  // the server has closed its socket and let it go (for tests that need the
  // table empty before they fill it).
  int open_connections() const;

 private:
  class Impl;
  enum class State { kCreated, kRunning, kStopping, kStopped };

  Server(std::unique_ptr<Impl> impl, int port);

  // Constant after construction.
  const std::unique_ptr<Impl> impl_;
  const int port_;

  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kCreated;
};

}  // namespace http
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_SERVER_H_

// HTTP request and response values that handlers see, independent of the
// network library underneath.
//
//   http::Response GetAccount(const http::Request& request) {
//     absl::string_view id = request.PathParam("id");
//     if (absl::optional<absl::string_view> limit = request.Query("limit")) ...
//     return http::JsonResponse(200, R"({"account_id":"a1"})");
//   }
//
// Every error response has the body {"error":{"code":"...","message":"..."}}
// built by ErrorResponse().
//
// Thread-safety: plain values. Const methods may be called concurrently;
// anything else needs external synchronization.
#ifndef FRAMEWORK_HTTP_MESSAGE_H_
#define FRAMEWORK_HTTP_MESSAGE_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"

namespace cqrs {
namespace http {

// Name/value pairs in arrival order; names may repeat.
using HeaderList = std::vector<std::pair<std::string, std::string>>;
using ParamList = std::vector<std::pair<std::string, std::string>>;

// Who sent a request: the API key the server authenticated it with
// (framework/http/auth.h). Logs and event metadata name the key by `id`,
// never by its secret.
struct Principal {
  std::string id;
  std::vector<std::string> scopes;

  bool HasScope(absl::string_view scope) const;
};

class Request {
 public:
  Request() = default;

  // Builds a request from its parts, splitting `target` (origin form, e.g.
  // "/accounts/a%201?limit=5") into the percent-decoded path and query.
  // Returns kInvalidArgument when `target` does not start with '/' or holds
  // a malformed percent escape, and when a NUL byte appears anywhere: in the
  // target (raw, or percent-decoded from "%00" in the path or the query), a
  // header name or value, or the body. The server answers these with 400
  // invalid_request, before any route runs. So a handler never sees U+0000,
  // which C strings (libpq parameters) would cut off and PostgreSQL's text
  // and jsonb cannot store.
  static absl::StatusOr<Request> Create(std::string method, std::string target,
                                        HeaderList headers, std::string body);

  // As received, e.g. "GET". HTTP methods are case-sensitive.
  const std::string& method() const { return method_; }
  // The request target exactly as received, query included.
  const std::string& target() const { return target_; }
  // The percent-decoded path without the query, e.g. "/accounts/a 1".
  const std::string& path() const { return path_; }
  // The path before decoding; the router matches its segments one by one,
  // so that an encoded '/' ("%2F") stays inside one segment.
  const std::string& raw_path() const { return raw_path_; }

  // Query parameters, percent-decoded ('+' is a space), in order.
  const ParamList& query_params() const { return query_; }
  // The first value of query parameter `name`, or nullopt when absent.
  absl::optional<absl::string_view> Query(absl::string_view name) const;

  const HeaderList& headers() const { return headers_; }
  // The first value of header `name`, compared case-insensitively, or
  // nullopt when absent.
  absl::optional<absl::string_view> Header(absl::string_view name) const;

  const std::string& body() const { return body_; }

  // The value of path parameter `name` from the matched route pattern
  // ("/accounts/{id}" -> PathParam("id")), percent-decoded. Returns an empty
  // view when the route has no such parameter; a matched parameter is never
  // empty.
  absl::string_view PathParam(absl::string_view name) const;
  const ParamList& path_params() const { return path_params_; }

  // The validated X-Correlation-Id of the request, or one generated for it.
  // Echoed in the response's X-Correlation-Id header.
  const std::string& correlation_id() const { return correlation_id_; }

  // The pattern of the matched route ("/accounts/{id}"); empty before
  // routing.
  const std::string& route_pattern() const { return route_pattern_; }

  // The authenticated caller, or nullptr when the route is open or the
  // server runs without authentication.
  const Principal* principal() const { return principal_.get(); }
  // What event metadata records as the actor: the principal's key id, or
  // "anonymous" without one.
  absl::string_view actor() const;

  // Set by the server and the router; also useful to build requests in
  // handler tests.
  void set_path_params(ParamList params) { path_params_ = std::move(params); }
  void set_correlation_id(std::string id) { correlation_id_ = std::move(id); }
  void set_route_pattern(std::string pattern) {
    route_pattern_ = std::move(pattern);
  }
  void set_principal(std::shared_ptr<const Principal> principal) {
    principal_ = std::move(principal);
  }
  void set_principal(Principal principal) {
    principal_ = std::make_shared<const Principal>(std::move(principal));
  }

 private:
  std::string method_;
  std::string target_;
  std::string path_;
  std::string raw_path_;
  ParamList query_;
  HeaderList headers_;
  std::string body_;
  ParamList path_params_;
  std::string correlation_id_;
  std::string route_pattern_;
  // Shared: an authenticator hands out one per key, not one per request.
  std::shared_ptr<const Principal> principal_;
};

// The actor of requests without a principal.
inline constexpr absl::string_view kAnonymousActor = "anonymous";

// The writing end of a streamed response body (Response::stream): Server-
// Sent Events and other long-lived responses. The server implements it.
//
//   response.stream = [&hub](std::shared_ptr<http::StreamWriter> writer) {
//     writer->Write("retry: 2000\n\n");
//     hub.Add(std::move(writer));   // Writes later, from any thread.
//   };
//
// Thread-safety: every method may be called from any thread; none blocks.
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;

  // Queues `data` to be sent after what is queued. Returns false, and
  // queues nothing, once the stream has ended (Close(), the client went
  // away or stopped reading for write_timeout, the server shuts down): the
  // producer should stop writing and forget the writer.
  virtual bool Write(std::string data) = 0;

  // Bytes queued and not yet written to the client's socket. A producer
  // bounds this (a client that reads too slowly must not grow it forever).
  virtual size_t buffered() const = 0;

  // Ends the response once what is queued is written; the connection
  // closes then. Later Write() calls return false.
  virtual void Close() = 0;

  // Whether the stream has ended (Write() would return false).
  virtual bool closed() const = 0;

  // Calls `f` once when the stream ends, for whatever reason (at once, on
  // this thread, when it has already ended); otherwise on a network thread.
  // `f` must not block. One callback; a later call replaces an earlier one
  // that has not run.
  virtual void OnClose(std::function<void()> f) = 0;

  // Calls `f` once when buffered() drops to `threshold` bytes or below, or
  // when the stream ends (at once, on this thread, when either is already
  // true); otherwise on a network thread. `f` must not block. For
  // producers that pace themselves to the client (a catch-up read). One
  // callback; a later call replaces an earlier one that has not run.
  virtual void OnWritable(size_t threshold, std::function<void()> f) = 0;
};

struct Response {
  int status = 200;
  // Sent as the Content-Type header unless empty or `headers` names its own.
  std::string content_type = "application/json";
  // Extra headers. Content-Length, Transfer-Encoding and Connection are
  // managed by the server and ignored here.
  HeaderList headers;
  std::string body;
  // Never sent. The server appends it to the request's access-log line;
  // ResponseFromStatus() puts the real message of a hidden 5xx error here.
  std::string log_detail;
  // A streamed body (status 200 only). When set, `body` is ignored: the
  // server writes the status line and headers (chunked with HTTP/1.1, the
  // body ending at the connection's close with HTTP/1.0), then calls
  // `stream` once on a network thread with the writer; it must not block.
  // The connection closes when the stream ends and serves no further
  // request. A HEAD request gets the headers only and `stream` is not
  // called.
  std::function<void(std::shared_ptr<StreamWriter>)> stream;

  // The first value of header `name` (case-insensitive), or nullopt.
  absl::optional<absl::string_view> Header(absl::string_view name) const;
  // Replaces every header called `name` (case-insensitive) by one.
  void SetHeader(absl::string_view name, absl::string_view value);
};

// A response with an application/json `body`.
Response JsonResponse(int status, std::string body);

// A response with a text/plain; charset=utf-8 `body`.
Response TextResponse(int status, std::string body);

// {"error":{"code":"<code>","message":"<message>"}}, JSON-escaped.
Response ErrorResponse(int status, absl::string_view code,
                       absl::string_view message);

// The body ErrorResponse() sends.
std::string ErrorBody(absl::string_view code, absl::string_view message);

// kQuery also turns '+' into ' ' (application/x-www-form-urlencoded).
enum class DecodeMode { kPath, kQuery };

// Percent-decodes `text`. Returns kInvalidArgument on a '%' not followed by
// two hex digits.
absl::StatusOr<std::string> PercentDecode(absl::string_view text,
                                          DecodeMode mode);

}  // namespace http
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_MESSAGE_H_

// Maps (method, path) to a handler, with {name} path parameters.
//
//   http::Router router;
//   router.Add("GET", "/accounts/{id}", [&](const http::Request& request) {
//     return GetAccount(request.PathParam("id"));
//   });
//   router.Add("GET", "/healthz", Healthz, {http::Execution::kNetworkThread});
//   if (!router.status().ok()) ...;   // Server::Create() checks it too.
//
// Patterns are absolute paths whose segments are either literal text or a
// parameter "{name}" that matches one non-empty segment. When several
// patterns match a path, the one with a literal segment at the first place
// where they differ wins ("/accounts/stats" beats "/accounts/{id}").
// A path no pattern matches gets 404 not_found; a path that matches only
// under other methods gets 405 method_not_allowed with an Allow header.
// HEAD is implied by GET: unless a HEAD route is registered, HEAD runs the
// GET route of the path (same access, same handler; the server sends the
// headers and Content-Length without the body). OPTIONS is answered by the
// server (204 with Allow, no authentication) unless an OPTIONS route is
// registered. Allow lists the registered methods of the path plus HEAD
// (where GET is served) and OPTIONS.
//
// Thread-safety: Add() must not run concurrently with anything else. Once
// routes are registered, the const methods may be called from any thread.
#ifndef FRAMEWORK_HTTP_ROUTER_H_
#define FRAMEWORK_HTTP_ROUTER_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "framework/http/message.h"

namespace cqrs {
namespace http {

// Delivers the response of an asynchronous handler. Copyable and movable;
// all copies share one delivery. Call it once, from any thread, at any later
// time; calls after the first are ignored. If every copy is destroyed without
// a call, the request is answered with 500 internal, so a forgotten request
// never hangs a connection.
class Responder {
 public:
  // `deliver` receives the response of the first call. The server builds
  // responders; tests build their own to call handlers directly.
  explicit Responder(std::function<void(Response)> deliver);

  void operator()(Response response) const;

 private:
  class State;
  std::shared_ptr<State> state_;
};

// Runs on the server's worker pool, where blocking (database calls) is fine.
using Handler = std::function<Response(const Request&)>;
// Answers through the Responder, possibly later and from another thread.
using AsyncHandler = std::function<void(const Request&, Responder)>;

// A handler written with Status returns, so that RETURN_IF_ERROR and
// ASSIGN_OR_RETURN work inside it.
using StatusOrHandler = std::function<absl::StatusOr<Response>(const Request&)>;

// Adapts `handler` into a Handler: an error becomes ResponseFromStatus(error)
// (see status_mapping.h).
//
//   router.Add("POST", "/accounts/{id}/deposit", http::FromStatusOr(
//       [&](const http::Request& r) -> absl::StatusOr<http::Response> {
//         ASSIGN_OR_RETURN(int64_t amount, ...);
//         return http::JsonResponse(200, ...);
//       }));
Handler FromStatusOr(StatusOrHandler handler);

enum class Execution {
  // On the bounded worker pool: for handlers that block (database work).
  kWorkerPool,
  // Inline on the network thread: only for cheap handlers that never block
  // (health checks, metrics, asynchronous handlers that register a waiter).
  kNetworkThread,
};

// Who may call a route. A server with authentication (ServerOptions::auth)
// refuses to start while any route leaves it undeclared.
struct RouteAccess {
  enum class Kind { kUndeclared, kOpen, kScope };
  Kind kind = Kind::kUndeclared;
  std::string scope;  // kScope: the scope the caller's key must have

  // Anyone, with or without a token (health, readiness, API documents).
  static RouteAccess Open() { return {Kind::kOpen, ""}; }
  // An authenticated caller whose key has `scope` (framework/auth/scopes.h).
  static RouteAccess Scope(std::string scope) {
    return {Kind::kScope, std::move(scope)};
  }
};

struct RouteOptions {
  Execution execution = Execution::kWorkerPool;
  // When true, a non-empty body whose Content-Type is not application/json
  // (parameters such as charset allowed) is answered with 415
  // unsupported_media_type before the handler runs. An empty body passes:
  // the handler decides whether it needs one.
  bool require_json_body = false;
  // An operations route (health, readiness, metrics, administration): it
  // must answer while the application's routes cannot. The server runs its
  // kWorkerPool handler on a lane of its own and serves it on connections
  // beyond max_connections (framework/http/server.h).
  bool operations = false;
  // Checked before the handler runs: 401 without a valid token, 403
  // without the scope (framework/http/server.h).
  RouteAccess access;
};

struct Route {
  std::string method;
  std::string pattern;
  RouteOptions options;
  // Exactly one of the two is set.
  Handler handler;
  AsyncHandler async_handler;

  // Pattern split at '/'; "{name}" segments are parameters.
  std::vector<std::string> segments;
};

// The outcome of Router::Match().
struct RouteMatch {
  // kOptions: an OPTIONS request for a path that exists, with no OPTIONS
  // route registered; the caller answers 204 with Allow.
  enum class Result {
    kFound,
    kNotFound,
    kMethodNotAllowed,
    kBadPath,
    kOptions
  };
  Result result = Result::kNotFound;
  // kFound: the route (owned by the router) and its decoded parameters. For
  // HEAD without a HEAD route, the GET route.
  const Route* route = nullptr;
  ParamList params;
  // kMethodNotAllowed and kOptions: the methods the path accepts, sorted,
  // for Allow (with HEAD where GET is served, and OPTIONS).
  std::vector<std::string> allowed_methods;
};

class Router {
 public:
  Router() = default;
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Registers a route. `method` is an HTTP token (upper-cased here). A bad
  // method or pattern (not starting with '/', malformed or repeated
  // "{name}") or a duplicate (method, pattern) is recorded in status() and
  // the route is not added.
  void Add(absl::string_view method, absl::string_view pattern, Handler handler,
           RouteOptions options = {});
  void AddAsync(absl::string_view method, absl::string_view pattern,
                AsyncHandler handler, RouteOptions options = {});

  // OK, or kInvalidArgument / kAlreadyExists describing the first bad Add().
  const absl::Status& status() const { return status_; }

  // For code that registers routes on the router's behalf (a query
  // service) and finds a route it cannot add: `error` becomes status()
  // unless an earlier error is there.
  void RecordError(absl::Status error);

  // Finds the route for `method` and `raw_path` (the path before
  // percent-decoding, see Request::raw_path()). kBadPath when a segment
  // holds a malformed percent escape; HEAD falls back to GET and OPTIONS to
  // kOptions as the header comment says.
  RouteMatch Match(absl::string_view method, absl::string_view raw_path) const;

  // Every (method, pattern), in registration order.
  std::vector<std::pair<std::string, std::string>> Routes() const;
  // Every route (owned by the router), in registration order.
  std::vector<const Route*> RouteList() const;

 private:
  void AddRoute(Route route);

  std::vector<std::unique_ptr<Route>> routes_;
  absl::Status status_;
};

}  // namespace http
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_ROUTER_H_

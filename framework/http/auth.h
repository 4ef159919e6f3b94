// Authentication and authorization of HTTP requests: the server checks each
// route's RouteAccess (router.h) before its handler runs.
//
//   http::ServerOptions options;
//   options.auth.authenticator = &api_keys;   // e.g. auth::ApiKeyAuthenticator
//   router.Add("POST", "/x", Handler,
//              {.access = http::RouteAccess::Scope("commands")});
//
// For a route with a scope, the server:
//  - answers 429 too_many_requests with Retry-After when the client's
//    address made `max_failures` failed attempts (a token presented and not
//    accepted) within `failure_window`, until that window ends;
//  - takes the token from `Authorization: Bearer <token>` (the scheme is
//    case-insensitive); without one, or with a token the authenticator does
//    not accept, answers 401 unauthenticated with `WWW-Authenticate: Bearer`
//    and one message for every reason;
//  - answers 403 forbidden naming the scope when the key lacks it;
//  - otherwise sets Request::principal() and runs the handler.
// Open routes (RouteAccess::Open()) run without any of this; a token sent
// to them is ignored. The access log names the key id of every
// authenticated request, never the token.
//
// Thread-safety: an Authenticator is called from every network and worker
// thread at once and must be thread-safe.
#ifndef FRAMEWORK_HTTP_AUTH_H_
#define FRAMEWORK_HTTP_AUTH_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "framework/http/message.h"

namespace cqrs {
namespace http {

// Never null in an OK StatusOr.
using PrincipalPtr = std::shared_ptr<const Principal>;

class Authenticator {
 public:
  virtual ~Authenticator() = default;

  // The answer for `token` when it is known without blocking (a cache):
  // as Authenticate() would return it. nullopt when only Authenticate()
  // can tell; the server then calls it on a worker thread.
  virtual absl::optional<absl::StatusOr<PrincipalPtr>> AuthenticateCached(
      absl::string_view token) = 0;

  // The principal `token` belongs to; may block (a database read).
  // kUnauthenticated when the token is not accepted (any reason: the server
  // answers them all alike); kUnavailable when it cannot tell now (503).
  virtual absl::StatusOr<PrincipalPtr> Authenticate(
      absl::string_view token) = 0;
};

struct AuthOptions {
  // Null: authentication is off and every route is open.
  Authenticator* authenticator = nullptr;
  // Failed attempts from one client address within `failure_window` after
  // which its requests to routes with a scope get 429 until the window
  // ends. A request without any token is not an attempt.
  int max_failures = 20;
  absl::Duration failure_window = absl::Minutes(1);
};

// The token of `Authorization: Bearer <token>`: nullopt when the header is
// absent; an empty view when it is present but not a bearer token.
absl::optional<absl::string_view> BearerToken(const Request& request);

}  // namespace http
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_AUTH_H_

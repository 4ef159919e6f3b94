// The one place that turns an absl::Status into an HTTP error response.
//
//   return http::ResponseFromStatus(cqrs::WithErrorCode(
//       absl::FailedPreconditionError("insufficient funds"),
//       "insufficient_funds"));   // 422
//       {"error":{"code":"insufficient_funds",...
//
// Applications attach a snake_case error code (and, rarely, an explicit HTTP
// status) to a Status as payloads, so that the code travels unchanged through
// every layer that returns the Status as it is.
//
// Default mapping (code used when none is attached):
//   kInvalidArgument, kOutOfRange -> 400 invalid_request
//   kUnauthenticated   -> 401 unauthenticated
//   kPermissionDenied  -> 403 permission_denied
//   kNotFound          -> 404 not_found
//   kAlreadyExists     -> 409 conflict
//   kAborted           -> 409 version_conflict
//   kFailedPrecondition-> 422 unprocessable (a business rule said no)
//   kUnimplemented     -> 501 not_implemented
//   kUnavailable       -> 503 unavailable
//   kDeadlineExceeded  -> 503 timeout
//   kResourceExhausted -> 503 overloaded
//   anything else      -> 500 internal
// For a 4xx status, and for any status with an attached code, the Status
// message is the response message. A 5xx status without an attached code
// gets a generic message: its text may describe internals (SQL errors, host
// names). Its real text goes to Response::log_detail, which the server writes
// to the access log.
// A database error (framework/error_classes.h: IsDatabaseError) without an
// attached code never shows its text: a transient one is 503 unavailable
// with Retry-After: 1, any other 500 internal.
//
// Thread-safety: pure functions.
#ifndef FRAMEWORK_HTTP_STATUS_MAPPING_H_
#define FRAMEWORK_HTTP_STATUS_MAPPING_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "framework/error_code.h"
#include "framework/http/message.h"

namespace cqrs {
namespace http {

// Error codes live in framework/error_code.h (commands and other layers
// attach them without knowing HTTP); these names keep working here.
using ::cqrs::ErrorCodeOf;
using ::cqrs::HttpStatusOf;
using ::cqrs::WithErrorCode;
using ::cqrs::WithHttpStatus;

// The HTTP status ResponseFromStatus() sends for `status`.
int HttpStatusFor(const absl::Status& status);

// The error response for `status`; see the table above. An OK status is a
// programming error and yields 500 internal with a log_detail saying so.
Response ResponseFromStatus(const absl::Status& status);

}  // namespace http
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_STATUS_MAPPING_H_

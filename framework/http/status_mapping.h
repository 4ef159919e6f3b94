// The one place that turns an absl::Status into an HTTP error response.
//
//   return http::ResponseFromStatus(http::WithErrorCode(
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
#include "framework/http/message.h"

namespace cqrs {
namespace http {

// Returns `status` carrying the error code `code` (snake_case, e.g.
// "account_not_found"), replacing any code attached before. An OK status is
// returned unchanged (payloads cannot be attached to it).
absl::Status WithErrorCode(absl::Status status, absl::string_view code);

// The code attached by WithErrorCode(), or an empty string.
std::string ErrorCodeOf(const absl::Status& status);

// Returns `status` carrying an explicit HTTP status (e.g. 409 instead of the
// default 422 of kFailedPrecondition). Values outside 400..599 are ignored by
// ResponseFromStatus(). An OK status is returned unchanged.
absl::Status WithHttpStatus(absl::Status status, int http_status);

// The HTTP status attached by WithHttpStatus(), or nullopt.
absl::optional<int> HttpStatusOf(const absl::Status& status);

// The HTTP status ResponseFromStatus() sends for `status`.
int HttpStatusFor(const absl::Status& status);

// The error response for `status`; see the table above. An OK status is a
// programming error and yields 500 internal with a log_detail saying so.
Response ResponseFromStatus(const absl::Status& status);

}  // namespace http
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_STATUS_MAPPING_H_

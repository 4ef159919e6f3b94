// Error codes that travel with an absl::Status through every layer.
//
//   return cqrs::WithErrorCode(
//       absl::FailedPreconditionError("insufficient funds"),
//       "insufficient_funds");
//   cqrs::ErrorCodeOf(status);  // "insufficient_funds"
//
// A code is a snake_case word that clients act on (the contract's
// {"error":{"code":...}}); it is attached as a Status payload, so it survives
// every layer that returns the Status as it is. The HTTP layer
// (framework/http/status_mapping.h) picks the response from the Status code
// and this error code; nothing here knows about HTTP beyond an optional
// explicit status a rare caller attaches (WithHttpStatus).
//
// Thread-safety: pure functions.
#ifndef FRAMEWORK_ERROR_CODE_H_
#define FRAMEWORK_ERROR_CODE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"

namespace cqrs {

// Returns `status` carrying the error code `code` (snake_case, e.g.
// "account_not_found"), replacing any code attached before. An OK status is
// returned unchanged (payloads cannot be attached to it).
absl::Status WithErrorCode(absl::Status status, absl::string_view code);

// The code attached by WithErrorCode(), or an empty string.
std::string ErrorCodeOf(const absl::Status& status);

// kInvalidArgument with code "invalid_request" and `message`: bad input,
// 400 over HTTP. The message should name the field.
absl::Status InvalidRequest(absl::string_view message);

// Returns `status` carrying an explicit HTTP status (e.g. 409 instead of the
// default 422 of kFailedPrecondition). Values outside 400..599 are ignored
// by the HTTP layer. An OK status is returned unchanged.
absl::Status WithHttpStatus(absl::Status status, int http_status);

// The HTTP status attached by WithHttpStatus(), or nullopt.
absl::optional<int> HttpStatusOf(const absl::Status& status);

}  // namespace cqrs

#endif  // FRAMEWORK_ERROR_CODE_H_

#include "framework/http/status_mapping.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "framework/error_classes.h"

namespace cqrs {
namespace http {
namespace {

struct DefaultMapping {
  int http_status;
  absl::string_view code;
  // Sent instead of the Status message for 5xx statuses without an attached
  // code; empty for 4xx statuses, whose message is always sent.
  absl::string_view generic_message;
};

DefaultMapping DefaultFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return {400, "invalid_request", ""};
    case absl::StatusCode::kUnauthenticated:
      return {401, "unauthenticated", ""};
    case absl::StatusCode::kPermissionDenied:
      return {403, "permission_denied", ""};
    case absl::StatusCode::kNotFound:
      return {404, "not_found", ""};
    case absl::StatusCode::kAlreadyExists:
      return {409, "conflict", ""};
    case absl::StatusCode::kAborted:
      return {409, "version_conflict", ""};
    case absl::StatusCode::kFailedPrecondition:
      return {422, "unprocessable", ""};
    case absl::StatusCode::kUnimplemented:
      return {501, "not_implemented", "not implemented"};
    case absl::StatusCode::kUnavailable:
      return {503, "unavailable", "the service is temporarily unavailable"};
    case absl::StatusCode::kDeadlineExceeded:
      return {503, "timeout", "the request timed out"};
    case absl::StatusCode::kResourceExhausted:
      return {503, "overloaded", "the server is overloaded"};
    default:
      return {500, "internal", "internal error"};
  }
}

}  // namespace

int HttpStatusFor(const absl::Status& status) {
  if (status.ok()) return 500;
  if (IsDatabaseError(status) && ErrorCodeOf(status).empty()) {
    return IsTransientError(status) ? 503 : 500;
  }
  const absl::optional<int> explicit_status = HttpStatusOf(status);
  if (explicit_status.has_value() && *explicit_status >= 400 &&
      *explicit_status <= 599) {
    return *explicit_status;
  }
  return DefaultFor(status.code()).http_status;
}

Response ResponseFromStatus(const absl::Status& status) {
  if (status.ok()) {
    Response response = ErrorResponse(500, "internal", "internal error");
    response.log_detail = "ResponseFromStatus() called with an OK status";
    return response;
  }
  const std::string attached_code = ErrorCodeOf(status);
  if (IsDatabaseError(status) && attached_code.empty()) {
    // A database error that no layer turned into an answer: its text
    // describes the database (and may quote SQL or rows), so it only goes
    // to the log. A transient one is worth retrying.
    Response response =
        IsTransientError(status)
            ? ErrorResponse(503, "unavailable",
                            "a temporary database problem; retry shortly")
            : ErrorResponse(500, "internal", "internal error");
    if (response.status == 503) response.SetHeader("Retry-After", "1");
    response.log_detail =
        status.ToString(absl::StatusToStringMode::kWithNoExtraData);
    return response;
  }
  const DefaultMapping mapping = DefaultFor(status.code());
  const int http_status = HttpStatusFor(status);
  const absl::string_view code =
      attached_code.empty() ? mapping.code : absl::string_view(attached_code);
  const bool hide_message =
      attached_code.empty() && !mapping.generic_message.empty();
  Response response =
      ErrorResponse(http_status, code,
                    hide_message ? mapping.generic_message : status.message());
  if (hide_message || http_status >= 500) {
    response.log_detail =
        status.ToString(absl::StatusToStringMode::kWithNoExtraData);
  }
  return response;
}

}  // namespace http
}  // namespace cqrs

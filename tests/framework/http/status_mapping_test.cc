#include "framework/http/status_mapping.h"

#include <string>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "framework/error_classes.h"

namespace cqrs {
namespace http {
namespace {

struct Row {
  absl::Status status;
  int http_status;
  const char* code;
  // Empty: the Status message is sent.
  const char* generic_message;
};

TEST_CASE("default Status to HTTP mapping", "[http]") {
  const Row rows[] = {
      {absl::InvalidArgumentError("m"), 400, "invalid_request", ""},
      {absl::OutOfRangeError("m"), 400, "invalid_request", ""},
      {absl::UnauthenticatedError("m"), 401, "unauthenticated", ""},
      {absl::PermissionDeniedError("m"), 403, "permission_denied", ""},
      {absl::NotFoundError("m"), 404, "not_found", ""},
      {absl::AlreadyExistsError("m"), 409, "conflict", ""},
      {absl::AbortedError("m"), 409, "version_conflict", ""},
      {absl::FailedPreconditionError("m"), 422, "unprocessable", ""},
      {absl::UnimplementedError("m"), 501, "not_implemented",
       "not implemented"},
      {absl::UnavailableError("m"), 503, "unavailable",
       "the service is temporarily unavailable"},
      {absl::DeadlineExceededError("m"), 503, "timeout",
       "the request timed out"},
      {absl::ResourceExhaustedError("m"), 503, "overloaded",
       "the server is overloaded"},
      {absl::InternalError("m"), 500, "internal", "internal error"},
      {absl::UnknownError("m"), 500, "internal", "internal error"},
      {absl::DataLossError("m"), 500, "internal", "internal error"},
      {absl::CancelledError("m"), 500, "internal", "internal error"},
  };
  for (const Row& row : rows) {
    INFO(row.status.ToString());
    const Response response = ResponseFromStatus(row.status);
    CHECK(response.status == row.http_status);
    CHECK(HttpStatusFor(row.status) == row.http_status);
    CHECK(response.content_type == "application/json");
    const std::string message =
        std::string(row.generic_message).empty() ? "m" : row.generic_message;
    CHECK(response.body == ErrorBody(row.code, message));
    if (response.status >= 500) {
      // The real message goes to the access log, never to the client.
      CHECK(absl::EndsWith(response.log_detail, ": m"));
    } else {
      CHECK(response.log_detail.empty());
    }
  }
}

TEST_CASE("an attached error code is sent with the message", "[http]") {
  const absl::Status status =
      WithErrorCode(absl::FailedPreconditionError("balance is 5, amount is 10"),
                    "insufficient_funds");
  CHECK(ErrorCodeOf(status) == "insufficient_funds");
  CHECK_FALSE(HttpStatusOf(status).has_value());
  const Response response = ResponseFromStatus(status);
  CHECK(response.status == 422);
  CHECK(
      response.body ==
      R"({"error":{"code":"insufficient_funds","message":"balance is 5, amount is 10"}})");
}

TEST_CASE("a coded 5xx status sends its own message", "[http]") {
  const Response response = ResponseFromStatus(WithErrorCode(
      absl::UnavailableError("projection accounts is at 7, wanted 9"),
      "projection_lagging"));
  CHECK(response.status == 503);
  CHECK(response.body == ErrorBody("projection_lagging",
                                   "projection accounts is at 7, wanted 9"));
}

TEST_CASE("the code survives being returned through layers", "[http]") {
  const auto inner = [] {
    return WithErrorCode(absl::NotFoundError("no account a1"),
                         "account_not_found");
  };
  const auto outer = [&]() -> absl::Status {
    absl::Status status = inner();
    if (!status.ok()) return status;
    return absl::OkStatus();
  };
  const Response response = ResponseFromStatus(outer());
  CHECK(response.status == 404);
  CHECK(response.body == ErrorBody("account_not_found", "no account a1"));
}

TEST_CASE("WithErrorCode replaces an earlier code", "[http]") {
  absl::Status status = WithErrorCode(absl::AbortedError("x"), "first");
  status = WithErrorCode(status, "second");
  CHECK(ErrorCodeOf(status) == "second");
}

TEST_CASE("an explicit HTTP status overrides the default", "[http]") {
  const absl::Status status = WithHttpStatus(
      WithErrorCode(absl::FailedPreconditionError("exists"), "account_exists"),
      409);
  REQUIRE(HttpStatusOf(status).has_value());
  CHECK(*HttpStatusOf(status) == 409);
  const Response response = ResponseFromStatus(status);
  CHECK(response.status == 409);
  CHECK(response.body == ErrorBody("account_exists", "exists"));
}

TEST_CASE("an out-of-range explicit HTTP status is ignored", "[http]") {
  const absl::Status status = WithHttpStatus(absl::NotFoundError("x"), 200);
  CHECK(ResponseFromStatus(status).status == 404);
}

TEST_CASE("a database error's text never reaches the client", "[http]") {
  // What StatusFromCurrentPgException() makes of a lost version race and of
  // a missing table: 4xx codes whose text used to be sent as it was.
  const absl::Status race = MarkDatabaseError(absl::AlreadyExistsError(
      "postgres error 23505: duplicate key value violates unique constraint "
      "\"events_stream_version_key\""));
  Response conflict = ResponseFromStatus(race);
  CHECK(conflict.status == 500);
  CHECK(!absl::StrContains(conflict.body, "events_stream_version_key"));
  CHECK(absl::StrContains(conflict.log_detail, "events_stream_version_key"));

  const absl::Status timeout = MarkDatabaseError(absl::CancelledError(
      "postgres error 57014: canceling statement due to statement timeout"));
  Response unavailable = ResponseFromStatus(timeout);
  CHECK(unavailable.status == 503);
  CHECK(HttpStatusFor(timeout) == 503);
  CHECK(unavailable.Header("Retry-After") ==
        absl::optional<absl::string_view>("1"));
  CHECK(absl::StrContains(unavailable.body, "\"unavailable\""));
  CHECK(!absl::StrContains(unavailable.body, "57014"));

  // A layer that understood the error attaches a code: then it is sent.
  Response coded = ResponseFromStatus(WithErrorCode(race, "transfer_exists"));
  CHECK(coded.status == 409);
  CHECK(absl::StrContains(coded.body, "transfer_exists"));
}

TEST_CASE("payload helpers leave an OK status alone", "[http]") {
  CHECK(WithErrorCode(absl::OkStatus(), "x").ok());
  CHECK(WithHttpStatus(absl::OkStatus(), 400).ok());
  CHECK(ErrorCodeOf(absl::OkStatus()).empty());
  const Response response = ResponseFromStatus(absl::OkStatus());
  CHECK(response.status == 500);
  CHECK_FALSE(response.log_detail.empty());
}

}  // namespace
}  // namespace http
}  // namespace cqrs

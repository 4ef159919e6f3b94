#include "framework/http/status_mapping.h"

#include <string>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"

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

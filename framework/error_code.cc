#include "framework/error_code.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace cqrs {
namespace {

constexpr char kErrorCodeUrl[] = "type.cqrs.dev/http.error_code";
constexpr char kHttpStatusUrl[] = "type.cqrs.dev/http.status";

}  // namespace

absl::Status WithErrorCode(absl::Status status, absl::string_view code) {
  if (!status.ok()) status.SetPayload(kErrorCodeUrl, absl::Cord(code));
  return status;
}

std::string ErrorCodeOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kErrorCodeUrl);
  if (!payload.has_value()) return std::string();
  return std::string(*payload);
}

absl::Status InvalidRequest(absl::string_view message) {
  return WithErrorCode(absl::InvalidArgumentError(message), "invalid_request");
}

absl::Status WithHttpStatus(absl::Status status, int http_status) {
  if (!status.ok()) {
    status.SetPayload(kHttpStatusUrl, absl::Cord(absl::StrCat(http_status)));
  }
  return status;
}

absl::optional<int> HttpStatusOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kHttpStatusUrl);
  int value = 0;
  if (!payload.has_value() ||
      !absl::SimpleAtoi(std::string(*payload), &value)) {
    return absl::nullopt;
  }
  return value;
}

}  // namespace cqrs

#include "framework/error_classes.h"

#include "absl/strings/cord.h"

namespace cqrs {
namespace {

constexpr char kDatabaseErrorUrl[] = "type.cqrs.dev/database_error";

}  // namespace

bool IsTransientError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

absl::Status MarkDatabaseError(absl::Status status) {
  if (!status.ok()) status.SetPayload(kDatabaseErrorUrl, absl::Cord("1"));
  return status;
}

bool IsDatabaseError(const absl::Status& status) {
  return status.GetPayload(kDatabaseErrorUrl).has_value();
}

}  // namespace cqrs

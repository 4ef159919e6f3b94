#include "eventstore/position.h"

#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace cqrs::eventstore {
namespace {

// Strict unsigned decimal: digits only, no sign, no spaces, no overflow.
bool ParseDigits(absl::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return absl::SimpleAtoi(text, out);
}

}  // namespace

std::string Position::ToToken() const {
  return absl::StrCat(transaction_id, ".", global_position);
}

absl::StatusOr<Position> Position::FromToken(absl::string_view token) {
  const size_t dot = token.find('.');
  uint64_t xid = 0;
  uint64_t pos = 0;
  if (dot == absl::string_view::npos ||
      !ParseDigits(token.substr(0, dot), &xid) ||
      !ParseDigits(token.substr(dot + 1), &pos) ||
      pos > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(
        "malformed position token (expected the opaque string returned by "
        "the server)");
  }
  return Position{xid, static_cast<int64_t>(pos)};
}

}  // namespace cqrs::eventstore

#include "queries/pagination.h"

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "framework/http/status_mapping.h"
#include "framework/json.h"

namespace cqrs::queries {
namespace {

constexpr char kVersion = '1';

absl::Status Invalid(absl::string_view why) {
  return http::WithErrorCode(absl::InvalidArgumentError(why),
                             "invalid_request");
}

}  // namespace

std::string EncodeCursor(const std::vector<std::string>& key) {
  std::string raw(1, kVersion);
  for (const std::string& part : key) {
    absl::StrAppend(&raw, part.size(), ":", part);
  }
  return absl::WebSafeBase64Escape(raw);
}

absl::StatusOr<std::vector<std::string>> DecodeCursor(absl::string_view cursor,
                                                      size_t parts) {
  if (cursor.empty() || cursor.size() > kMaxCursorLength) {
    return Invalid("after: not a cursor from a previous page");
  }
  std::string raw;
  if (!absl::WebSafeBase64Unescape(cursor, &raw) || raw.empty() ||
      raw[0] != kVersion) {
    return Invalid("after: not a cursor from a previous page");
  }
  std::vector<std::string> key;
  absl::string_view rest = absl::string_view(raw).substr(1);
  while (!rest.empty()) {
    const size_t colon = rest.find(':');
    size_t length = 0;
    if (colon == absl::string_view::npos || colon == 0 || colon > 5 ||
        !absl::SimpleAtoi(rest.substr(0, colon), &length) ||
        length > rest.size() - colon - 1) {
      return Invalid("after: not a cursor from a previous page");
    }
    // Every key part came from a row as text: a forged part that is not
    // valid UTF-8 or holds a NUL would reach PostgreSQL as a text parameter
    // (invalid_byte_sequence, or cut at the NUL) and the handler as a key
    // no row can have.
    const absl::string_view part = rest.substr(colon + 1, length);
    if (part.find('\0') != absl::string_view::npos || !IsValidUtf8(part)) {
      return Invalid("after: not a cursor from a previous page");
    }
    key.emplace_back(part);
    rest.remove_prefix(colon + 1 + length);
  }
  if (key.size() != parts) {
    return Invalid("after: not a cursor for this list");
  }
  return key;
}

absl::StatusOr<PageRequest> ParsePageRequest(
    const std::optional<std::string>& limit,
    const std::optional<std::string>& after, size_t key_parts) {
  PageRequest page;
  if (limit.has_value()) {
    int n = 0;
    if (limit->size() > 6 || !absl::SimpleAtoi(*limit, &n) || n < 1 ||
        n > kMaxLimit) {
      return Invalid(
          absl::StrCat("limit must be an integer from 1 to ", kMaxLimit));
    }
    page.limit = n;
  }
  if (after.has_value()) {
    absl::StatusOr<std::vector<std::string>> key =
        DecodeCursor(*after, key_parts);
    if (!key.ok()) return key.status();
    page.after = *std::move(key);
  }
  return page;
}

}  // namespace cqrs::queries

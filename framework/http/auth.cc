#include "framework/http/auth.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace cqrs {
namespace http {
namespace {

// RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
// "/" ) *"=".
bool IsB64Token(absl::string_view token) {
  const size_t end = token.find_last_not_of('=');
  if (end == absl::string_view::npos) return false;
  return std::all_of(token.begin(), token.begin() + end + 1, [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
           absl::string_view("-._~+/").find(c) != absl::string_view::npos;
  });
}

}  // namespace

absl::optional<absl::string_view> BearerToken(const Request& request) {
  const absl::optional<absl::string_view> header =
      request.Header("Authorization");
  if (!header.has_value()) return absl::nullopt;
  absl::string_view value = absl::StripAsciiWhitespace(*header);
  constexpr absl::string_view kScheme = "Bearer";
  if (value.size() <= kScheme.size() ||
      !absl::StartsWithIgnoreCase(value, kScheme) ||
      value[kScheme.size()] != ' ') {
    return absl::string_view();
  }
  value = absl::StripLeadingAsciiWhitespace(value.substr(kScheme.size()));
  if (!IsB64Token(value)) return absl::string_view();
  return value;
}

}  // namespace http
}  // namespace cqrs

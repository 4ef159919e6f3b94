// Fuzzes bearer tokens: the bytes are the value of an Authorization header,
// read by http::BearerToken() (framework/http/auth.h); the token it finds
// goes to auth::KeyIdOf() (framework/auth/api_keys.h), which every
// authenticated request runs before any database read, and to the hash and
// constant-time comparison the key store checks secrets with.
//
// Properties: nothing crashes; a token is a substring of the header value
// made of token68 characters only; a key id is 12 lowercase hex digits
// taken from the token.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "framework/auth/api_keys.h"
#include "framework/auth/crypto.h"
#include "framework/http/auth.h"
#include "framework/http/message.h"

namespace {

void Require(bool condition) {
  if (!condition) std::abort();
}

bool IsToken68Char(char c) {
  return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' ||
         c == '~' || c == '+' || c == '/' || c == '=';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string value(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<cqrs::http::Request> request = cqrs::http::Request::Create(
      "GET", "/accounts", {{"Authorization", value}}, "");
  if (!request.ok()) return 0;
  absl::optional<absl::string_view> token = cqrs::http::BearerToken(*request);
  Require(token.has_value());
  if (token->empty()) return 0;
  Require(absl::StrContains(value, *token));
  for (char c : *token) Require(IsToken68Char(c));

  std::optional<std::string> id = cqrs::auth::KeyIdOf(*token);
  if (id.has_value()) {
    Require(id->size() == 12);
    Require(absl::StrContains(*token, *id));
    for (char c : *id)
      Require(absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f'));
  }
  const std::string hash = cqrs::auth::Sha256Hex(*token);
  Require(cqrs::auth::ConstantTimeEquals(hash, hash));
  return 0;
}

#include "framework/auth/crypto.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"

namespace cqrs::auth {
namespace {

absl::StatusOr<std::string> RandomBytes(size_t bytes) {
  std::string out(bytes, '\0');
  if (bytes > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()),
                              static_cast<int>(bytes)) != 1) {
    return absl::InternalError("the random number generator failed");
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> RandomToken(size_t bytes) {
  absl::StatusOr<std::string> raw = RandomBytes(bytes);
  if (!raw.ok()) return raw.status();
  return absl::WebSafeBase64Escape(*raw);
}

absl::StatusOr<std::string> RandomHex(size_t bytes) {
  absl::StatusOr<std::string> raw = RandomBytes(bytes);
  if (!raw.ok()) return raw.status();
  return absl::BytesToHexString(*raw);
}

std::string Sha256Hex(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  return a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace cqrs::auth

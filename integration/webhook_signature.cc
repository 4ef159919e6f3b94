#include "integration/webhook_signature.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cqrs::integration {

absl::StatusOr<std::string> NewWebhookSecret() {
  unsigned char bytes[24];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return absl::InternalError("the random generator failed");
  }
  std::string encoded;
  absl::Base64Escape(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)),
      &encoded);
  return absl::StrCat(kWebhookSecretPrefix, encoded);
}

absl::StatusOr<std::string> SignWebhook(absl::string_view secret,
                                        absl::string_view id, int64_t timestamp,
                                        absl::string_view body) {
  std::string key;
  if (!absl::StartsWith(secret, kWebhookSecretPrefix) ||
      !absl::Base64Unescape(secret.substr(kWebhookSecretPrefix.size()), &key) ||
      key.size() < 16 || key.size() > 64) {
    return absl::InvalidArgumentError(
        "a webhook secret is whsec_ and 16 to 64 bytes in base64");
  }
  // HMAC() is OpenSSL 3's one-shot form that is not deprecated.
  const std::string message = absl::StrCat(id, ".", timestamp, ".", body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_size = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(message.data()),
           message.size(), mac, &mac_size) == nullptr) {
    return absl::InternalError("HMAC-SHA256 failed");
  }
  std::string encoded;
  absl::Base64Escape(
      absl::string_view(reinterpret_cast<const char*>(mac), mac_size),
      &encoded);
  return absl::StrCat("v1,", encoded);
}

}  // namespace cqrs::integration

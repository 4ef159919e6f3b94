// Standard Webhooks signing (https://www.standardwebhooks.com/): secrets in
// the `whsec_<base64>` form and the `webhook-signature` header.
//
//   ASSIGN_OR_RETURN(std::string secret, NewWebhookSecret());
//   ASSIGN_OR_RETURN(std::string sig,
//                    SignWebhook(secret, event_id, unix_seconds, body));
//   // "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
//
// The signature is HMAC-SHA256, keyed with the secret's decoded bytes, over
// "{webhook-id}.{webhook-timestamp}.{body}", in base64 after "v1,". During
// a rotation the header carries one signature per secret, separated by a
// space.
//
// Thread-safety: functions of their arguments.
#ifndef INTEGRATION_WEBHOOK_SIGNATURE_H_
#define INTEGRATION_WEBHOOK_SIGNATURE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cqrs::integration {

inline constexpr absl::string_view kWebhookSecretPrefix = "whsec_";

// "whsec_" and 24 random bytes (OpenSSL's CSPRNG) in base64. kInternal when
// the generator fails.
absl::StatusOr<std::string> NewWebhookSecret();

// "v1,<base64 signature>". kInvalidArgument when `secret` is not
// "whsec_<base64>" of 16 to 64 bytes.
absl::StatusOr<std::string> SignWebhook(absl::string_view secret,
                                        absl::string_view id, int64_t timestamp,
                                        absl::string_view body);

}  // namespace cqrs::integration

#endif  // INTEGRATION_WEBHOOK_SIGNATURE_H_

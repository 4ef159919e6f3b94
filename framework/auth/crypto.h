// The few cryptographic primitives the framework needs, on OpenSSL
// (Debian's libssl-dev): random bytes from the operating system, SHA-256,
// and a comparison whose time does not depend on where inputs differ.
//
//   std::string secret = cqrs::auth::RandomToken(32);   // 256 bits
//   std::string digest = cqrs::auth::Sha256Hex(secret);
//   if (cqrs::auth::ConstantTimeEquals(digest, stored)) ...
//
// Thread-safety: every function is safe to call concurrently.
#ifndef FRAMEWORK_AUTH_CRYPTO_H_
#define FRAMEWORK_AUTH_CRYPTO_H_

#include <array>
#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cqrs::auth {

// `bytes` random bytes from OpenSSL's CSPRNG (seeded by the OS), as
// unpadded base64url (RFC 4648 §5: [A-Za-z0-9_-]). kInternal when the
// generator fails (never silently weaker randomness).
absl::StatusOr<std::string> RandomToken(size_t bytes);

// `bytes` random bytes as lower-case hex; kInternal as RandomToken().
absl::StatusOr<std::string> RandomHex(size_t bytes);

using Sha256Digest = std::array<unsigned char, 32>;

// SHA-256 of `data`. About 150 ns for a short input: the digest is fetched
// from OpenSSL's provider once and each thread reuses its context (OpenSSL
// 3's one-shot SHA256() fetches it on every call, several times slower).
Sha256Digest Sha256(absl::string_view data);

// SHA-256 of `data`, as 64 lower-case hex digits.
std::string Sha256Hex(absl::string_view data);

// Whether `a` equals `b`, in time that depends only on their lengths
// (OpenSSL CRYPTO_memcmp).
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace cqrs::auth

#endif  // FRAMEWORK_AUTH_CRYPTO_H_

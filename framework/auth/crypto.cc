#include "framework/auth/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <memory>
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

Sha256Digest Sha256(absl::string_view data) {
  // Fetched once; never freed (it lives as long as the process).
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  struct ContextDeleter {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
  };
  thread_local std::unique_ptr<EVP_MD_CTX, ContextDeleter> ctx(
      EVP_MD_CTX_new());
  Sha256Digest digest;
  unsigned int size = 0;
  if (md == nullptr || ctx == nullptr ||
      EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), digest.data(), &size) != 1 ||
      size != digest.size()) {
    // Only without a working OpenSSL: fall back to the one-shot call.
    SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
           digest.data());
  }
  return digest;
}

std::string Sha256Hex(absl::string_view data) {
  const Sha256Digest digest = Sha256(data);
  return absl::BytesToHexString(absl::string_view(
      reinterpret_cast<const char*>(digest.data()), digest.size()));
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  return a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace cqrs::auth

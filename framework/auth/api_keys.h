// API keys: bearer tokens an app's clients send as
// `Authorization: Bearer <token>`, kept in the app's schema.
//
//   ASSIGN_OR_RETURN(auto keys, ApiKeyStore::Create(pool, "bank"));
//   ASSIGN_OR_RETURN(NewApiKey k, keys->CreateKey("ci", {"commands"}, {}));
//   std::cout << k.token;                  // shown once, never stored
//   ASSIGN_OR_RETURN(ApiKey who, keys->Authenticate(k.token));
//
// A token is `cqrs_<id>_<secret>`: `id` is 12 hex digits (the key's name in
// logs and in `keys list`), `secret` 32 random bytes from the OS in
// base64url (256 bits). Only SHA-256 of the secret is stored, with the id,
// a name, scopes and created / last-used / expires / revoked times; the
// secret is compared in constant time. Knowing an id (it appears in logs)
// gives nothing: without the secret a token is refused like any other.
//
// Authenticate() caches what it read for at most `cache_lifetime` (1 s by
// default): a revocation takes effect in every process within that time,
// without a notification channel. last_used_at is written at most once a
// minute per key.
//
// Thread-safety: thread-safe. `pool` must outlive the store.
#ifndef FRAMEWORK_AUTH_API_KEYS_H_
#define FRAMEWORK_AUTH_API_KEYS_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "framework/auth/crypto.h"
#include "framework/http/auth.h"
#include "framework/pg_pool.h"

namespace cqrs::auth {

inline constexpr absl::string_view kTokenPrefix = "cqrs_";

struct ApiKey {
  std::string id;
  std::string name;
  std::vector<std::string> scopes;
  absl::Time created_at;
  std::optional<absl::Time> last_used_at;
  std::optional<absl::Time> expires_at;
  std::optional<absl::Time> revoked_at;

  bool HasScope(absl::string_view scope) const;
};

// A key just created: the only time its token exists outside the client.
struct NewApiKey {
  ApiKey key;
  std::string token;
};

struct ApiKeyStoreOptions {
  absl::Duration cache_lifetime = absl::Seconds(1);
  // How often last_used_at is written per key, at most.
  absl::Duration last_used_resolution = absl::Minutes(1);
};

// `key` as a JSON object: id, name, scopes, created_at, last_used_at,
// expires_at, revoked_at (RFC 3339 UTC, null when unset), and "token" last
// when `token` is not empty (only when the key was just created).
std::string ApiKeyJson(const ApiKey& key, absl::string_view token = "");
// `keys` as a JSON array of ApiKeyJson() objects.
std::string ApiKeyListJson(const std::vector<ApiKey>& keys);
// {"items": ApiKeyListJson(keys)}.
std::string ApiKeyPageJson(const std::vector<ApiKey>& keys);

// The key id in `token` (its public part), or nullopt when the token does
// not have the `cqrs_<id>_<secret>` form.
std::optional<std::string> KeyIdOf(absl::string_view token);

class ApiKeyStore {
 public:
  // Creates or upgrades `<schema>.api_keys` (idempotent).
  static absl::Status Migrate(PgPool& pool, absl::string_view schema);

  // kFailedPrecondition when the schema is not migrated.
  static absl::StatusOr<std::unique_ptr<ApiKeyStore>> Create(
      PgPool* pool, std::string schema, ApiKeyStoreOptions options = {});

  // A new key. kInvalidArgument for an empty or over-long (200 bytes) name,
  // no scopes, a scope that is not a lower-case word, or an expiry not in
  // the future.
  absl::StatusOr<NewApiKey> CreateKey(std::string name,
                                      std::vector<std::string> scopes,
                                      std::optional<absl::Duration> expires_in);

  // Every key, newest first (revoked and expired ones included).
  absl::StatusOr<std::vector<ApiKey>> List();

  // Revokes key `id`. kNotFound when there is none; revoking a revoked key
  // is fine (its revocation time stays the first).
  absl::Status Revoke(absl::string_view id);

  // The key `token` belongs to. kUnauthenticated, with one message for
  // every reason (malformed, unknown, wrong secret, expired, revoked), so
  // that a caller cannot probe which; kUnavailable when the database is.
  // May block: reads the key when the cache has none younger than
  // cache_lifetime, and writes last_used_at when it is due.
  absl::StatusOr<ApiKey> Authenticate(absl::string_view token);

  // As Authenticate() when that needs no database access; nullopt when it
  // does (call Authenticate() where blocking is fine).
  std::optional<absl::StatusOr<ApiKey>> AuthenticateCached(
      absl::string_view token);

 private:
  friend class ApiKeyAuthenticator;

  struct Cached {
    std::optional<ApiKey> key;   // nullopt: no such key
    Sha256Digest secret_hash{};  // all zero for no key
    // The key as the HTTP server's principal; null for no key.
    std::shared_ptr<const http::Principal> principal;
    absl::Time read_at;
    // Set by the one request that reads the key again (see Check()).
    mutable std::atomic<bool> refreshing{false};
  };
  enum class Blocking { kAllowed, kNever };

  ApiKeyStore(PgPool* pool, std::string schema, ApiKeyStoreOptions options);
  absl::StatusOr<std::shared_ptr<const Cached>> Read(const std::string& id);
  // The cache entry of the key `token` belongs to, when the token is valid
  // now (kUnauthenticated otherwise). Reads the key when the cache has none
  // younger than cache_lifetime and writes last_used_at when it is due;
  // with Blocking::kNever, returns nullopt instead of doing either.
  std::optional<absl::StatusOr<std::shared_ptr<const Cached>>> Check(
      absl::string_view token, Blocking blocking);
  void TouchLastUsed(const std::string& id);

  PgPool* const pool_;
  const std::string schema_;
  const ApiKeyStoreOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const Cached>> cache_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, absl::Time> touched_ ABSL_GUARDED_BY(mu_);
};

// The store as the HTTP server's authenticator (ServerOptions::auth): a
// request's principal is its key's id and scopes.
//
// Thread-safety: thread-safe. `keys` must outlive the authenticator.
class ApiKeyAuthenticator final : public http::Authenticator {
 public:
  explicit ApiKeyAuthenticator(ApiKeyStore* keys) : keys_(keys) {}

  absl::optional<absl::StatusOr<http::PrincipalPtr>> AuthenticateCached(
      absl::string_view token) override;
  absl::StatusOr<http::PrincipalPtr> Authenticate(
      absl::string_view token) override;

 private:
  static absl::StatusOr<http::PrincipalPtr> PrincipalOf(
      absl::StatusOr<std::shared_ptr<const ApiKeyStore::Cached>> cached);

  ApiKeyStore* const keys_;
};

}  // namespace cqrs::auth

#endif  // FRAMEWORK_AUTH_API_KEYS_H_

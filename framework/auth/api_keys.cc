#include "framework/auth/api_keys.h"

#include <algorithm>
#include <utility>

#include <pqxx/pqxx>

#include <openssl/crypto.h>
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"

#include "absl/strings/escaping.h"
#include "framework/auth/crypto.h"
#include "framework/error_code.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::auth {
namespace {

constexpr char kComponent[] = "auth";
constexpr Migration kMigrations[] = {
    {1, "api keys",
     "CREATE TABLE IF NOT EXISTS {s}.api_keys ("
     "  id text PRIMARY KEY,"
     "  name text NOT NULL,"
     "  scopes text[] NOT NULL,"
     "  secret_sha256 text NOT NULL,"
     "  created_at timestamptz NOT NULL DEFAULT now(),"
     "  last_used_at timestamptz,"
     "  expires_at timestamptz,"
     "  revoked_at timestamptz)"},
};

constexpr size_t kIdBytes = 6;       // 12 hex digits
constexpr size_t kSecretBytes = 32;  // 256 bits
constexpr size_t kMaxTokenBytes = 200;

constexpr size_t kMaxCachedKeys = 10000;

absl::Status Unauthenticated() {
  return WithErrorCode(
      absl::UnauthenticatedError("a valid bearer token is required"),
      "unauthenticated");
}

bool IsWord(absl::string_view s) {
  return !s.empty() && s.size() <= 64 &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return absl::ascii_islower(c) || absl::ascii_isdigit(c) ||
                  c == '_' || c == '-';
         });
}

std::optional<absl::Time> TimeOf(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return absl::FromUnixMicros(f.as<int64_t>());
}

constexpr char kColumns[] =
    "id, name, array_to_string(scopes, ','), secret_sha256, "
    "(extract(epoch FROM created_at) * 1000000)::bigint, "
    "(extract(epoch FROM last_used_at) * 1000000)::bigint, "
    "(extract(epoch FROM expires_at) * 1000000)::bigint, "
    "(extract(epoch FROM revoked_at) * 1000000)::bigint";

ApiKey KeyOf(const pqxx::row& r) {
  ApiKey k;
  k.id = r[0].as<std::string>();
  k.name = r[1].as<std::string>();
  k.scopes = absl::StrSplit(r[2].as<std::string>(), ',', absl::SkipEmpty());
  k.created_at = *TimeOf(r[4]);
  k.last_used_at = TimeOf(r[5]);
  k.expires_at = TimeOf(r[6]);
  k.revoked_at = TimeOf(r[7]);
  return k;
}

}  // namespace

bool ApiKey::HasScope(absl::string_view scope) const {
  return std::find(scopes.begin(), scopes.end(), scope) != scopes.end();
}

std::optional<std::string> KeyIdOf(absl::string_view token) {
  if (token.size() > kMaxTokenBytes ||
      !absl::ConsumePrefix(&token, kTokenPrefix)) {
    return std::nullopt;
  }
  const size_t sep = token.find('_');
  if (sep != kIdBytes * 2) return std::nullopt;
  const absl::string_view id = token.substr(0, sep);
  if (!std::all_of(id.begin(), id.end(), [](char c) {
        return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f');
      })) {
    return std::nullopt;
  }
  if (token.size() == sep + 1) return std::nullopt;  // no secret
  return std::string(id);
}

absl::Status ApiKeyStore::Migrate(PgPool& pool, absl::string_view schema) {
  return ApplyMigrations(pool, schema, kComponent, kMigrations);
}

absl::StatusOr<std::unique_ptr<ApiKeyStore>> ApiKeyStore::Create(
    PgPool* pool, std::string schema, ApiKeyStoreOptions options) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  ASSIGN_OR_RETURN(int version, MigratedVersion(*pool, schema, kComponent));
  if (version < kMigrations[std::size(kMigrations) - 1].version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "schema '", schema, "' has no api_keys table: run migrate"));
  }
  return std::unique_ptr<ApiKeyStore>(
      new ApiKeyStore(pool, std::move(schema), options));
}

ApiKeyStore::ApiKeyStore(PgPool* pool, std::string schema,
                         ApiKeyStoreOptions options)
    : pool_(pool), schema_(std::move(schema)), options_(options) {}

absl::StatusOr<NewApiKey> ApiKeyStore::CreateKey(
    std::string name, std::vector<std::string> scopes,
    std::optional<absl::Duration> expires_in) {
  if (name.empty() || name.size() > 200) {
    return InvalidRequest("a key's name must be 1 to 200 bytes");
  }
  if (scopes.empty()) return InvalidRequest("a key needs at least one scope");
  for (const std::string& s : scopes) {
    if (!IsWord(s)) {
      return InvalidRequest(absl::StrCat(
          "scope '", s, "' is not a word of [a-z0-9_-] (at most 64)"));
    }
  }
  if (expires_in.has_value() && *expires_in <= absl::ZeroDuration()) {
    return InvalidRequest("a key must expire in the future");
  }
  ASSIGN_OR_RETURN(std::string id, RandomHex(kIdBytes));
  ASSIGN_OR_RETURN(std::string secret, RandomToken(kSecretBytes));
  NewApiKey out;
  out.token = absl::StrCat(kTokenPrefix, id, "_", secret);
  const std::string array = absl::StrCat("{", absl::StrJoin(scopes, ","), "}");
  std::optional<int64_t> expires_us;
  if (expires_in.has_value()) {
    expires_us = absl::ToInt64Microseconds(*expires_in);
  }
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
        pqxx::work tx(conn);
        const pqxx::row r = tx.exec_params1(
            absl::StrCat("INSERT INTO ", schema_,
                         ".api_keys (id, name, scopes, secret_sha256, "
                         "expires_at) VALUES ($1, $2, $3::text[], $4, now() + "
                         "make_interval(secs => $5::bigint / 1000000.0)) "
                         "RETURNING ",
                         kColumns),
            id, name, array, Sha256Hex(secret), expires_us);
        out.key = KeyOf(r);
        tx.commit();
        return absl::OkStatus();
      }));
  return out;
}

absl::StatusOr<std::vector<ApiKey>> ApiKeyStore::List() {
  std::vector<ApiKey> keys;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection,
      [&](pqxx::connection& conn) -> absl::Status {
        keys.clear();
        pqxx::nontransaction tx(conn);
        for (const pqxx::row& r :
             tx.exec(absl::StrCat("SELECT ", kColumns, " FROM ", schema_,
                                  ".api_keys ORDER BY created_at DESC, id"))) {
          keys.push_back(KeyOf(r));
        }
        return absl::OkStatus();
      }));
  return keys;
}

absl::Status ApiKeyStore::Revoke(absl::string_view id) {
  bool found = false;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection,
      [&](pqxx::connection& conn) -> absl::Status {
        pqxx::nontransaction tx(conn);
        found = !tx.exec_params(absl::StrCat("UPDATE ", schema_,
                                             ".api_keys SET revoked_at = "
                                             "coalesce(revoked_at, now()) "
                                             "WHERE id = $1 RETURNING id"),
                                std::string(id))
                     .empty();
        return absl::OkStatus();
      }));
  if (!found) {
    return WithErrorCode(absl::NotFoundError(absl::StrCat("no key '", id, "'")),
                         "key_not_found");
  }
  absl::MutexLock lock(&mu_);
  cache_.erase(std::string(id));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const ApiKeyStore::Cached>> ApiKeyStore::Read(
    const std::string& id) {
  auto entry = std::make_shared<Cached>();
  Cached& c = *entry;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection,
      [&](pqxx::connection& conn) -> absl::Status {
        pqxx::nontransaction tx(conn);
        const pqxx::result rows =
            tx.exec_params(absl::StrCat("SELECT ", kColumns, " FROM ", schema_,
                                        ".api_keys WHERE id = $1"),
                           id);
        if (!rows.empty()) {
          c.key = KeyOf(rows[0]);
          const std::string hash =
              absl::HexStringToBytes(rows[0][3].as<std::string>());
          if (hash.size() == c.secret_hash.size()) {
            std::copy(hash.begin(), hash.end(), c.secret_hash.begin());
          } else {
            c.key.reset();  // a damaged row matches nothing
          }
        }
        return absl::OkStatus();
      }));
  if (c.key.has_value()) {
    c.principal = std::make_shared<const http::Principal>(
        http::Principal{c.key->id, c.key->scopes});
  }
  c.read_at = absl::Now();
  return std::shared_ptr<const Cached>(std::move(entry));
}

std::optional<absl::StatusOr<std::shared_ptr<const ApiKeyStore::Cached>>>
ApiKeyStore::Check(absl::string_view token, Blocking blocking) {
  using Result = absl::StatusOr<std::shared_ptr<const Cached>>;
  const std::optional<std::string> id = KeyIdOf(token);
  if (!id.has_value()) return Result(Unauthenticated());
  const absl::Time now = absl::Now();
  std::shared_ptr<const Cached> cached;
  bool touch_due = false;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = cache_.find(*id);
    if (it != cache_.end() &&
        now - it->second->read_at < options_.cache_lifetime) {
      cached = it->second;
    }
    auto touched = touched_.find(*id);
    touch_due = touched == touched_.end() ||
                now - touched->second >= options_.last_used_resolution;
  }
  // From half its lifetime on, an entry is read again ahead of time: the
  // first request that notices (and only it) goes the blocking way, the
  // others keep using the entry, so that a busy key never has every request
  // in flight miss the cache at once.
  const bool refresh_due =
      cached != nullptr && now - cached->read_at >= options_.cache_lifetime / 2;
  if (refresh_due && blocking == Blocking::kNever &&
      !cached->refreshing.exchange(true)) {
    return std::nullopt;
  }
  if (cached == nullptr || (refresh_due && blocking == Blocking::kAllowed)) {
    if (blocking == Blocking::kNever) return std::nullopt;
    absl::StatusOr<std::shared_ptr<const Cached>> fresh = Read(*id);
    if (!fresh.ok()) {
      if (cached == nullptr) return Result(fresh.status());
      // The entry is still within its lifetime: keep it; the next request
      // past half its lifetime tries again.
      cached->refreshing.store(false);
      fresh = cached;
    }
    cached = *std::move(fresh);
    absl::MutexLock lock(&mu_);
    // Unknown ids are cached too: bound what a stream of them can hold.
    if (cache_.size() >= kMaxCachedKeys) {
      absl::erase_if(cache_, [&](const auto& entry) {
        return now - entry.second->read_at >= options_.cache_lifetime;
      });
      if (cache_.size() >= kMaxCachedKeys) cache_.clear();
    }
    cache_[*id] = cached;
  }
  // The hash is compared even for an unknown key, so that the time taken
  // does not tell a known id from an unknown one.
  const absl::string_view secret =
      token.substr(kTokenPrefix.size() + id->size() + 1);
  const Sha256Digest presented = Sha256(secret);
  const bool matches =
      CRYPTO_memcmp(presented.data(), cached->secret_hash.data(),
                    presented.size()) == 0;
  if (!matches || !cached->key.has_value() ||
      cached->key->revoked_at.has_value() ||
      (cached->key->expires_at.has_value() &&
       *cached->key->expires_at <= now)) {
    return Result(Unauthenticated());
  }
  if (touch_due) {
    // last_used_at is written here, where blocking is allowed.
    if (blocking == Blocking::kNever) return std::nullopt;
    bool write = false;
    {
      absl::MutexLock lock(&mu_);
      auto touched = touched_.find(*id);
      if (touched == touched_.end() ||
          now - touched->second >= options_.last_used_resolution) {
        touched_[*id] = now;
        write = true;
      }
    }
    if (write) TouchLastUsed(*id);
  }
  return Result(std::move(cached));
}

absl::StatusOr<ApiKey> ApiKeyStore::Authenticate(absl::string_view token) {
  absl::StatusOr<std::shared_ptr<const Cached>> cached =
      *Check(token, Blocking::kAllowed);
  if (!cached.ok()) return cached.status();
  return *(*cached)->key;
}

std::optional<absl::StatusOr<ApiKey>> ApiKeyStore::AuthenticateCached(
    absl::string_view token) {
  std::optional<absl::StatusOr<std::shared_ptr<const Cached>>> cached =
      Check(token, Blocking::kNever);
  if (!cached.has_value()) return std::nullopt;
  if (!cached->ok()) return absl::StatusOr<ApiKey>(cached->status());
  return absl::StatusOr<ApiKey>(*(**cached)->key);
}

void ApiKeyStore::TouchLastUsed(const std::string& id) {
  // Best effort: a failed write only leaves last_used_at older.
  pool_
      ->Run(PgPool::Retry::kNever,
            [&](pqxx::connection& conn) -> absl::Status {
              pqxx::nontransaction tx(conn);
              tx.exec_params(absl::StrCat("UPDATE ", schema_,
                                          ".api_keys SET last_used_at = now() "
                                          "WHERE id = $1"),
                             id);
              return absl::OkStatus();
            })
      .IgnoreError();
}

namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void WriteString(JsonWriter& w, absl::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

void WriteTime(JsonWriter& w, const std::optional<absl::Time>& t) {
  if (!t.has_value()) {
    w.Null();
    return;
  }
  WriteString(w,
              absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", *t, absl::UTCTimeZone()));
}

void WriteKey(JsonWriter& w, const ApiKey& key, absl::string_view token) {
  w.StartObject();
  w.Key("id");
  WriteString(w, key.id);
  w.Key("name");
  WriteString(w, key.name);
  w.Key("scopes");
  w.StartArray();
  for (const std::string& s : key.scopes) WriteString(w, s);
  w.EndArray();
  w.Key("created_at");
  WriteTime(w, key.created_at);
  w.Key("last_used_at");
  WriteTime(w, key.last_used_at);
  w.Key("expires_at");
  WriteTime(w, key.expires_at);
  w.Key("revoked_at");
  WriteTime(w, key.revoked_at);
  if (!token.empty()) {
    w.Key("token");
    WriteString(w, token);
  }
  w.EndObject();
}

}  // namespace

std::string ApiKeyJson(const ApiKey& key, absl::string_view token) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  WriteKey(w, key, token);
  return std::string(buffer.GetString(), buffer.GetSize());
}

namespace {

void WriteKeys(JsonWriter& w, const std::vector<ApiKey>& keys) {
  w.StartArray();
  for (const ApiKey& key : keys) WriteKey(w, key, "");
  w.EndArray();
}

}  // namespace

std::string ApiKeyListJson(const std::vector<ApiKey>& keys) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  WriteKeys(w, keys);
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string ApiKeyPageJson(const std::vector<ApiKey>& keys) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("items");
  WriteKeys(w, keys);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

absl::optional<absl::StatusOr<http::PrincipalPtr>>
ApiKeyAuthenticator::AuthenticateCached(absl::string_view token) {
  auto cached = keys_->Check(token, ApiKeyStore::Blocking::kNever);
  if (!cached.has_value()) return absl::nullopt;
  return PrincipalOf(*std::move(cached));
}

absl::StatusOr<http::PrincipalPtr> ApiKeyAuthenticator::Authenticate(
    absl::string_view token) {
  return PrincipalOf(*keys_->Check(token, ApiKeyStore::Blocking::kAllowed));
}

absl::StatusOr<http::PrincipalPtr> ApiKeyAuthenticator::PrincipalOf(
    absl::StatusOr<std::shared_ptr<const ApiKeyStore::Cached>> cached) {
  if (!cached.ok()) return cached.status();
  return (*cached)->principal;
}

}  // namespace cqrs::auth

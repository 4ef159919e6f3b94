// API keys (framework/auth/api_keys.h) and the primitives under them
// (framework/auth/crypto.h), against PostgreSQL.
#include "framework/auth/api_keys.h"

#include <set>
#include <string>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "framework/auth/crypto.h"
#include "framework/error_code.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace cqrs::auth {
namespace {

using cqrs::testing::TestSchema;

std::unique_ptr<ApiKeyStore> Store(TestSchema& schema,
                                   ApiKeyStoreOptions options = {}) {
  REQUIRE(ApiKeyStore::Migrate(schema.pool(), schema.name()).ok());
  auto store = ApiKeyStore::Create(&schema.pool(), schema.name(), options);
  REQUIRE(store.ok());
  return *std::move(store);
}

TEST_CASE("crypto: random tokens, SHA-256, constant-time comparison",
          "[framework][auth]") {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<std::string> t = RandomToken(32);
    REQUIRE(t.ok());
    CHECK(t->size() == 43);  // 256 bits in unpadded base64url
    CHECK(t->find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrs"
                               "tuvwxyz0123456789-_") == std::string::npos);
    seen.insert(*t);
  }
  CHECK(seen.size() == 100);
  CHECK(Sha256Hex("abc") ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(ConstantTimeEquals("same", "same"));
  CHECK_FALSE(ConstantTimeEquals("same", "samf"));
  CHECK_FALSE(ConstantTimeEquals("same", "sam"));
  CHECK(ConstantTimeEquals("", ""));
}

TEST_CASE("a created key authenticates its token and nothing else",
          "[framework][auth][pg]") {
  TestSchema schema;
  auto keys = Store(schema);
  absl::StatusOr<NewApiKey> k =
      keys->CreateKey("ci", {"commands", "queries"}, std::nullopt);
  REQUIRE(k.ok());
  CHECK(absl::StartsWith(k->token, absl::StrCat("cqrs_", k->key.id, "_")));
  CHECK(KeyIdOf(k->token) == k->key.id);
  absl::StatusOr<ApiKey> who = keys->Authenticate(k->token);
  REQUIRE(who.ok());
  CHECK(who->name == "ci");
  CHECK(who->HasScope("commands"));
  CHECK_FALSE(who->HasScope("admin"));

  // Only the hash is stored: the secret appears nowhere in the table.
  // The secret (base64url: it may hold '_' itself) follows "cqrs_<id>_".
  const std::string secret = k->token.substr(kTokenPrefix.size() + 13);
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                     ".api_keys t WHERE strpos(t::text, '",
                                     secret, "') > 0")) == 0);
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                     ".api_keys WHERE secret_sha256 = '",
                                     Sha256Hex(secret), "'")) == 1);

  // Every wrong token gets the same answer.
  std::string wrong_secret = k->token;
  wrong_secret.back() = wrong_secret.back() == 'A' ? 'B' : 'A';
  for (const std::string& bad :
       {std::string(""), std::string("Bearer x"), std::string("cqrs_"),
        absl::StrCat("cqrs_", k->key.id, "_"), wrong_secret,
        absl::StrCat("cqrs_000000000000_", secret),
        absl::StrCat("cqrs_", k->key.id, "x_", secret),
        std::string(1000, 'a')}) {
    INFO(bad);
    absl::StatusOr<ApiKey> r = keys->Authenticate(bad);
    CHECK(absl::IsUnauthenticated(r.status()));
    CHECK(r.status().message() == "a valid bearer token is required");
    CHECK(ErrorCodeOf(r.status()) == "unauthenticated");
  }
}

TEST_CASE(
    "a revoked key stops working within the cache lifetime, also in "
    "another process's store",
    "[framework][auth][pg]") {
  TestSchema schema;
  auto here = Store(schema);
  auto there = Store(schema);  // as another process would
  absl::StatusOr<NewApiKey> k = here->CreateKey("app", {"queries"}, {});
  REQUIRE(k.ok());
  REQUIRE(there->Authenticate(k->token).ok());  // cached there now
  REQUIRE(here->Revoke(k->key.id).ok());
  CHECK(absl::IsUnauthenticated(here->Authenticate(k->token).status()));
  CHECK(cqrs::testing::Eventually(
      [&] {
        return absl::IsUnauthenticated(there->Authenticate(k->token).status());
      },
      absl::Seconds(5)));
  CHECK(absl::IsNotFound(here->Revoke("0123456789ab")));
  CHECK(here->Revoke(k->key.id).ok());  // again: fine
}

TEST_CASE("an expired key is refused; bad input creates nothing",
          "[framework][auth][pg]") {
  TestSchema schema;
  ApiKeyStoreOptions options;
  options.cache_lifetime = absl::ZeroDuration();
  auto keys = Store(schema, options);
  absl::StatusOr<NewApiKey> k =
      keys->CreateKey("short", {"queries"}, absl::Milliseconds(300));
  REQUIRE(k.ok());
  REQUIRE(k->key.expires_at.has_value());
  CHECK(cqrs::testing::Eventually(
      [&] {
        return absl::IsUnauthenticated(keys->Authenticate(k->token).status());
      },
      absl::Seconds(10)));

  CHECK(absl::IsInvalidArgument(keys->CreateKey("", {"a"}, {}).status()));
  CHECK(absl::IsInvalidArgument(keys->CreateKey("n", {}, {}).status()));
  CHECK(absl::IsInvalidArgument(
      keys->CreateKey("n", {"Admin Scope"}, {}).status()));
  CHECK(absl::IsInvalidArgument(
      keys->CreateKey("n", {"a"}, absl::Seconds(-1)).status()));
  auto all = keys->List();
  REQUIRE(all.ok());
  CHECK(all->size() == 1);
}

TEST_CASE(
    "the non-blocking path answers from the cache and sends one request to "
    "read a key again from half its lifetime on",
    "[framework][auth][pg]") {
  TestSchema schema;
  ApiKeyStoreOptions options;
  options.cache_lifetime = absl::Seconds(2);
  auto keys = Store(schema, options);
  absl::StatusOr<NewApiKey> k = keys->CreateKey("busy", {"queries"}, {});
  REQUIRE(k.ok());
  // Nothing cached yet: only the blocking path can tell.
  CHECK_FALSE(keys->AuthenticateCached(k->token).has_value());
  REQUIRE(keys->Authenticate(k->token).ok());  // reads; writes last_used_at
  auto cached = keys->AuthenticateCached(k->token);
  REQUIRE(cached.has_value());
  REQUIRE(cached->ok());
  CHECK((*cached)->id == k->key.id);
  // A wrong secret or a malformed token is refused without blocking.
  auto wrong =
      keys->AuthenticateCached(k->token.substr(0, 18) + std::string(43, 'A'));
  REQUIRE(wrong.has_value());
  CHECK(absl::IsUnauthenticated(wrong->status()));
  auto malformed = keys->AuthenticateCached("nope");
  REQUIRE(malformed.has_value());
  CHECK(absl::IsUnauthenticated(malformed->status()));

  // Past half the lifetime: exactly one caller is sent the blocking way...
  const absl::Time read = absl::Now();
  REQUIRE(cqrs::testing::Eventually(
      [&] { return absl::Now() - read > absl::Milliseconds(1100); }));
  int deferred = 0;
  for (int i = 0; i < 20; ++i) {
    auto r = keys->AuthenticateCached(k->token);
    if (!r.has_value()) {
      ++deferred;
    } else {
      CHECK(r->ok());
    }
  }
  CHECK(deferred == 1);
  // ...and its read renews the entry for everyone.
  REQUIRE(keys->Authenticate(k->token).ok());
  auto renewed = keys->AuthenticateCached(k->token);
  REQUIRE(renewed.has_value());
  CHECK(renewed->ok());
}

}  // namespace
}  // namespace cqrs::auth

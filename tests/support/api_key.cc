#include "tests/support/api_key.h"

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "framework/auth/api_keys.h"
#include "framework/auth/scopes.h"

namespace cqrs::testing {

std::string CreateToken(PgPool& pool, const std::string& schema,
                        std::vector<std::string> scopes,
                        const std::string& name) {
  REQUIRE(auth::ApiKeyStore::Migrate(pool, schema).ok());
  auto keys = auth::ApiKeyStore::Create(&pool, schema);
  REQUIRE(keys.ok());
  if (scopes.empty()) {
    for (absl::string_view scope : auth::kAllScopes) {
      scopes.emplace_back(scope);
    }
  }
  auto created = (*keys)->CreateKey(name, std::move(scopes), {});
  INFO(created.status().ToString());
  REQUIRE(created.ok());
  return created->token;
}

http::HeaderList BearerHeader(const std::string& token) {
  return {{"Authorization", absl::StrCat("Bearer ", token)}};
}

}  // namespace cqrs::testing

// API keys for tests that talk to an app with authentication on.
//
//   const std::string token = testing::CreateToken(schema.pool(),
//   schema.name()); client->SetDefaultHeaders(testing::BearerHeader(token));
//
// Thread-safety: plain functions.
#ifndef TESTS_SUPPORT_API_KEY_H_
#define TESTS_SUPPORT_API_KEY_H_

#include <string>
#include <vector>

#include "framework/http/message.h"
#include "framework/pg_pool.h"

namespace cqrs::testing {

// Creates a key named `name` with `scopes` (every scope when empty) in
// `schema`, migrating its table first if needed, and returns its token.
// Fails the test when that does not work.
std::string CreateToken(PgPool& pool, const std::string& schema,
                        std::vector<std::string> scopes = {},
                        const std::string& name = "test");

// {"Authorization", "Bearer <token>"}.
http::HeaderList BearerHeader(const std::string& token);

}  // namespace cqrs::testing

#endif  // TESTS_SUPPORT_API_KEY_H_

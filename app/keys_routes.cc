// API keys over HTTP, for every app (scope admin): what `APP keys` does.
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "app/internal/commands.h"
#include "app/internal/parts.h"
#include "framework/auth/scopes.h"
#include "framework/error_code.h"
#include "framework/http/status_mapping.h"
#include "framework/json_shape.h"

namespace cqrs::app_internal {
namespace {

// POST /keys.
struct CreateKeyBody {
  std::string name;
  std::vector<std::string> scopes;
  std::optional<std::string> expires_in;

  static auto Json() {
    return json::Shape<CreateKeyBody>("CreateKey")
        .Field("name", &CreateKeyBody::name, json::Length(1, 200))
        .Field("scopes", &CreateKeyBody::scopes, json::Items(1, 16))
        .Field("expires_in", &CreateKeyBody::expires_in, json::Length(1, 20),
               json::Description("e.g. 30d, 12h, 90m; none: no expiry"));
  }
};

absl::StatusOr<http::Response> CreateKey(const App& app,
                                         auth::ApiKeyStore& keys,
                                         const http::Request& request) {
  ASSIGN_OR_RETURN(CreateKeyBody body,
                   json::Decode<CreateKeyBody>(request.body()));
  const std::set<std::string> known = KnownScopes(app);
  for (const std::string& scope : body.scopes) {
    if (known.count(scope) == 0) {
      return InvalidRequest(absl::StrCat("unknown scope '", scope,
                                         "'; this app's scopes are ",
                                         absl::StrJoin(known, ", ")));
    }
  }
  std::optional<absl::Duration> expires;
  if (body.expires_in.has_value()) {
    absl::StatusOr<absl::Duration> d = ParseExpiry(*body.expires_in);
    if (!d.ok()) return InvalidRequest(d.status().message());
    expires = *d;
  }
  ASSIGN_OR_RETURN(
      auth::NewApiKey created,
      keys.CreateKey(std::move(body.name), std::move(body.scopes), expires));
  return http::JsonResponse(201, auth::ApiKeyJson(created.key, created.token));
}

absl::StatusOr<http::Response> RevokeKey(auth::ApiKeyStore& keys,
                                         const http::Request& request) {
  const std::string id(request.PathParam("id"));
  RETURN_IF_ERROR(keys.Revoke(id));
  ASSIGN_OR_RETURN(std::vector<auth::ApiKey> all, keys.List());
  for (const auth::ApiKey& key : all) {
    if (key.id == id) return http::JsonResponse(200, auth::ApiKeyJson(key));
  }
  return WithErrorCode(absl::NotFoundError(absl::StrCat("no key '", id, "'")),
                       "key_not_found");
}

}  // namespace

std::set<std::string> KnownScopes(const App& app) {
  std::set<std::string> known(auth::kAllScopes.begin(), auth::kAllScopes.end());
  const auto add = [&](const http::RouteAccess& access) {
    if (access.kind == http::RouteAccess::Kind::kScope) {
      known.insert(access.scope);
    }
  };
  for (const auto& route : app.parts().plain_routes) add(route.options.access);
  for (const auto& query : app.parts().queries) add(query.access);
  return known;
}

void AddKeyRoutes(const App& app, auth::ApiKeyStore* keys,
                  http::Router& router) {
  http::RouteOptions admin;
  admin.access = http::RouteAccess::Scope(std::string(auth::kAdminScope));
  http::RouteOptions admin_json = admin;
  admin_json.require_json_body = true;
  router.Add(
      "GET", "/keys",
      http::FromStatusOr(
          [keys](const http::Request&) -> absl::StatusOr<http::Response> {
            ASSIGN_OR_RETURN(std::vector<auth::ApiKey> all, keys->List());
            return http::JsonResponse(200, auth::ApiKeyPageJson(all));
          }),
      admin);
  router.Add("POST", "/keys",
             http::FromStatusOr([&app, keys](const http::Request& request) {
               return CreateKey(app, *keys, request);
             }),
             admin_json);
  router.Add("POST", "/keys/{id}/revoke",
             http::FromStatusOr([keys](const http::Request& request) {
               return RevokeKey(*keys, request);
             }),
             admin);
}

}  // namespace cqrs::app_internal

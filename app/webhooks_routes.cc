// Webhook endpoints over HTTP, for every app that publishes events (scope
// admin): what `APP webhooks` does (integration/webhook_store.h).
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "app/internal/commands.h"
#include "framework/auth/scopes.h"
#include "framework/error_code.h"
#include "framework/http/address_policy.h"
#include "framework/http/status_mapping.h"
#include "framework/json_shape.h"
#include "framework/json_writer.h"

namespace cqrs::app_internal {
namespace {

constexpr int kDefaultListLimit = 100;
constexpr int kMaxListLimit = 1000;

// POST /webhooks.
struct CreateWebhookBody {
  std::string url;
  std::optional<std::vector<std::string>> types;
  std::optional<std::vector<std::string>> categories;
  std::optional<std::string> description;

  static auto Json() {
    return json::Shape<CreateWebhookBody>("CreateWebhook")
        .Field("url", &CreateWebhookBody::url,
               json::Length(1, integration::kMaxWebhookUrl),
               json::Description("an http:// or https:// URL"))
        .Field("types", &CreateWebhookBody::types,
               json::Items(0, integration::kMaxWebhookFilters),
               json::Description(
                   "CloudEvents types (<public type>.v<n>) or public types "
                   "(every version); none: every published type"))
        .Field("categories", &CreateWebhookBody::categories,
               json::Items(0, integration::kMaxWebhookFilters),
               json::Description("stream categories; none: every category"))
        .Field("description", &CreateWebhookBody::description,
               json::Length(0, integration::kMaxWebhookDescription));
  }
};

// PATCH /webhooks/{id}: what is present changes.
struct UpdateWebhookBody {
  std::optional<std::string> url;
  std::optional<std::vector<std::string>> types;
  std::optional<std::vector<std::string>> categories;
  std::optional<std::string> description;

  static auto Json() {
    return json::Shape<UpdateWebhookBody>("UpdateWebhook")
        .Field("url", &UpdateWebhookBody::url,
               json::Length(1, integration::kMaxWebhookUrl))
        .Field("types", &UpdateWebhookBody::types,
               json::Items(0, integration::kMaxWebhookFilters),
               json::Description("[] clears the filter"))
        .Field("categories", &UpdateWebhookBody::categories,
               json::Items(0, integration::kMaxWebhookFilters),
               json::Description("[] clears the filter"))
        .Field("description", &UpdateWebhookBody::description,
               json::Length(0, integration::kMaxWebhookDescription));
  }
};

// POST /webhooks/{id}/replay: exactly one of the two.
struct ReplayWebhookBody {
  std::optional<std::string> from_position;
  std::optional<std::string> from_time;

  static auto Json() {
    return json::Shape<ReplayWebhookBody>("ReplayWebhook")
        .Field("from_position", &ReplayWebhookBody::from_position,
               json::Length(1, 64),
               json::Description("a position token: the events after it"))
        .Field("from_time", &ReplayWebhookBody::from_time, json::Length(1, 64),
               json::Description("RFC 3339: the events recorded from then"));
  }
};

absl::StatusOr<int> LimitOf(const http::Request& request) {
  const absl::optional<absl::string_view> text = request.Query("limit");
  if (!text.has_value()) return kDefaultListLimit;
  int limit = 0;
  if (!absl::SimpleAtoi(*text, &limit) || limit < 1 || limit > kMaxListLimit) {
    return InvalidRequest(
        absl::StrCat("limit must be an integer from 1 to ", kMaxListLimit));
  }
  return limit;
}

http::Response NoContent() {
  http::Response r;
  r.status = 204;
  r.content_type.clear();
  return r;
}

absl::StatusOr<http::Response> CreateWebhook(integration::WebhookStore& hooks,
                                             const http::Request& request) {
  ASSIGN_OR_RETURN(CreateWebhookBody body,
                   json::Decode<CreateWebhookBody>(request.body()));
  integration::WebhookEndpointInput input;
  input.url = std::move(body.url);
  input.types = std::move(body.types).value_or(std::vector<std::string>{});
  input.categories =
      std::move(body.categories).value_or(std::vector<std::string>{});
  input.description = std::move(body.description).value_or("");
  ASSIGN_OR_RETURN(integration::NewWebhook made, hooks.Add(std::move(input)));
  return http::JsonResponse(201, integration::WebhookEndpointJson(
                                     made.endpoint, nullptr, made.secret));
}

absl::StatusOr<http::Response> ShowWebhook(integration::WebhookStore& hooks,
                                           absl::string_view id) {
  ASSIGN_OR_RETURN(integration::WebhookEndpoint endpoint, hooks.Get(id));
  ASSIGN_OR_RETURN(integration::WebhookStats stats, hooks.Stats(id));
  return http::JsonResponse(200,
                            integration::WebhookEndpointJson(endpoint, &stats));
}

absl::StatusOr<http::Response> UpdateWebhook(integration::WebhookStore& hooks,
                                             const http::Request& request) {
  ASSIGN_OR_RETURN(UpdateWebhookBody body,
                   json::Decode<UpdateWebhookBody>(request.body()));
  integration::WebhookEndpointPatch patch;
  patch.url = std::move(body.url);
  patch.types = std::move(body.types);
  patch.categories = std::move(body.categories);
  patch.description = std::move(body.description);
  ASSIGN_OR_RETURN(integration::WebhookEndpoint endpoint,
                   hooks.Update(request.PathParam("id"), std::move(patch)));
  return http::JsonResponse(200, integration::WebhookEndpointJson(endpoint));
}

absl::StatusOr<http::Response> ReplayWebhook(integration::WebhookStore& hooks,
                                             const http::Request& request) {
  ASSIGN_OR_RETURN(ReplayWebhookBody body,
                   json::Decode<ReplayWebhookBody>(request.body()));
  if (body.from_position.has_value() == body.from_time.has_value()) {
    return InvalidRequest(
        "give exactly one of the fields \"from_position\" and \"from_time\"");
  }
  ASSIGN_OR_RETURN(integration::WebhookEndpoint endpoint,
                   ReplayEndpoint(hooks, request.PathParam("id"),
                                  body.from_position.value_or(""),
                                  body.from_time.value_or("")));
  return http::JsonResponse(200, integration::WebhookEndpointJson(endpoint));
}

// The answer of parked/replay and parked/skip: {"<key>": n}.
http::Response CountResponse(const char* key, int64_t n) {
  JsonBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key(key);
  w.Int64(n);
  w.EndObject();
  return http::JsonResponse(200,
                            std::string(buffer.GetString(), buffer.GetSize()));
}

}  // namespace

absl::StatusOr<integration::WebhookEndpoint> ReplayEndpoint(
    integration::WebhookStore& hooks, absl::string_view id,
    absl::string_view from_position, absl::string_view from_time) {
  if (!from_position.empty()) {
    absl::StatusOr<eventstore::Position> after =
        eventstore::Position::FromToken(from_position);
    if (!after.ok()) {
      return InvalidRequest(absl::StrCat("\"from_position\" '", from_position,
                                         "' is not a position token"));
    }
    return hooks.Replay(id, *after);
  }
  absl::Time time;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, from_time, &time, &error)) {
    return InvalidRequest(
        absl::StrCat("\"from_time\" '", from_time,
                     "' is not an RFC 3339 time such as 2024-05-01T12:00:00Z"));
  }
  return hooks.ReplayFrom(id, time);
}

std::function<absl::Status(absl::string_view)> WebhookUrlCheck(
    const std::vector<std::string>& allow_networks) {
  // The store checks the URL's form first; this adds where it points.
  // The networks were checked when the flags were read: a bad one is left
  // out rather than allowing more.
  http::AddressPolicy policy;
  for (const std::string& cidr : allow_networks) {
    policy.Allow(cidr).IgnoreError();
  }
  return
      [policy](absl::string_view url) { return http::CheckUrl(url, policy); };
}

std::string WebhookBodySchema(absl::string_view name) {
  if (name == "CreateWebhook") return json::SchemaOf<CreateWebhookBody>();
  if (name == "UpdateWebhook") return json::SchemaOf<UpdateWebhookBody>();
  return json::SchemaOf<ReplayWebhookBody>();
}

absl::StatusOr<std::unique_ptr<integration::WebhookStore>> OpenWebhookStore(
    PgPool* pool, const std::string& schema, const App& app,
    eventstore::PostgresEventStore* events,
    const std::vector<std::string>& allow_networks) {
  integration::WebhookStoreOptions options;
  options.publication = &app.publication();
  options.events = events;
  options.check_url = WebhookUrlCheck(allow_networks);
  return integration::WebhookStore::Create(pool, schema, std::move(options));
}

void AddWebhookRoutes(integration::WebhookStore* hooks, http::Router& router) {
  http::RouteOptions admin;
  admin.access = http::RouteAccess::Scope(std::string(auth::kAdminScope));
  http::RouteOptions admin_json = admin;
  admin_json.require_json_body = true;
  using Handler = std::function<absl::StatusOr<http::Response>(
      integration::WebhookStore&, const http::Request&)>;
  const auto add = [&](const char* method, const char* pattern,
                       const http::RouteOptions& options, Handler handler) {
    router.Add(method, pattern,
               http::FromStatusOr([hooks, handler = std::move(handler)](
                                      const http::Request& request) {
                 return handler(*hooks, request);
               }),
               options);
  };
  add("POST", "/webhooks", admin_json, CreateWebhook);
  add("GET", "/webhooks", admin,
      [](integration::WebhookStore& h,
         const http::Request&) -> absl::StatusOr<http::Response> {
        ASSIGN_OR_RETURN(std::vector<integration::WebhookEndpoint> all,
                         h.List());
        return http::JsonResponse(200,
                                  integration::WebhookEndpointPageJson(all));
      });
  add("GET", "/webhooks/{id}", admin,
      [](integration::WebhookStore& h, const http::Request& request) {
        return ShowWebhook(h, request.PathParam("id"));
      });
  add("PATCH", "/webhooks/{id}", admin_json, UpdateWebhook);
  add("DELETE", "/webhooks/{id}", admin,
      [](integration::WebhookStore& h,
         const http::Request& request) -> absl::StatusOr<http::Response> {
        RETURN_IF_ERROR(h.Delete(request.PathParam("id")));
        return NoContent();
      });
  add("POST", "/webhooks/{id}/disable", admin,
      [](integration::WebhookStore& h,
         const http::Request& request) -> absl::StatusOr<http::Response> {
        ASSIGN_OR_RETURN(integration::WebhookEndpoint e,
                         h.Disable(request.PathParam("id")));
        return http::JsonResponse(200, integration::WebhookEndpointJson(e));
      });
  add("POST", "/webhooks/{id}/enable", admin,
      [](integration::WebhookStore& h,
         const http::Request& request) -> absl::StatusOr<http::Response> {
        ASSIGN_OR_RETURN(integration::WebhookEndpoint e,
                         h.Enable(request.PathParam("id")));
        return http::JsonResponse(200, integration::WebhookEndpointJson(e));
      });
  add("POST", "/webhooks/{id}/rotate-secret", admin,
      [](integration::WebhookStore& h,
         const http::Request& request) -> absl::StatusOr<http::Response> {
        ASSIGN_OR_RETURN(integration::NewWebhook made,
                         h.RotateSecret(request.PathParam("id")));
        return http::JsonResponse(
            200, integration::WebhookEndpointJson(made.endpoint, nullptr,
                                                  made.secret));
      });
  add("GET", "/webhooks/{id}/attempts", admin,
      [](integration::WebhookStore& h,
         const http::Request& request) -> absl::StatusOr<http::Response> {
        ASSIGN_OR_RETURN(int limit, LimitOf(request));
        ASSIGN_OR_RETURN(std::vector<integration::WebhookAttempt> attempts,
                         h.Attempts(request.PathParam("id"), limit));
        return http::JsonResponse(200,
                                  integration::WebhookAttemptsJson(attempts));
      });
  add("POST", "/webhooks/{id}/replay", admin_json, ReplayWebhook);
  add("GET", "/webhooks/{id}/parked", admin,
      [](integration::WebhookStore& h,
         const http::Request& request) -> absl::StatusOr<http::Response> {
        ASSIGN_OR_RETURN(int limit, LimitOf(request));
        ASSIGN_OR_RETURN(std::vector<integration::ParkedDelivery> parked,
                         h.Parked(request.PathParam("id"), limit));
        return http::JsonResponse(200,
                                  integration::ParkedDeliveriesJson(parked));
      });
  add("POST", "/webhooks/{id}/parked/replay", admin,
      [](integration::WebhookStore& h,
         const http::Request& request) -> absl::StatusOr<http::Response> {
        ASSIGN_OR_RETURN(int64_t n, h.ReplayParked(request.PathParam("id")));
        return CountResponse("replayed", n);
      });
  add("POST", "/webhooks/{id}/parked/skip", admin,
      [](integration::WebhookStore& h,
         const http::Request& request) -> absl::StatusOr<http::Response> {
        ASSIGN_OR_RETURN(int64_t n, h.SkipParked(request.PathParam("id")));
        return CountResponse("skipped", n);
      });
}

}  // namespace cqrs::app_internal

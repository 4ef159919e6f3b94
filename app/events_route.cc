// GET /events for every app that publishes events (scope events): the
// feed of integration/feed.h over HTTP.
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "app/internal/commands.h"
#include "framework/auth/scopes.h"
#include "framework/error_code.h"
#include "framework/http/status_mapping.h"
#include "framework/json_writer.h"
#include "integration/feed.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::app_internal {
namespace {

// The feed query of a request: after, limit, type (repeatable, or
// comma-separated), subject, category. Bad values: invalid_request.
absl::StatusOr<integration::FeedQuery> QueryOf(const http::Request& request) {
  integration::FeedQuery query;
  for (const auto& [name, value] : request.query_params()) {
    if (name == "after") {
      absl::StatusOr<eventstore::Position> after =
          eventstore::Position::FromToken(value);
      if (!after.ok()) {
        return InvalidRequest(
            "after must be a position token from an earlier page or command");
      }
      query.after = *after;
    } else if (name == "limit") {
      if (!absl::SimpleAtoi(value, &query.limit) || query.limit < 1 ||
          query.limit > integration::kMaxFeedLimit) {
        return InvalidRequest(absl::StrCat(
            "limit must be an integer from 1 to ", integration::kMaxFeedLimit));
      }
    } else if (name == "type") {
      for (absl::string_view t : absl::StrSplit(value, ',')) {
        query.types.emplace_back(t);
      }
    } else if (name == "subject") {
      query.subject = value;
    } else if (name == "category") {
      query.category = value;
    }
  }
  return query;
}

absl::StatusOr<http::Response> Events(eventstore::EventStore& store,
                                      const integration::Publication& pub,
                                      const http::Request& request) {
  ASSIGN_OR_RETURN(integration::FeedQuery query, QueryOf(request));
  absl::StatusOr<integration::FeedPage> page =
      integration::ReadFeed(store, pub, query);
  if (absl::IsInvalidArgument(page.status())) {
    return InvalidRequest(page.status().message());
  }
  if (!page.ok()) return page.status();
  JsonBuffer buffer;  // copies each item at once
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("items");
  w.StartArray();
  for (const std::string& item : page->items) {
    w.RawValue(item.data(), item.size(), rapidjson::kObjectType);
  }
  w.EndArray();
  w.Key("next");
  const std::string next = page->next.ToToken();
  w.String(next.data(), static_cast<rapidjson::SizeType>(next.size()));
  w.EndObject();
  http::Response response = http::JsonResponse(
      200, std::string(buffer.GetString(), buffer.GetSize()));
  return response;
}

}  // namespace

void AddEventsRoute(const App& app, eventstore::EventStore* store,
                    http::Router& router) {
  if (app.publication().types().empty()) return;
  http::RouteOptions options;
  options.access = http::RouteAccess::Scope(std::string(auth::kEventsScope));
  const integration::Publication* pub = &app.publication();
  router.Add("GET", "/events",
             http::FromStatusOr([store, pub](const http::Request& request) {
               return Events(*store, *pub, request);
             }),
             options);
}

}  // namespace cqrs::app_internal

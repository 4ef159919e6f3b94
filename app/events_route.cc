// GET /events and GET /events/stream for every app that publishes events
// (scope events): the feed of integration/feed.h over HTTP, its long-poll
// and its Server-Sent Events through integration/feed_hub.h.
#include <memory>
#include <optional>
#include <string>
#include <utility>
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
#include "integration/feed_hub.h"
#include "integration/feed_read_ahead.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::app_internal {
namespace {

// The longest a GET /events?wait= may wait, in milliseconds.
constexpr int kMaxWaitMs = 30000;

// The feed query of a request: after, limit, type (repeatable, or
// comma-separated), subject, category; `*wait_ms` gets wait (0 when
// absent). Bad values: invalid_request.
absl::StatusOr<integration::FeedQuery> QueryOf(const http::Request& request,
                                               int* wait_ms) {
  integration::FeedQuery query;
  *wait_ms = 0;
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
    } else if (name == "wait") {
      if (!absl::SimpleAtoi(value, wait_ms) || *wait_ms < 0 ||
          *wait_ms > kMaxWaitMs) {
        return InvalidRequest(absl::StrCat("wait must be an integer from 0 to ",
                                           kMaxWaitMs, " (ms)"));
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

// A type filter naming a type that is not published: invalid_request.
absl::Status CheckTypes(const integration::Publication& pub,
                        const integration::FeedQuery& query) {
  for (const std::string& type : query.types) {
    if (pub.FindCloudEventType(type) == nullptr) {
      return InvalidRequest(
          absl::StrCat("type '", type, "' is not a published event type"));
    }
  }
  return absl::OkStatus();
}

http::Response PageResponse(const std::vector<integration::FeedItem>& items,
                            eventstore::Position next) {
  JsonBuffer buffer;  // copies each item at once
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("items");
  w.StartArray();
  for (const integration::FeedItem& item : items) {
    w.RawValue(item.cloud_event.data(), item.cloud_event.size(),
               rapidjson::kObjectType);
  }
  w.EndArray();
  w.Key("next");
  const std::string token = next.ToToken();
  w.String(token.data(), static_cast<rapidjson::SizeType>(token.size()));
  w.EndObject();
  return http::JsonResponse(200,
                            std::string(buffer.GetString(), buffer.GetSize()));
}

// One GET /events: pages until one has items or the store's head is
// reached; then, with wait, the hub's wake-ups until the deadline. Holds no
// database connection (and no thread) while it waits.
class FeedRequest : public std::enable_shared_from_this<FeedRequest> {
 public:
  FeedRequest(integration::FeedReadAhead* feed, integration::FeedHub* hub,
              integration::FeedQuery query, absl::Time deadline,
              http::Responder responder)
      : feed_(feed),
        hub_(hub),
        query_(std::move(query)),
        deadline_(deadline),
        responder_(std::move(responder)) {}

  // Reads; answers, or waits for the tail to pass the cursor.
  void Step() {
    while (true) {
      absl::StatusOr<integration::FeedPage> page = feed_->Read(query_);
      if (!page.ok())
        return responder_(http::ResponseFromStatus(page.status()));
      query_.after = page->next;
      if (!page->items.empty() || absl::Now() >= deadline_) {
        return responder_(PageResponse(page->items, query_.after));
      }
      if (page->at_head) break;
      // The scan budget ran out among filtered events: read on.
    }
    if (hub_ == nullptr) return Answer();
    auto self = shared_from_this();
    const bool waiting = hub_->WaitForEvents(
        query_.after, deadline_, [self](integration::FeedHub::WaitEnd end) {
          if (end == integration::FeedHub::WaitEnd::kPassed) {
            return self->Step();
          }
          self->Answer();
        });
    if (!waiting) Answer();
  }

 private:
  // The empty page at the cursor reached.
  void Answer() { responder_(PageResponse({}, query_.after)); }

  integration::FeedReadAhead* const feed_;
  integration::FeedHub* const hub_;
  integration::FeedQuery query_;
  const absl::Time deadline_;
  const http::Responder responder_;
};

void Events(integration::FeedReadAhead* feed,
            const integration::Publication* pub, integration::FeedHub* hub,
            const http::Request& request, http::Responder responder) {
  int wait_ms = 0;
  absl::StatusOr<integration::FeedQuery> query = QueryOf(request, &wait_ms);
  if (query.ok()) {
    if (absl::Status types = CheckTypes(*pub, *query); !types.ok()) {
      query = types;
    }
  }
  if (!query.ok()) return responder(http::ResponseFromStatus(query.status()));
  std::make_shared<FeedRequest>(
      feed, wait_ms > 0 ? hub : nullptr, *std::move(query),
      absl::Now() + absl::Milliseconds(wait_ms), std::move(responder))
      ->Step();
}

// GET /events/stream: Server-Sent Events from the position in
// Last-Event-ID (a reconnecting client), else ?after=, else the start.
absl::StatusOr<http::Response> Stream(const integration::Publication& pub,
                                      integration::FeedHub* hub,
                                      const http::Request& request) {
  int wait_ms = 0;
  ASSIGN_OR_RETURN(integration::FeedQuery query, QueryOf(request, &wait_ms));
  RETURN_IF_ERROR(CheckTypes(pub, query));
  if (absl::optional<absl::string_view> last = request.Header("Last-Event-ID");
      last.has_value() && !last->empty()) {
    absl::StatusOr<eventstore::Position> after =
        eventstore::Position::FromToken(*last);
    if (!after.ok()) {
      return InvalidRequest(
          "Last-Event-ID must be the id of an event of this stream");
    }
    query.after = *after;
  }
  http::Response response;
  response.content_type = "text/event-stream";
  response.SetHeader("Cache-Control", "no-store");
  // Tells nginx-style proxies to pass each event on at once.
  response.SetHeader("X-Accel-Buffering", "no");
  response.stream = [hub, query = std::move(query)](
                        std::shared_ptr<http::StreamWriter> writer) {
    hub->Subscribe(query, std::move(writer));
  };
  return response;
}

}  // namespace

void AddEventsRoute(const App& app, integration::FeedReadAhead* feed,
                    integration::FeedHub* hub, http::Router& router) {
  if (app.publication().types().empty()) return;
  const integration::Publication* pub = &app.publication();
  http::RouteOptions options;
  options.access = http::RouteAccess::Scope(std::string(auth::kEventsScope));
  router.AddAsync(
      "GET", "/events",
      [feed, pub, hub](const http::Request& request,
                       http::Responder responder) {
        Events(feed, pub, hub, request, std::move(responder));
      },
      options);
  http::RouteOptions stream_options = options;
  stream_options.execution = http::Execution::kNetworkThread;
  router.Add("GET", "/events/stream",
             http::FromStatusOr([pub, hub](const http::Request& request) {
               return Stream(*pub, hub, request);
             }),
             stream_options);
}

}  // namespace cqrs::app_internal

// The OpenAPI document an app serves at /openapi.json unless it sets its
// own: every command route with the JSON Schema of its body, every query
// route, the operations endpoints, and /events and /asyncapi.json when the
// app publishes events.
#include <algorithm>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "app/internal/commands.h"
#include "app/internal/parts.h"
#include "framework/auth/scopes.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::app_internal {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void String(Writer& w, absl::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

// The {name} parameters of a path pattern.
std::vector<std::string> PathParameters(absl::string_view pattern) {
  std::vector<std::string> names;
  for (absl::string_view segment : absl::StrSplit(pattern, '/')) {
    if (segment.size() > 2 && segment.front() == '{' && segment.back() == '}') {
      names.emplace_back(segment.substr(1, segment.size() - 2));
    }
  }
  return names;
}

void Parameters(Writer& w, absl::string_view pattern, bool read_your_writes) {
  w.Key("parameters");
  w.StartArray();
  for (const std::string& name : PathParameters(pattern)) {
    w.StartObject();
    w.Key("name");
    String(w, name);
    w.Key("in");
    w.String("path");
    w.Key("required");
    w.Bool(true);
    w.Key("schema");
    w.RawValue(R"({"type":"string"})", 17, rapidjson::kObjectType);
    w.EndObject();
  }
  if (read_your_writes) {
    for (const char* header : {"X-Min-Position", "X-Max-Wait-Ms"}) {
      w.StartObject();
      w.Key("name");
      w.String(header);
      w.Key("in");
      w.String("header");
      w.Key("schema");
      w.RawValue(R"({"type":"string"})", 17, rapidjson::kObjectType);
      w.EndObject();
    }
  }
  w.EndArray();
}

// Who may call the operation: the bearer scheme with the scope as its role
// (OpenAPI 3.1 allows role names for non-OAuth schemes), repeated as
// x-required-scopes; an empty scope is an open operation.
void Security(Writer& w, absl::string_view scope) {
  w.Key("security");
  w.StartArray();
  if (!scope.empty()) {
    w.StartObject();
    w.Key("bearerAuth");
    w.StartArray();
    String(w, scope);
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  if (!scope.empty()) {
    w.Key("x-required-scopes");
    w.StartArray();
    String(w, scope);
    w.EndArray();
  }
}

// The codes every operation with a scope may answer.
std::vector<int> WithAuth(std::vector<int> codes) {
  codes.insert(codes.end(), {401, 403, 429});
  std::sort(codes.begin(), codes.end());
  return codes;
}

void Responses(Writer& w, const std::vector<int>& codes) {
  w.Key("responses");
  w.StartObject();
  for (int code : codes) {
    const std::string key = std::to_string(code);
    String(w, key);
    w.StartObject();
    w.Key("description");
    w.String(code < 400 ? "success" : "error (see the error shape)");
    w.EndObject();
  }
  w.EndObject();
}

// The query parameters of the event feed named in `names` (without the
// array around them).
void FeedParameters(Writer& w, std::initializer_list<absl::string_view> names) {
  for (absl::string_view name : names) {
    w.StartObject();
    w.Key("name");
    w.String(name.data(), static_cast<rapidjson::SizeType>(name.size()));
    w.Key("in");
    w.String("query");
    w.Key("schema");
    constexpr absl::string_view kLimit =
        R"({"type":"integer","minimum":1,"maximum":1000,"default":100})";
    constexpr absl::string_view kWait =
        R"({"type":"integer","minimum":0,"maximum":30000,"default":0,)"
        R"("description":"ms an empty page waits for new events"})";
    constexpr absl::string_view kString = R"({"type":"string"})";
    const absl::string_view schema = name == "limit"  ? kLimit
                                     : name == "wait" ? kWait
                                                      : kString;
    w.RawValue(schema.data(), schema.size(), rapidjson::kObjectType);
    w.EndObject();
  }
}

// The JSON Schemas of the /webhooks responses (integration/webhook_store.h
// writes them), for components/schemas.
constexpr absl::string_view kWebhookTime =
    R"({"type":["string","null"],"format":"date-time"})";

std::string WebhookStatsSchema() {
  return absl::StrCat(
      R"({"type":"object","required":["pending","parked","delivered",)",
      R"("failed_attempts"],"properties":{"pending":{"type":"integer"},)",
      R"("parked":{"type":"integer"},"delivered":{"type":"integer"},)",
      R"("failed_attempts":{"type":"integer"},"last_success_at":)",
      kWebhookTime, R"(,"last_failure_at":)", kWebhookTime,
      R"(,"oldest_pending_at":)", kWebhookTime, "}}");
}

std::string WebhookEndpointSchema() {
  return absl::StrCat(
      R"({"type":"object","required":["id","url","types","categories",)",
      R"("description","state","cursor","created_at","updated_at"],)",
      R"("properties":{"id":{"type":"string","pattern":"^wh_[0-9a-f]{16}$"},)",
      R"("url":{"type":"string"},"types":{"type":"array","items":)",
      R"({"type":"string"}},"categories":{"type":"array","items":)",
      R"({"type":"string"}},"description":{"type":"string"},"state":)",
      R"({"type":"string","enum":["enabled","disabled"]},)",
      R"("disabled_reason":{"type":["string","null"],"enum":["manual",)",
      R"("gone","failing",null]},"disabled_at":)", kWebhookTime,
      R"(,"failing_since":)", kWebhookTime,
      R"(,"cursor":{"type":"string","description":"position token: the )",
      R"(events after it are not queued yet"},"created_at":{"type":)",
      R"("string","format":"date-time"},"updated_at":{"type":"string",)",
      R"("format":"date-time"},"previous_secret_expires_at":)", kWebhookTime,
      R"(,"stats":{"$ref":"#/components/schemas/WebhookStats"},)",
      R"("secret":{"type":"string","pattern":"^whsec_","description":)",
      R"("the signing secret: only in the answers of create and )",
      R"(rotate-secret"}}})");
}

std::string WebhookAttemptSchema() {
  return absl::StrCat(
      R"({"type":"object","properties":{"event_id":{"type":"string"},)",
      R"("attempt":{"type":"integer"},"at":{"type":"string","format":)",
      R"("date-time"},"duration_ms":{"type":"integer"},"status":{"type":)",
      R"(["integer","null"]},"outcome":{"type":"string","enum":)",
      R"(["success","http_error","timeout","connect_error","blocked",)",
      R"("tls_error","error"]},"error":{"type":["string","null"]}}})");
}

std::string ParkedDeliverySchema() {
  return absl::StrCat(
      R"({"type":"object","properties":{"event_id":{"type":"string"},)",
      R"("type":{"type":"string"},"stream_id":{"type":"string"},)",
      R"("stream_version":{"type":"integer"},"position":{"type":)",
      R"("string"},"attempts":{"type":"integer"},"last_status":{"type":)",
      R"(["integer","null"]},"last_error":{"type":["string","null"]},)",
      R"("parked_at":{"type":"string","format":"date-time"}}})");
}

void WriteRef(Writer& w, absl::string_view schema) {
  const std::string ref = absl::StrCat("#/components/schemas/", schema);
  w.StartObject();
  w.Key("$ref");
  w.String(ref.data(), static_cast<rapidjson::SizeType>(ref.size()));
  w.EndObject();
}

// {"type":"object","required":["items"],"properties":{"items":{"type":
// "array","items":<Ref(schema)>}}}
std::string ItemsOf(absl::string_view schema) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("type");
  w.String("object");
  w.Key("required");
  w.StartArray();
  w.String("items");
  w.EndArray();
  w.Key("properties");
  w.StartObject();
  w.Key("items");
  w.StartObject();
  w.Key("type");
  w.String("array");
  w.Key("items");
  WriteRef(w, schema);
  w.EndObject();
  w.EndObject();
  w.EndObject();
  return buffer.GetString();
}

std::string Ref(absl::string_view schema) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  WriteRef(w, schema);
  return buffer.GetString();
}

void JsonContent(Writer& w, const std::string& schema) {
  w.Key("content");
  w.StartObject();
  w.Key("application/json");
  w.StartObject();
  w.Key("schema");
  w.RawValue(schema.data(), schema.size(), rapidjson::kObjectType);
  w.EndObject();
  w.EndObject();
}

// A /webhooks operation (scope admin): its success answer `success` with
// `schema` (none for 204), the error codes `errors`, and a JSON body of
// components/schemas `body` when not empty.
struct WebhookOperation {
  const char* id;
  const char* description;
  int success;
  std::string schema;
  std::vector<int> errors;
  std::string body;
  bool limit = false;  // ?limit=
};

void WriteWebhookOperation(Writer& w, absl::string_view pattern,
                           const WebhookOperation& op) {
  w.StartObject();
  w.Key("operationId");
  w.String(op.id);
  w.Key("tags");
  w.StartArray();
  w.String("webhooks");
  w.EndArray();
  w.Key("description");
  w.String(op.description);
  if (op.limit) {
    w.Key("parameters");
    w.StartArray();
    for (const std::string& name : PathParameters(pattern)) {
      w.StartObject();
      w.Key("name");
      String(w, name);
      w.Key("in");
      w.String("path");
      w.Key("required");
      w.Bool(true);
      w.Key("schema");
      w.RawValue(R"({"type":"string"})", 17, rapidjson::kObjectType);
      w.EndObject();
    }
    FeedParameters(w, {"limit"});
    w.EndArray();
  } else {
    Parameters(w, pattern, false);
  }
  if (!op.body.empty()) {
    w.Key("requestBody");
    w.StartObject();
    w.Key("required");
    w.Bool(true);
    JsonContent(w, Ref(op.body));
    w.EndObject();
  }
  Security(w, auth::kAdminScope);
  w.Key("responses");
  w.StartObject();
  String(w, std::to_string(op.success));
  w.StartObject();
  w.Key("description");
  w.String("success");
  if (!op.schema.empty()) JsonContent(w, op.schema);
  w.EndObject();
  std::vector<int> errors = WithAuth(op.errors);
  if (!op.body.empty()) errors.push_back(415);
  std::sort(errors.begin(), errors.end());
  for (int code : errors) {
    String(w, std::to_string(code));
    w.StartObject();
    w.Key("description");
    w.String(code == 404 ? "webhook_not_found (see the error shape)"
             : code == 400
                 ? "invalid_json or invalid_request (see the error shape)"
                 : "error (see the error shape)");
    w.EndObject();
  }
  w.EndObject();
  w.EndObject();
}

}  // namespace

std::string GeneratedOpenApi(const App& app) {
  // pattern -> method -> writes the operation
  std::map<std::string, std::map<std::string, std::function<void(Writer&)>>>
      paths;
  for (const App::Parts::CommandRoute& c : app.parts().command_routes) {
    paths[c.pattern][absl::AsciiStrToLower(c.method)] = [&c](Writer& w) {
      w.StartObject();
      w.Key("operationId");
      String(w, c.name ? c.name() : "command");
      Parameters(w, c.pattern, false);
      if (!c.body_schema.empty()) {
        w.Key("requestBody");
        w.StartObject();
        w.Key("required");
        w.Bool(true);
        w.Key("content");
        w.StartObject();
        w.Key("application/json");
        w.StartObject();
        w.Key("schema");
        w.RawValue(c.body_schema.data(), c.body_schema.size(),
                   rapidjson::kObjectType);
        w.EndObject();
        w.EndObject();
        w.EndObject();
      }
      Security(w, auth::kCommandsScope);
      Responses(w, WithAuth({200, 400, 404, 409, 422, 503}));
      w.EndObject();
    };
  }
  for (const queries::QueryRoute& q : app.parts().queries) {
    paths[q.pattern]["get"] = [&q](Writer& w) {
      w.StartObject();
      Parameters(w, q.pattern, true);
      Security(w, q.access.kind == http::RouteAccess::Kind::kScope
                      ? absl::string_view(q.access.scope)
                      : auth::kQueriesScope);
      Responses(w, WithAuth({200, 400, 404, 503}));
      w.EndObject();
    };
  }
  const std::pair<const char*, absl::string_view> operations[] = {
      {"/healthz", ""},
      {"/readyz", ""},
      {"/openapi.json", ""},
      {"/metrics", auth::kMetricsScope},
      {"/projections", auth::kAdminScope}};
  for (const auto& [pattern, scope] : operations) {
    paths[pattern]["get"] = [scope = scope](Writer& w) {
      w.StartObject();
      Security(w, scope);
      Responses(
          w, scope.empty() ? std::vector<int>{200, 503} : WithAuth({200, 503}));
      w.EndObject();
    };
  }
  if (!app.publication().types().empty()) {
    paths["/events"]["get"] = [](Writer& w) {
      w.StartObject();
      w.Key("operationId");
      w.String("readEvents");
      w.Key("description");
      w.String(
          "The next page of published events (CloudEvents 1.0, structured "
          "JSON) in the global commit order: {items, next}. Resume with "
          "after=next; a filtered page still advances next past what it "
          "filtered out.");
      w.Key("parameters");
      w.StartArray();
      FeedParameters(w,
                     {"after", "limit", "wait", "type", "subject", "category"});
      w.EndArray();
      Security(w, auth::kEventsScope);
      Responses(w, WithAuth({200, 400}));
      w.EndObject();
    };
    paths["/events/stream"]["get"] = [](Writer& w) {
      w.StartObject();
      w.Key("operationId");
      w.String("streamEvents");
      w.Key("description");
      w.String(
          "Server-Sent Events (text/event-stream): id is the position token, "
          "event the CloudEvents type, data the CloudEvent. Resumes after "
          "Last-Event-ID, else after the query's after; heartbeat comments "
          "every 15 s; a client too far behind is closed with a comment and "
          "resumes with Last-Event-ID.");
      w.Key("parameters");
      w.StartArray();
      FeedParameters(w, {"after", "type", "subject", "category"});
      w.StartObject();
      w.Key("name");
      w.String("Last-Event-ID");
      w.Key("in");
      w.String("header");
      w.Key("schema");
      w.StartObject();
      w.Key("type");
      w.String("string");
      w.EndObject();
      w.EndObject();
      w.EndArray();
      Security(w, auth::kEventsScope);
      Responses(w, WithAuth({200, 400}));
      w.EndObject();
    };
    paths["/asyncapi.json"]["get"] = [](Writer& w) {
      w.StartObject();
      w.Key("operationId");
      w.String("asyncApi");
      w.Key("description");
      w.String(
          "The AsyncAPI 3.0.0 document of the published events: their "
          "CloudEvents and payload schemas, the channels /events and "
          "/events/stream.");
      Security(w, "");
      Responses(w, {200});
      w.EndObject();
    };
  }
  paths["/keys"]["get"] = [](Writer& w) {
    w.StartObject();
    w.Key("operationId");
    w.String("listKeys");
    Security(w, auth::kAdminScope);
    Responses(w, WithAuth({200}));
    w.EndObject();
  };
  paths["/keys"]["post"] = [](Writer& w) {
    w.StartObject();
    w.Key("operationId");
    w.String("createKey");
    Security(w, auth::kAdminScope);
    Responses(w, WithAuth({201, 400}));
    w.EndObject();
  };
  paths["/keys/{id}/revoke"]["post"] = [](Writer& w) {
    w.StartObject();
    w.Key("operationId");
    w.String("revokeKey");
    Parameters(w, "/keys/{id}/revoke", false);
    Security(w, auth::kAdminScope);
    Responses(w, WithAuth({200, 404}));
    w.EndObject();
  };
  paths["/projections/{name}/resume"]["post"] = [](Writer& w) {
    w.StartObject();
    Parameters(w, "/projections/{name}/resume", false);
    Security(w, auth::kAdminScope);
    Responses(w, WithAuth({200, 404, 409}));
    w.EndObject();
  };
  const bool publishes = !app.publication().types().empty();
  if (publishes) {
    const std::string endpoint = Ref("WebhookEndpoint");
    const std::pair<const char*,
                    std::vector<std::pair<const char*, WebhookOperation>>>
        webhooks[] = {
            {"/webhooks",
             {{"get",
               {"listWebhooks",
                "Every webhook endpoint, oldest first.",
                200,
                ItemsOf("WebhookEndpoint"),
                {},
                ""}},
              {"post",
               {"createWebhook",
                "A new endpoint, sent the published events committed from "
                "now on; the signing secret is in this answer only.",
                201,
                endpoint,
                {400},
                "CreateWebhook"}}}},
            {"/webhooks/{id}",
             {{"get",
               {"getWebhook",
                "An endpoint with its delivery statistics.",
                200,
                endpoint,
                {404},
                ""}},
              {"patch",
               {"updateWebhook",
                "Changes the fields given; [] clears a filter.",
                200,
                endpoint,
                {400, 404},
                "UpdateWebhook"}},
              {"delete",
               {"deleteWebhook",
                "Deletes the endpoint, its waiting deliveries and attempts.",
                204,
                "",
                {404},
                ""}}}},
            {"/webhooks/{id}/disable",
             {{"post",
               {"disableWebhook",
                "Stops deliveries; the events keep their place.",
                200,
                endpoint,
                {404},
                ""}}}},
            {"/webhooks/{id}/enable",
             {{"post",
               {"enableWebhook",
                "Delivers again from where it stopped.",
                200,
                endpoint,
                {404},
                ""}}}},
            {"/webhooks/{id}/rotate-secret",
             {{"post",
               {"rotateWebhookSecret",
                "A new signing secret (in this answer only); the previous "
                "one also signs until previous_secret_expires_at.",
                200,
                endpoint,
                {404},
                ""}}}},
            {"/webhooks/{id}/attempts",
             {{"get",
               {"listWebhookAttempts",
                "The newest attempts, newest first.",
                200,
                ItemsOf("WebhookAttempt"),
                {400, 404},
                "",
                true}}}},
            {"/webhooks/{id}/replay",
             {{"post",
               {"replayWebhook",
                "Delivers again the events after from_position, or those "
                "recorded from from_time (exactly one); delivered ones too, "
                "with their original webhook-id.",
                200,
                endpoint,
                {400, 404},
                "ReplayWebhook"}}}},
            {"/webhooks/{id}/parked",
             {{"get",
               {"listParkedWebhookDeliveries",
                "Deliveries that failed every attempt, in stream order.",
                200,
                ItemsOf("ParkedDelivery"),
                {400, 404},
                "",
                true}}}},
            {"/webhooks/{id}/parked/replay",
             {{"post",
               {"replayParkedWebhookDeliveries",
                "Queues the parked deliveries again, in order.",
                200,
                R"({"type":"object","required":["replayed"],"properties":)"
                R"({"replayed":{"type":"integer"}}})",
                {404},
                ""}}}},
            {"/webhooks/{id}/parked/skip",
             {{"post",
               {"skipParkedWebhookDeliveries",
                "Drops the parked deliveries; their streams go on.",
                200,
                R"({"type":"object","required":["skipped"],"properties":)"
                R"({"skipped":{"type":"integer"}}})",
                {404},
                ""}}}},
        };
    for (const auto& [pattern, methods] : webhooks) {
      for (const auto& [method, op] : methods) {
        paths[pattern][method] = [pattern = std::string(pattern),
                                  op = op](Writer& w) {
          WriteWebhookOperation(w, pattern, op);
        };
      }
    }
  }
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("openapi");
  w.String("3.1.0");
  w.Key("info");
  w.StartObject();
  w.Key("title");
  String(w, app.name());
  w.Key("version");
  w.String("1");
  w.EndObject();
  w.Key("components");
  w.StartObject();
  w.Key("securitySchemes");
  w.StartObject();
  w.Key("bearerAuth");
  w.StartObject();
  w.Key("type");
  w.String("http");
  w.Key("scheme");
  w.String("bearer");
  w.Key("bearerFormat");
  w.String("cqrs_<key id>_<secret>");
  w.Key("description");
  String(w, absl::StrCat("An API key made with `", app.name(),
                         " keys create`; x-required-scopes names the scope "
                         "each operation needs."));
  w.EndObject();
  w.EndObject();
  if (publishes) {
    w.Key("schemas");
    w.StartObject();
    const std::pair<const char*, std::string> schemas[] = {
        {"WebhookEndpoint", WebhookEndpointSchema()},
        {"WebhookStats", WebhookStatsSchema()},
        {"WebhookAttempt", WebhookAttemptSchema()},
        {"ParkedDelivery", ParkedDeliverySchema()},
        {"CreateWebhook", WebhookBodySchema("CreateWebhook")},
        {"UpdateWebhook", WebhookBodySchema("UpdateWebhook")},
        {"ReplayWebhook", WebhookBodySchema("ReplayWebhook")},
    };
    for (const auto& [name, schema] : schemas) {
      w.Key(name);
      w.RawValue(schema.data(), schema.size(), rapidjson::kObjectType);
    }
    w.EndObject();
  }
  w.EndObject();
  w.Key("paths");
  w.StartObject();
  for (const auto& [pattern, methods] : paths) {
    String(w, pattern);
    w.StartObject();
    for (const auto& [method, write] : methods) {
      String(w, method);
      write(w);
    }
    w.EndObject();
  }
  w.EndObject();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace cqrs::app_internal

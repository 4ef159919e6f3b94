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

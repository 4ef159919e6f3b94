// The AsyncAPI 3.0.0 document an app that publishes events serves at
// /asyncapi.json: one message per published type (its CloudEvent, with the
// JSON Schema of its data from the event's shape), the two channels that
// carry them (the feed's pages and the Server-Sent Events stream), a
// receive operation on each, and the bearer scheme with the scope `events`.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "app/internal/commands.h"
#include "framework/auth/scopes.h"
#include "integration/feed.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::app_internal {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

constexpr char kSchemeRef[] = "#/components/securitySchemes/bearerAuth";
// What a position token looks like (eventstore/position.h); clients treat
// it as opaque all the same.
constexpr char kPositionPattern[] = "^[0-9]+\\.[0-9]+$";

void String(Writer& w, absl::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

void Ref(Writer& w, absl::string_view target) {
  w.StartObject();
  w.Key("$ref");
  String(w, target);
  w.EndObject();
}

// {"type": <type>, "description": <description>} plus what `more` adds.
template <typename More>
void Property(Writer& w, const char* name, const char* type,
              absl::string_view description, More more) {
  w.Key(name);
  w.StartObject();
  w.Key("type");
  w.String(type);
  more();
  w.Key("description");
  String(w, description);
  w.EndObject();
}
void Property(Writer& w, const char* name, const char* type,
              absl::string_view description) {
  Property(w, name, type, description, [] {});
}

// The payload's JSON Schema as the event's shape derives it
// (json::SchemaOf), without "$schema": inside an AsyncAPI document a schema
// is an AsyncAPI Schema Object, whose dialect the document fixes. A type
// published without a schema (a mapped payload) is any JSON object.
void DataSchema(Writer& w, const std::string& schema) {
  rapidjson::Document doc;
  doc.Parse(schema.data(), schema.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    w.StartObject();
    w.Key("type");
    w.String("object");
    w.Key("description");
    w.String("The event's data (its schema is not declared).");
    w.EndObject();
    return;
  }
  doc.RemoveMember("$schema");
  doc.Accept(w);
}

// The CloudEvent of one published type (integration/cloud_events.h): the
// envelope's attributes with their bounds, `type` fixed, and `data`.
void Envelope(Writer& w, const integration::Publication& publication,
              const integration::PublishedType& type) {
  const std::string cloud_event_type = type.CloudEventType();
  w.StartObject();
  w.Key("type");
  w.String("object");
  w.Key("required");
  w.StartArray();
  for (const char* name :
       {"specversion", "id", "source", "type", "subject", "time",
        "datacontenttype", "position", "streamversion", "category", "data"}) {
    w.String(name);
  }
  w.EndArray();
  w.Key("properties");
  w.StartObject();
  Property(w, "specversion", "string", "The CloudEvents version.", [&] {
    w.Key("const");
    w.String("1.0");
  });
  Property(w, "id", "string",
           "The stored event's id, the same on every read and replay: "
           "de-duplicate on source and id.",
           [&] {
             w.Key("format");
             w.String("uuid");
           });
  Property(w, "source", "string", "The publishing app.", [&] {
    w.Key("const");
    String(w, publication.source());
    w.Key("format");
    w.String("uri-reference");
  });
  Property(w, "type", "string", "<public type>.v<version>.", [&] {
    w.Key("const");
    String(w, cloud_event_type);
  });
  Property(w, "subject", "string",
           "The aggregate's id: the event's stream without its "
           "\"<category>-\".",
           [&] {
             w.Key("minLength");
             w.Int(1);
           });
  Property(w, "time", "string", "When the event was recorded (UTC).", [&] {
    w.Key("format");
    w.String("date-time");
  });
  Property(w, "datacontenttype", "string", "data is JSON.", [&] {
    w.Key("const");
    w.String("application/json");
  });
  Property(w, "position", "string",
           "The event's place in the commit order: the token commands return "
           "and the feed resumes from (after=, Last-Event-ID). Opaque: "
           "compare nothing, hand it back.",
           [&] {
             w.Key("pattern");
             w.String(kPositionPattern);
           });
  Property(w, "streamversion", "integer",
           "The event's version in its stream: 1 for the first.", [&] {
             w.Key("minimum");
             w.Int(1);
           });
  Property(w, "category", "string",
           "The stream's category (the aggregate type), e.g. account.", [&] {
             w.Key("minLength");
             w.Int(1);
           });
  Property(w, "correlationid", "string",
           "The correlation id of the request that caused the event "
           "(X-Correlation-Id), when it has one.");
  Property(w, "causationid", "string",
           "The id of what caused the event (a command or an event), when it "
           "has one.");
  w.Key("data");
  DataSchema(w, type.data_schema);
  w.EndObject();
  w.EndObject();
}

// The query parameters of a feed request, as an HTTP operation binding.
void Query(Writer& w, bool stream) {
  w.Key("query");
  w.StartObject();
  w.Key("type");
  w.String("object");
  w.Key("properties");
  w.StartObject();
  Property(w, "after", "string",
           stream ? "Start after this position (a position token); "
                    "Last-Event-ID, sent on reconnection, takes precedence."
                  : "The cursor: next of the previous page, or a position "
                    "token a command returned; default the beginning.",
           [&] {
             w.Key("pattern");
             w.String(kPositionPattern);
           });
  if (!stream) {
    Property(w, "limit", "integer", "Events per page at most.", [&] {
      w.Key("minimum");
      w.Int(1);
      w.Key("maximum");
      w.Int(integration::kMaxFeedLimit);
      w.Key("default");
      w.Int(integration::kDefaultFeedLimit);
    });
  }
  Property(w, "type", "string",
           "Only these CloudEvents types: repeatable or comma-separated.");
  Property(w, "subject", "string", "Only events of this aggregate id.");
  Property(w, "category", "string", "Only events of this stream category.");
  if (!stream) {
    Property(w, "wait", "integer",
             "Long-poll: when nothing is there yet, wait up to this many "
             "milliseconds for an event before answering an empty page.",
             [&] {
               w.Key("minimum");
               w.Int(0);
               w.Key("maximum");
               w.Int(30000);
             });
  }
  w.EndObject();
  w.EndObject();
}

struct Channel {
  const char* key;
  const char* address;
  const char* title;
  const char* description;
  const char* operation;
  const char* operation_summary;
  bool stream;
};

constexpr Channel kChannels[] = {
    {"events", "/events", "The feed",
     "GET /events answers a page {\"items\": [CloudEvent...], \"next\": "
     "\"<position>\"}: the published events after the cursor, in the event "
     "store's commit order, each item one of the messages below. Resume "
     "with after=next; an event that commits late is not skipped and none "
     "comes twice. A filtered page moves next past what it filtered out and "
     "may be empty: ask again. A bad cursor, limit or type is 400 "
     "invalid_request.",
     "readEvents", "Read the published events page by page (GET /events).",
     false},
    {"eventStream", "/events/stream", "The live stream",
     "GET /events/stream (Accept: text/event-stream) sends each published "
     "event as one Server-Sent Event: `id:` the event's position token, "
     "`data:` the CloudEvent (one of the messages below) as JSON. A client "
     "that reconnects sends Last-Event-ID and resumes after that position; "
     "the filters are those of /events.",
     "streamEvents",
     "Follow the published events as Server-Sent Events "
     "(GET /events/stream).",
     true},
};

}  // namespace

std::string GeneratedAsyncApi(const App& app) {
  const integration::Publication& publication = app.publication();
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("asyncapi");
  w.String("3.0.0");
  w.Key("info");
  w.StartObject();
  w.Key("title");
  String(w, app.name());
  w.Key("version");
  w.String("1");
  w.Key("description");
  String(w, absl::StrCat(
                "The events ", app.name(),
                " publishes for other systems: CloudEvents 1.0 in structured "
                "JSON mode, of source ",
                publication.source(),
                ", read page by page from /events or followed live at "
                "/events/stream. Each needs a bearer token with the scope `",
                auth::kEventsScope, "`. Only the types below are published."));
  w.EndObject();
  w.Key("defaultContentType");
  w.String("application/cloudevents+json");
  w.Key("servers");
  w.StartObject();
  w.Key("api");
  w.StartObject();
  w.Key("host");
  w.String("{host}");
  w.Key("protocol");
  w.String("http");
  w.Key("description");
  String(w, absl::StrCat("Where `", app.name(),
                         " serve` listens (https when started with TLS)."));
  w.Key("variables");
  w.StartObject();
  w.Key("host");
  w.StartObject();
  w.Key("default");
  String(w, app.options().listen);
  w.Key("description");
  w.String("HOST:PORT of the server (serve --listen).");
  w.EndObject();
  w.EndObject();
  w.Key("security");
  w.StartArray();
  Ref(w, kSchemeRef);
  w.EndArray();
  w.EndObject();
  w.EndObject();

  // Message keys are the CloudEvents types: unique (Publication::Add) and
  // made of characters component keys allow.
  std::vector<std::string> keys;
  for (const integration::PublishedType& t : publication.types()) {
    keys.push_back(t.CloudEventType());
  }
  w.Key("channels");
  w.StartObject();
  for (const Channel& c : kChannels) {
    w.Key(c.key);
    w.StartObject();
    w.Key("address");
    w.String(c.address);
    w.Key("title");
    w.String(c.title);
    w.Key("description");
    w.String(c.description);
    w.Key("messages");
    w.StartObject();
    for (const std::string& key : keys) {
      String(w, key);
      Ref(w, absl::StrCat("#/components/messages/", key));
    }
    w.EndObject();
    w.EndObject();
  }
  w.EndObject();

  w.Key("operations");
  w.StartObject();
  for (const Channel& c : kChannels) {
    w.Key(c.operation);
    w.StartObject();
    w.Key("action");
    w.String("receive");
    w.Key("channel");
    Ref(w, absl::StrCat("#/channels/", c.key));
    w.Key("summary");
    w.String(c.operation_summary);
    w.Key("security");
    w.StartArray();
    Ref(w, kSchemeRef);
    w.EndArray();
    w.Key("x-required-scopes");
    w.StartArray();
    String(w, auth::kEventsScope);
    w.EndArray();
    w.Key("bindings");
    w.StartObject();
    w.Key("http");
    w.StartObject();
    w.Key("method");
    w.String("GET");
    Query(w, c.stream);
    w.Key("bindingVersion");
    w.String("0.3.0");
    w.EndObject();
    w.EndObject();
    w.Key("messages");
    w.StartArray();
    for (const std::string& key : keys) {
      Ref(w, absl::StrCat("#/channels/", c.key, "/messages/", key));
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndObject();

  w.Key("components");
  w.StartObject();
  w.Key("messages");
  w.StartObject();
  for (const integration::PublishedType& t : publication.types()) {
    const std::string key = t.CloudEventType();
    String(w, key);
    w.StartObject();
    w.Key("name");
    String(w, key);
    w.Key("title");
    String(w, t.public_type);
    w.Key("summary");
    String(w, absl::StrCat("A ", t.public_type, " event, version ", t.version,
                           ", as a CloudEvent of type ", key, "."));
    w.Key("contentType");
    w.String("application/cloudevents+json");
    w.Key("correlationId");
    w.StartObject();
    w.Key("description");
    w.String(
        "The request's correlation id, when the event has one (the "
        "extension attribute correlationid is optional).");
    w.Key("location");
    w.String("$message.payload#/correlationid");
    w.EndObject();
    w.Key("payload");
    Envelope(w, publication, t);
    w.EndObject();
  }
  w.EndObject();
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
                         " keys create --scopes ", auth::kEventsScope,
                         "`; x-required-scopes names the scope."));
  w.Key("x-required-scopes");
  w.StartArray();
  String(w, auth::kEventsScope);
  w.EndArray();
  w.EndObject();
  w.EndObject();
  w.EndObject();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace cqrs::app_internal

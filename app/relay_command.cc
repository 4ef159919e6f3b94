// `APP relay status [--json]`: the AMQP relay as its owner last recorded it
// (integration/amqp_relay.h), from any process.
#include <iostream>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "app/internal/commands.h"
#include "framework/json_writer.h"
#include "integration/amqp_relay.h"

namespace cqrs::app_internal {
namespace {

std::string Iso(const std::optional<absl::Time>& t) {
  if (!t.has_value()) return "";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", *t, absl::UTCTimeZone());
}

std::string StatusJson(const integration::AmqpRelayStatus& s) {
  JsonBuffer buffer;
  JsonWriter w(buffer);
  const auto text = [&](const char* key, const std::string& value) {
    w.Key(key);
    w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  };
  const auto time = [&](const char* key, const std::optional<absl::Time>& t) {
    w.Key(key);
    if (t.has_value()) {
      const std::string iso = Iso(t);
      w.String(iso.data(), static_cast<rapidjson::SizeType>(iso.size()));
    } else {
      w.Null();
    }
  };
  w.StartObject();
  text("name", s.name);
  text("state", s.state);
  text("checkpoint", s.checkpoint.ToToken());
  w.Key("published");
  w.Int64(s.published);
  w.Key("unroutable");
  w.Int64(s.unroutable);
  w.Key("lag_events");
  w.Int64(s.lag_events);
  w.Key("lag_seconds");
  w.Double(absl::ToDoubleSeconds(s.lag));
  w.Key("last_error");
  if (s.last_error.empty()) {
    w.Null();
  } else {
    w.String(s.last_error.data(),
             static_cast<rapidjson::SizeType>(s.last_error.size()));
  }
  time("last_error_at", s.last_error_at);
  time("updated_at", s.updated_at);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace

int Relay(App& app, const DatabaseFlags& db, const RelayFlags& flags) {
  auto database = OpenDatabase(app.name(), db, 2);
  if (!database.ok()) return Fail(app, database.status());
  if (absl::Status s = MigrateAll(*database->pool, db.schema); !s.ok()) {
    return Fail(app, s);
  }
  auto store = OpenStore(database->pool.get(), db.schema, nullptr);
  if (!store.ok()) return Fail(app, store.status());
  absl::StatusOr<integration::AmqpRelayStatus> status =
      integration::AmqpRelay::ReadStatus(*database->pool, **store, db.schema,
                                         flags.name);
  if (!status.ok()) return Fail(app, status.status());
  if (flags.json) {
    std::cout << StatusJson(*status) << std::endl;
    return kOk;
  }
  std::cout << absl::StrFormat(
      "relay %s: %s\n  checkpoint %s, %d published, %d unroutable\n  lag "
      "%d events, %.1f s\n  last error: %s%s\n",
      status->name, status->state, status->checkpoint.ToToken(),
      status->published, status->unroutable, status->lag_events,
      absl::ToDoubleSeconds(status->lag),
      status->last_error.empty() ? "none" : status->last_error,
      status->last_error_at.has_value()
          ? absl::StrCat(" (", Iso(status->last_error_at), ")")
          : std::string());
  return kOk;
}

}  // namespace cqrs::app_internal

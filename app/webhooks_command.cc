// `APP webhooks ...`: the app's webhook endpoints and their deliveries
// (integration/webhook_store.h), as the /webhooks routes offer them.
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "app/internal/commands.h"
#include "framework/json_writer.h"

namespace cqrs::app_internal {
namespace {

std::string Iso(const std::optional<absl::Time>& t) {
  if (!t.has_value()) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", *t, absl::UTCTimeZone());
}

std::string State(const integration::WebhookEndpoint& e) {
  return e.enabled ? "enabled"
                   : absl::StrCat("disabled (", e.disabled_reason, ")");
}

// Bad input is a usage error (2), an unknown id a failure (1) with the
// message alone; anything else as Fail().
int Report(const App& app, const WebhooksFlags& flags,
           const absl::Status& status) {
  if (absl::IsInvalidArgument(status)) {
    std::cerr << app.name() << ": " << status.message() << " (see `"
              << app.name() << " webhooks " << flags.command << " --help`)"
              << std::endl;
    return kUsage;
  }
  return Fail(app, status);
}

void PrintEndpoint(const integration::WebhookEndpoint& e,
                   const integration::WebhookStats* stats) {
  std::cout << "id:          " << e.id << "\n"
            << "url:         " << e.url << "\n"
            << "state:       " << State(e) << "\n"
            << "types:       "
            << (e.types.empty() ? "(all)" : absl::StrJoin(e.types, ",")) << "\n"
            << "categories:  "
            << (e.categories.empty() ? "(all)"
                                     : absl::StrJoin(e.categories, ","))
            << "\n"
            << "description: " << e.description << "\n"
            << "cursor:      " << e.cursor.ToToken() << "\n"
            << "created:     " << Iso(e.created_at) << "\n";
  if (stats != nullptr) {
    std::cout << "pending:     " << stats->pending << "\n"
              << "parked:      " << stats->parked << "\n"
              << "delivered:   " << stats->delivered << "\n"
              << "failed:      " << stats->failed_attempts << "\n"
              << "last ok:     " << Iso(stats->last_success_at) << "\n"
              << "last error:  " << Iso(stats->last_failure_at) << "\n";
  }
  std::cout << std::flush;
}

double LagSeconds(const integration::WebhookStats& s, absl::Time now) {
  if (!s.oldest_pending_at.has_value()) return 0;
  return absl::ToDoubleSeconds(now - *s.oldest_pending_at);
}

int Status(const App& app, integration::WebhookStore& hooks,
           const WebhooksFlags& flags) {
  auto all = hooks.List();
  if (!all.ok()) return Fail(app, all.status());
  std::vector<integration::WebhookStats> stats;
  for (const integration::WebhookEndpoint& e : *all) {
    auto s = hooks.Stats(e.id);
    if (!s.ok()) return Fail(app, s.status());
    stats.push_back(*s);
  }
  const absl::Time now = absl::Now();
  if (flags.json) {
    JsonBuffer buffer;
    JsonWriter w(buffer);
    const auto string = [&](const std::string& s) {
      w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    };
    const auto time = [&](const std::optional<absl::Time>& t) {
      if (t.has_value()) {
        string(
            absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", *t, absl::UTCTimeZone()));
      } else {
        w.Null();
      }
    };
    w.StartObject();
    w.Key("items");
    w.StartArray();
    for (size_t i = 0; i < all->size(); ++i) {
      const integration::WebhookEndpoint& e = (*all)[i];
      const integration::WebhookStats& s = stats[i];
      w.StartObject();
      w.Key("id");
      string(e.id);
      w.Key("url");
      string(e.url);
      w.Key("state");
      w.String(e.enabled ? "enabled" : "disabled");
      w.Key("disabled_reason");
      if (e.enabled) {
        w.Null();
      } else {
        string(e.disabled_reason);
      }
      w.Key("pending");
      w.Int64(s.pending);
      w.Key("parked");
      w.Int64(s.parked);
      w.Key("delivered");
      w.Int64(s.delivered);
      w.Key("failed_attempts");
      w.Int64(s.failed_attempts);
      w.Key("lag_seconds");
      w.Double(LagSeconds(s, now));
      w.Key("last_success_at");
      time(s.last_success_at);
      w.Key("last_failure_at");
      time(s.last_failure_at);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    std::cout << std::string(buffer.GetString(), buffer.GetSize()) << std::endl;
    return kOk;
  }
  std::cout << absl::StrFormat(
      "%-20s %-40s %-18s %8s %7s %10s %7s %8s %-20s %s\n", "ID", "URL", "STATE",
      "PENDING", "PARKED", "DELIVERED", "FAILED", "LAG_S", "LAST_SUCCESS",
      "LAST_FAILURE");
  for (size_t i = 0; i < all->size(); ++i) {
    const integration::WebhookEndpoint& e = (*all)[i];
    const integration::WebhookStats& s = stats[i];
    std::cout << absl::StrFormat(
        "%-20s %-40s %-18s %8d %7d %10d %7d %8.1f %-20s %s\n", e.id, e.url,
        State(e), s.pending, s.parked, s.delivered, s.failed_attempts,
        LagSeconds(s, now), Iso(s.last_success_at), Iso(s.last_failure_at));
  }
  return kOk;
}

}  // namespace

int Webhooks(App& app, const DatabaseFlags& db, const WebhooksFlags& flags) {
  if (flags.command == "update" &&
      ((flags.clear_types && !flags.types.empty()) ||
       (flags.clear_categories && !flags.categories.empty()))) {
    std::cerr << app.name()
              << ": --clear-types and --clear-categories take no --type or "
                 "--category beside them (see `"
              << app.name() << " webhooks update --help`)" << std::endl;
    return kUsage;
  }
  if (flags.command == "replay" &&
      flags.from_position.empty() == flags.from_time.empty()) {
    std::cerr << app.name()
              << ": give exactly one of --from-position and --from-time (see `"
              << app.name() << " webhooks replay --help`)" << std::endl;
    return kUsage;
  }
  auto database = OpenDatabase(app.name(), db, 2);
  if (!database.ok()) return Fail(app, database.status());
  PgPool* pool = database->pool.get();
  if (absl::Status s = MigrateAll(*pool, db.schema); !s.ok()) {
    return Fail(app, s);
  }
  auto store = OpenStore(pool, db.schema, nullptr);
  if (!store.ok()) return Fail(app, store.status());
  auto opened = OpenWebhookStore(pool, db.schema, app, store->get(),
                                 flags.allow_networks);
  if (!opened.ok()) return Fail(app, opened.status());
  integration::WebhookStore& hooks = **opened;
  const std::string& c = flags.command;

  if (c == "create") {
    integration::WebhookEndpointInput input;
    input.url = flags.url.value_or("");
    input.types = flags.types;
    input.categories = flags.categories;
    input.description = flags.description.value_or("");
    auto made = hooks.Add(std::move(input));
    if (!made.ok()) return Report(app, flags, made.status());
    std::cout << "webhook " << made->endpoint.id << " -> " << made->endpoint.url
              << "\nthe signing secret is shown once; keep it secret:\n"
              << made->secret << std::endl;
    return kOk;
  }
  if (c == "list") {
    auto all = hooks.List();
    if (!all.ok()) return Fail(app, all.status());
    if (flags.json) {
      std::cout << integration::WebhookEndpointPageJson(*all) << std::endl;
      return kOk;
    }
    std::cout << absl::StrFormat("%-20s %-18s %-40s %s\n", "ID", "STATE", "URL",
                                 "DESCRIPTION");
    for (const integration::WebhookEndpoint& e : *all) {
      std::cout << absl::StrFormat("%-20s %-18s %-40s %s\n", e.id, State(e),
                                   e.url, e.description);
    }
    return kOk;
  }
  if (c == "status") return Status(app, hooks, flags);

  // The commands on one endpoint.
  if (c == "show") {
    auto e = hooks.Get(flags.id);
    if (!e.ok()) return Report(app, flags, e.status());
    auto stats = hooks.Stats(flags.id);
    if (!stats.ok()) return Report(app, flags, stats.status());
    if (flags.json) {
      std::cout << integration::WebhookEndpointJson(*e, &*stats) << std::endl;
    } else {
      PrintEndpoint(*e, &*stats);
    }
    return kOk;
  }
  if (c == "attempts") {
    auto attempts = hooks.Attempts(flags.id, flags.limit);
    if (!attempts.ok()) return Report(app, flags, attempts.status());
    if (flags.json) {
      std::cout << integration::WebhookAttemptsJson(*attempts) << std::endl;
      return kOk;
    }
    std::cout << absl::StrFormat("%-24s %-36s %7s %6s %8s %-14s %s\n", "AT",
                                 "EVENT", "ATTEMPT", "STATUS", "MS", "OUTCOME",
                                 "ERROR");
    for (const integration::WebhookAttempt& a : *attempts) {
      std::cout << absl::StrFormat(
          "%-24s %-36s %7d %6s %8d %-14s %s\n", Iso(a.at), a.event_id,
          a.attempt, a.status == 0 ? "-" : std::to_string(a.status),
          absl::ToInt64Milliseconds(a.duration), a.outcome, a.error);
    }
    return kOk;
  }
  if (c == "parked") {
    auto parked = hooks.Parked(flags.id, flags.limit);
    if (!parked.ok()) return Report(app, flags, parked.status());
    if (flags.json) {
      std::cout << integration::ParkedDeliveriesJson(*parked) << std::endl;
      return kOk;
    }
    std::cout << absl::StrFormat("%-36s %-30s %-24s %8s %-20s %s\n", "EVENT",
                                 "TYPE", "STREAM", "VERSION", "PARKED",
                                 "LAST ERROR");
    for (const integration::ParkedDelivery& p : *parked) {
      std::cout << absl::StrFormat(
          "%-36s %-30s %-24s %8d %-20s %s\n", p.event_id, p.type, p.stream_id,
          p.stream_version, Iso(p.parked_at), p.last_error);
    }
    return kOk;
  }
  if (c == "delete") {
    absl::Status s = hooks.Delete(flags.id);
    if (!s.ok()) return Report(app, flags, s);
    std::cout << "webhook " << flags.id << " deleted" << std::endl;
    return kOk;
  }
  if (c == "replay-parked" || c == "skip-parked") {
    auto n = c == "replay-parked" ? hooks.ReplayParked(flags.id)
                                  : hooks.SkipParked(flags.id);
    if (!n.ok()) return Report(app, flags, n.status());
    std::cout << *n << " parked deliveries of " << flags.id
              << (c == "replay-parked" ? " queued again" : " skipped")
              << std::endl;
    return kOk;
  }
  if (c == "rotate-secret") {
    auto made = hooks.RotateSecret(flags.id);
    if (!made.ok()) return Report(app, flags, made.status());
    std::cout << "webhook " << flags.id
              << ": new secret; the previous one also signs until "
              << Iso(made->endpoint.previous_secret_until)
              << "\nthe signing secret is shown once; keep it secret:\n"
              << made->secret << std::endl;
    return kOk;
  }
  absl::StatusOr<integration::WebhookEndpoint> changed;
  if (c == "update") {
    integration::WebhookEndpointPatch patch;
    patch.url = flags.url;
    patch.description = flags.description;
    if (flags.clear_types) {
      patch.types = std::vector<std::string>{};
    } else if (!flags.types.empty()) {
      patch.types = flags.types;
    }
    if (flags.clear_categories) {
      patch.categories = std::vector<std::string>{};
    } else if (!flags.categories.empty()) {
      patch.categories = flags.categories;
    }
    changed = hooks.Update(flags.id, std::move(patch));
  } else if (c == "disable") {
    changed = hooks.Disable(flags.id);
  } else if (c == "enable") {
    changed = hooks.Enable(flags.id);
  } else {  // replay
    changed =
        ReplayEndpoint(hooks, flags.id, flags.from_position, flags.from_time);
  }
  if (!changed.ok()) return Report(app, flags, changed.status());
  PrintEndpoint(*changed, nullptr);
  return kOk;
}

}  // namespace cqrs::app_internal

#include "integration/webhook_deliverer.h"

#include <pqxx/pqxx>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "framework/http/address_policy.h"
#include "framework/http/client.h"
#include "framework/json_writer.h"
#include "framework/log.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "integration/feed_hub.h"
#include "integration/webhook_signature.h"
#include "integration/webhook_store.h"

namespace cqrs::integration {
namespace {

using eventstore::Position;

// pg_try_advisory_lock(class, hashtext(schema)): who delivers.
constexpr int kOwnershipLockClass = 0x77686f6b;  // "whok"
// Events read from the log per cursor and round.
constexpr int kPage = 500;
// Outcomes written per transaction at most.
constexpr size_t kMaxOutcomesPerWrite = 2000;
// The attempts kept per endpoint (older ones are deleted).
constexpr int kAttemptsKept = 1000;
// How long Stop() waits for attempts in flight.
constexpr absl::Duration kStopGrace = absl::Seconds(2);

int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }

std::string OutcomeOf(const http::ClientResponse& r) {
  using Failure = http::ClientResponse::Failure;
  switch (r.failure) {
    case Failure::kNone:
      return r.status >= 200 && r.status < 300 ? "success" : "http_error";
    case Failure::kTimeout:
      return "timeout";
    case Failure::kConnect:
      return "connect_error";
    case Failure::kBlockedAddress:
      return "blocked";
    case Failure::kTls:
      return "tls_error";
    case Failure::kOther:
      break;
  }
  return "error";
}

std::string ErrorOf(const http::ClientResponse& r) {
  if (r.failure != http::ClientResponse::Failure::kNone) return r.error;
  if (r.status >= 200 && r.status < 300) return "";
  std::string error = absl::StrCat("HTTP ", r.status);
  if (!r.body.empty()) {
    absl::StrAppend(&error, ": ", r.body.substr(0, 200));
  }
  return error;
}

// A delivery waiting in memory (a row of webhook_deliveries).
struct Delivery {
  int64_t seq = 0;
  std::string event_id;
  std::shared_ptr<const std::string> body;
  absl::Time recorded_at;
  int attempts = 0;
  absl::Time due;
  bool parked = false;
};

// The deliveries of one stream for one endpoint, by stream version: only
// the first is ever sent.
struct Stream {
  std::map<int64_t, Delivery> waiting;
  bool busy = false;  // busy_version is in flight
  int64_t busy_version = 0;
  bool ready = false;  // listed in Endpoint::ready at ready_at
  absl::Time ready_at;
};

struct Endpoint {
  WebhookEndpoint row;
  std::unordered_map<std::string, Stream> streams;
  // Streams whose first delivery can go, by when.
  std::set<std::pair<absl::Time, std::string>> ready;
  int64_t queued = 0;  // deliveries in memory, parked ones included
  int64_t parked = 0;
  int64_t in_flight = 0;
  // The rows must be read again (a replay or skip of parked deliveries, a
  // failed queueing).
  bool reload = true;
  absl::Time reload_after = absl::InfinitePast();
};

struct Completion {
  int64_t generation = 0;
  std::string endpoint_id;
  std::string stream_id;
  int64_t stream_version = 0;
  int64_t seq = 0;
  absl::Time started;
  http::ClientResponse response;
};

// What a batch of outcomes writes.
struct Outcomes {
  struct Attempt {
    std::string endpoint_id;
    int64_t seq = 0;
    std::string event_id;
    int attempt = 0;
    absl::Time at;
    absl::Duration duration;
    int status = 0;
    std::string outcome;
    std::string error;
    bool delivered = false;
    absl::Time next;  // when not delivered
    bool parked = false;
  };
  struct Totals {
    int64_t delivered = 0;
    int64_t failed = 0;
    std::optional<absl::Time> last_success;
    std::optional<absl::Time> last_failure;
    std::optional<absl::Time> failing_since;
  };
  std::vector<Attempt> attempts;
  std::map<std::string, Totals> totals;
  bool empty() const { return attempts.empty(); }
};

void WriteOptionalMicros(JsonWriter& w, const char* key,
                         const std::optional<absl::Time>& t) {
  w.Key(key);
  if (t.has_value()) {
    w.Int64(Micros(*t));
  } else {
    w.Null();
  }
}

}  // namespace

class WebhookDeliverer::Impl {
 public:
  Impl(PgPool* pool, eventstore::PostgresEventStore* store,
       const Publication* publication, WebhookDelivererOptions options,
       std::unique_ptr<http::HttpClient> client)
      : pool_(pool),
        store_(store),
        publication_(publication),
        options_(std::move(options)),
        wait_for_change_(ChangeWaitOn(pool->conninfo(), options_.schema)),
        client_(std::move(client)) {}

  absl::Status CreateMetrics() {
    MetricsRegistry* m = options_.metrics;
    if (m == nullptr) return absl::OkStatus();
    ASSIGN_OR_RETURN(
        attempts_metric_,
        m->AddCounter("cqrs_webhook_attempts_total",
                      "Webhook delivery attempts, by endpoint and outcome "
                      "(success, http_error, timeout, connect_error, "
                      "blocked, tls_error, error).",
                      {"endpoint", "outcome"}));
    ASSIGN_OR_RETURN(
        latency_metric_,
        m->AddHistogram("cqrs_webhook_delivery_latency_seconds",
                        "From an event's commit to its successful delivery.",
                        {},
                        {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                         10, 30, 60, 300, 1800, 3600, 36000}));
    ASSIGN_OR_RETURN(
        lag_events_metric_,
        m->AddGauge("cqrs_webhook_lag_events",
                    "Events waiting for an endpoint (parked ones included).",
                    {"endpoint"}));
    ASSIGN_OR_RETURN(
        lag_seconds_metric_,
        m->AddGauge("cqrs_webhook_lag_seconds",
                    "Age of the oldest event waiting for an endpoint.",
                    {"endpoint"}));
    ASSIGN_OR_RETURN(parked_metric_,
                     m->AddGauge("cqrs_webhook_parked",
                                 "Parked (dead-letter) deliveries of an "
                                 "endpoint.",
                                 {"endpoint"}));
    ASSIGN_OR_RETURN(
        enabled_metric_,
        m->AddGauge("cqrs_webhook_endpoint_enabled",
                    "1 while an endpoint is enabled, 0 while disabled.",
                    {"endpoint"}));
    ASSIGN_OR_RETURN(
        disabled_metric_,
        m->AddCounter("cqrs_webhook_endpoints_disabled_total",
                      "Endpoints this process disabled, by reason (gone: "
                      "410; failing: failed for --webhook-disable-after).",
                      {"reason"}));
    return absl::OkStatus();
  }

  void Start() {
    absl::MutexLock lock(&mu_);
    if (started_) return;
    started_ = true;
    notifier_ = std::thread([this] { NotifyLoop(); });
    control_ = std::thread([this] { ControlLoop(); });
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      if (!started_ || stopping_) return;
      stopping_ = true;
    }
    notifier_.join();
    control_.join();
  }

  bool owner() const {
    absl::MutexLock lock(&status_mu_);
    return owner_;
  }

  std::vector<WebhookEndpointStatus> Statuses() const {
    absl::MutexLock lock(&status_mu_);
    return statuses_;
  }

  absl::Duration client_cpu_time() const { return client_->CpuTime(); }

 private:
  // --- Threads ---------------------------------------------------------

  void NotifyLoop() {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
      }
      wait_for_change_(std::min(options_.poll_interval, absl::Seconds(1)));
      absl::MutexLock lock(&mu_);
      changed_ = true;
    }
  }

  void ControlLoop() {
    while (!Stopping()) {
      if (!Owned()) {
        Sleep(options_.takeover_interval);
        continue;
      }
      RunOnce();
      WaitForWork();
    }
    Drain();
  }

  bool Stopping() {
    absl::MutexLock lock(&mu_);
    return stopping_;
  }

  void Sleep(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
  }

  // One round as the owner: outcomes, endpoint changes, queueing, sends,
  // writes.
  void RunOnce() {
    const absl::Time now = absl::Now();
    HandleCompletions(TakeCompletions());
    if (now >= next_reload_) {
      next_reload_ = now + std::min(options_.poll_interval, absl::Seconds(1));
      ReloadEndpoints();
    }
    bool changed = false;
    {
      absl::MutexLock lock(&mu_);
      changed = changed_ || more_;
      changed_ = false;
    }
    if (changed) Queue();
    SendDue(absl::Now());
    WriteOutcomes();
    if (now >= next_trim_) {
      next_trim_ = now + absl::Minutes(1);
      TrimAttempts();
    }
    if (now >= next_status_) {
      next_status_ = now + absl::Milliseconds(250);
      PublishStatus(now);
    }
  }

  // Until a completion, a change, stop, or the next due delivery.
  void WaitForWork() {
    absl::Time until = next_reload_;
    for (const auto& [id, e] : endpoints_) {
      if (!e->row.enabled || e->in_flight >= options_.concurrency ||
          e->ready.empty()) {
        continue;
      }
      until = std::min(until, e->ready.begin()->first);
    }
    if (!pending_.empty()) {
      until = std::min(until, absl::Now() + absl::Milliseconds(50));
    }
    absl::MutexLock lock(&mu_);
    auto woken = [this] {
      return stopping_ || changed_ || more_ || !completions_.empty();
    };
    mu_.AwaitWithDeadline(absl::Condition(&woken), until);
  }

  std::vector<Completion> TakeCompletions() {
    absl::MutexLock lock(&mu_);
    std::vector<Completion> out;
    out.swap(completions_);
    return out;
  }

  // Stops: waits a little for attempts in flight, writes what is known,
  // gives up ownership.
  void Drain() {
    const absl::Time deadline = absl::Now() + kStopGrace;
    while (InFlight() > 0 && absl::Now() < deadline) {
      {
        absl::MutexLock lock(&mu_);
        auto any = [this] { return !completions_.empty(); };
        mu_.AwaitWithDeadline(absl::Condition(&any), deadline);
      }
      HandleCompletions(TakeCompletions());
    }
    WriteOutcomes();
    Disown();
  }

  int64_t InFlight() const {
    int64_t n = 0;
    for (const auto& [id, e] : endpoints_) n += e->in_flight;
    return n;
  }

  // --- Ownership -------------------------------------------------------

  bool Owned() {
    const absl::Time now = absl::Now();
    if (ownership_ != nullptr && now < next_ownership_check_) return true;
    next_ownership_check_ = now + options_.takeover_interval;
    try {
      if (ownership_ != nullptr) {
        pqxx::nontransaction tx(*ownership_);
        tx.exec("SELECT 1");
        return true;
      }
      auto conn = std::make_unique<pqxx::connection>(pool_->conninfo());
      pqxx::nontransaction tx(*conn);
      tx.exec_params("SELECT set_config('application_name', $1, false)",
                     absl::StrCat("cqrs webhooks ", options_.schema));
      const bool got =
          tx.exec_params1("SELECT pg_try_advisory_lock($1, hashtext($2))",
                          kOwnershipLockClass, options_.schema)[0]
              .as<bool>();
      if (!got) return false;
      ownership_ = std::move(conn);
      ++generation_;
      endpoints_.clear();
      pending_ = Outcomes();
      next_reload_ = absl::InfinitePast();
      {
        absl::MutexLock lock(&mu_);
        changed_ = true;
      }
      {
        absl::MutexLock lock(&status_mu_);
        owner_ = true;
      }
      Log(LogLevel::kInfo, "webhook deliveries owned",
          {{"schema", options_.schema}});
      return true;
    } catch (const std::exception& e) {
      if (ownership_ != nullptr) {
        Log(LogLevel::kWarn, "webhook ownership session lost",
            {{"schema", options_.schema}, {"error", e.what()}});
      }
      Disown();
      return false;
    }
  }

  // Forgets everything; attempts in flight are ignored when they end.
  void Disown() {
    ownership_.reset();
    ++generation_;
    for (auto& [id, e] : endpoints_) ClearMetrics(id);
    endpoints_.clear();
    pending_ = Outcomes();
    absl::MutexLock lock(&status_mu_);
    owner_ = false;
    statuses_.clear();
  }

  // --- Endpoints -------------------------------------------------------

  void ReloadEndpoints() {
    std::vector<WebhookEndpoint> rows;
    absl::Status read = pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::nontransaction tx(conn);
          for (const pqxx::row& r : tx.exec(absl::StrCat(
                   "SELECT id, url, array_to_string(types, ','), "
                   "array_to_string(categories, ','), enabled, "
                   "coalesce(disabled_reason, ''), secret, "
                   "coalesce(previous_secret, ''), "
                   "(extract(epoch FROM previous_secret_until) * 1000000)"
                   "::bigint, cursor, revision, "
                   "(extract(epoch FROM failing_since) * 1000000)::bigint "
                   "FROM ",
                   options_.schema, ".webhook_endpoints"))) {
            WebhookEndpoint e;
            e.id = r[0].as<std::string>();
            e.url = r[1].as<std::string>();
            e.types =
                absl::StrSplit(r[2].as<std::string>(), ',', absl::SkipEmpty());
            e.categories =
                absl::StrSplit(r[3].as<std::string>(), ',', absl::SkipEmpty());
            e.enabled = r[4].as<bool>();
            e.disabled_reason = r[5].as<std::string>();
            e.secret = r[6].as<std::string>();
            e.previous_secret = r[7].as<std::string>();
            if (!r[8].is_null()) {
              e.previous_secret_until =
                  absl::FromUnixMicros(r[8].as<int64_t>());
            }
            absl::StatusOr<Position> cursor =
                Position::FromToken(r[9].as<std::string>());
            e.cursor = cursor.ok() ? *cursor : Position::Start();
            e.revision = r[10].as<int64_t>();
            if (!r[11].is_null()) {
              e.failing_since = absl::FromUnixMicros(r[11].as<int64_t>());
            }
            rows.push_back(std::move(e));
          }
          return absl::OkStatus();
        });
    if (!read.ok()) {
      Log(LogLevel::kWarn, "webhook endpoints could not be read",
          {{"error", read.ToString()}});
      return;
    }
    std::set<std::string> seen;
    for (WebhookEndpoint& row : rows) {
      seen.insert(row.id);
      auto it = endpoints_.find(row.id);
      if (it == endpoints_.end()) {
        auto e = std::make_unique<Endpoint>();
        e->row = std::move(row);
        endpoints_.emplace(e->row.id, std::move(e));
        continue;
      }
      Endpoint& e = *it->second;
      if (e.row.revision != row.revision) {
        // A replay, a skip, a new cursor or filters, enabling: read the
        // rows again and take the stored cursor.
        e.row = std::move(row);
        e.reload = true;
      }
    }
    for (auto it = endpoints_.begin(); it != endpoints_.end();) {
      if (seen.count(it->first) == 0) {
        ClearMetrics(it->first);
        it = endpoints_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [id, e] : endpoints_) {
      if (e->reload && absl::Now() >= e->reload_after) LoadDeliveries(*e);
    }
  }

  // Reads the endpoint's waiting deliveries, keeping those in flight.
  void LoadDeliveries(Endpoint& e) {
    // What memory knows and the table does not yet must be written first,
    // or a delivered event would be read back as waiting.
    if (!WriteOutcomes()) return;
    std::vector<std::pair<std::string, Delivery>> rows;
    std::vector<int64_t> versions;
    absl::Status read = pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          rows.clear();
          versions.clear();
          pqxx::nontransaction tx(conn);
          for (const pqxx::row& r : tx.exec_params(
                   absl::StrCat(
                       "SELECT seq, event_id::text, stream_id, "
                       "stream_version, body, "
                       "(extract(epoch FROM recorded_at) * 1000000)::bigint, "
                       "attempts, "
                       "(extract(epoch FROM next_attempt_at) * 1000000)"
                       "::bigint, state = 'parked' FROM ",
                       options_.schema,
                       ".webhook_deliveries WHERE endpoint_id = $1"),
                   e.row.id)) {
            Delivery d;
            d.seq = r[0].as<int64_t>();
            d.event_id = r[1].as<std::string>();
            d.body =
                std::make_shared<const std::string>(r[4].as<std::string>());
            d.recorded_at = absl::FromUnixMicros(r[5].as<int64_t>());
            d.attempts = r[6].as<int>();
            d.due = absl::FromUnixMicros(r[7].as<int64_t>());
            d.parked = r[8].as<bool>();
            versions.push_back(r[3].as<int64_t>());
            rows.emplace_back(r[2].as<std::string>(), std::move(d));
          }
          return absl::OkStatus();
        });
    if (!read.ok()) {
      Log(LogLevel::kWarn, "webhook deliveries could not be read",
          {{"endpoint", e.row.id}, {"error", read.ToString()}});
      e.reload_after = absl::Now() + absl::Seconds(1);
      return;
    }
    // Keep the deliveries in flight as they are; take everything else from
    // the table.
    std::unordered_map<std::string, Stream> streams;
    for (auto& [stream_id, s] : e.streams) {
      if (!s.busy) continue;
      Stream kept;
      kept.busy = true;
      kept.busy_version = s.busy_version;
      kept.waiting.insert(*s.waiting.find(s.busy_version));
      streams.emplace(stream_id, std::move(kept));
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      Stream& s = streams[rows[i].first];
      auto in_flight = s.waiting.find(versions[i]);
      if (in_flight != s.waiting.end()) continue;
      s.waiting.emplace(versions[i], std::move(rows[i].second));
    }
    e.streams = std::move(streams);
    e.ready.clear();
    e.queued = 0;
    e.parked = 0;
    for (auto& [stream_id, s] : e.streams) {
      s.ready = false;
      e.queued += static_cast<int64_t>(s.waiting.size());
      for (const auto& [v, d] : s.waiting) e.parked += d.parked ? 1 : 0;
      Refresh(e, stream_id, s);
    }
    e.reload = false;
  }

  // Lists the stream in `ready` when its first delivery can go.
  void Refresh(Endpoint& e, const std::string& stream_id, Stream& s) {
    if (s.ready) {
      e.ready.erase({s.ready_at, stream_id});
      s.ready = false;
    }
    if (s.busy || s.waiting.empty()) return;
    const Delivery& first = s.waiting.begin()->second;
    if (first.parked) return;
    s.ready = true;
    s.ready_at = first.due;
    e.ready.insert({s.ready_at, stream_id});
  }

  // --- Queueing --------------------------------------------------------

  bool TypeMatches(const WebhookEndpoint& e, const PublishedType& t) const {
    if (e.types.empty()) return true;
    const std::string ce_type = t.CloudEventType();
    for (const std::string& f : e.types) {
      if (f == ce_type || f == t.public_type) return true;
    }
    return false;
  }

  bool Matches(const WebhookEndpoint& e, const eventstore::RecordedEvent& ev,
               const PublishedType& t) const {
    if (!TypeMatches(e, t)) return false;
    if (e.categories.empty()) return true;
    const absl::string_view category = eventstore::CategoryOf(ev.stream_id);
    for (const std::string& c : e.categories) {
      if (c == category) return true;
    }
    return false;
  }

  // Reads the events after each cursor (endpoints at the same cursor
  // share one read) and queues those that match, moving the cursors, in
  // one transaction per cursor.
  void Queue() {
    std::map<Position, std::vector<Endpoint*>> groups;
    for (auto& [id, e] : endpoints_) {
      if (!e->row.enabled || e->reload || e->queued >= options_.max_queued) {
        continue;
      }
      groups[e->row.cursor].push_back(e.get());
    }
    bool more = false;
    for (auto& [cursor, group] : groups) {
      if (QueueGroup(cursor, group)) more = true;
    }
    absl::MutexLock lock(&mu_);
    more_ = more;
  }

  // True when a full page was read (read again at once).
  bool QueueGroup(const Position& cursor, const std::vector<Endpoint*>& group) {
    absl::StatusOr<eventstore::ReadAllResult> page =
        store_->ReadAll(cursor, kPage);
    if (!page.ok()) {
      Log(LogLevel::kWarn, "webhook queueing could not read events",
          {{"error", page.status().ToString()}});
      return false;
    }
    if (page->events.empty()) return false;
    struct Row {
      Endpoint* endpoint;
      const eventstore::RecordedEvent* event;
      const PublishedType* type;
      std::shared_ptr<const std::string> body;
    };
    std::vector<Row> rows;
    for (const eventstore::RecordedEvent& ev : page->events) {
      const PublishedType* type = publication_->Find(ev.event_type);
      if (type == nullptr) continue;
      std::shared_ptr<const std::string> body;
      for (Endpoint* e : group) {
        if (!Matches(e->row, ev, *type)) continue;
        if (body == nullptr) {
          absl::StatusOr<std::optional<std::string>> encoded =
              publication_->Encode(ev);
          if (!encoded.ok() || !encoded->has_value()) {
            // A stored event its mapping cannot publish (a bug in the
            // app's to_public): queueing stops here, as the feed's reads
            // fail there, until a fixed build runs. Skipping it would
            // lose it.
            Log(LogLevel::kError, "webhook event could not be encoded",
                {{"event_id", ev.event_id},
                 {"error", encoded.ok() ? "not published"
                                        : encoded.status().ToString()}});
            return false;
          }
          body = std::make_shared<const std::string>(**std::move(encoded));
        }
        rows.push_back(Row{e, &ev, type, body});
      }
    }
    JsonBuffer insert;
    {
      JsonWriter w(insert);
      w.StartArray();
      for (const Row& r : rows) {
        w.StartObject();
        w.Key("endpoint_id");
        w.String(r.endpoint->row.id.data(), r.endpoint->row.id.size());
        w.Key("event_id");
        w.String(r.event->event_id.data(), r.event->event_id.size());
        const std::string position = r.event->position.ToToken();
        w.Key("position");
        w.String(position.data(), position.size());
        w.Key("stream_id");
        w.String(r.event->stream_id.data(), r.event->stream_id.size());
        w.Key("stream_version");
        w.Int64(r.event->stream_version);
        const std::string type = r.type->CloudEventType();
        w.Key("event_type");
        w.String(type.data(), type.size());
        w.Key("recorded_us");
        w.Int64(Micros(r.event->recorded_at));
        w.Key("body");
        w.String(r.body->data(), r.body->size());
        w.EndObject();
      }
      w.EndArray();
    }
    const std::string next = page->next.ToToken();
    JsonBuffer cursors;
    {
      JsonWriter w(cursors);
      w.StartArray();
      for (const Endpoint* e : group) {
        w.StartObject();
        w.Key("id");
        w.String(e->row.id.data(), e->row.id.size());
        w.Key("revision");
        w.Int64(e->row.revision);
        w.EndObject();
      }
      w.EndArray();
    }
    std::vector<std::tuple<std::string, int64_t, std::string>> inserted;
    bool moved = false;
    absl::Status written = pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          inserted.clear();
          pqxx::work tx(conn);
          const pqxx::result updated = tx.exec_params(
              absl::StrCat(
                  "UPDATE ", options_.schema,
                  ".webhook_endpoints e SET cursor = $2 FROM "
                  "json_to_recordset($1::json) AS r(id text, revision "
                  "bigint) WHERE e.id = r.id AND e.revision = r.revision "
                  "RETURNING e.id"),
              std::string(cursors.GetString(), cursors.GetSize()), next);
          if (updated.size() != group.size()) {
            moved = false;
            return absl::OkStatus();  // rolled back: someone changed one
          }
          if (!rows.empty()) {
            for (const pqxx::row& r : tx.exec_params(
                     absl::StrCat(
                         "INSERT INTO ", options_.schema,
                         ".webhook_deliveries (endpoint_id, event_id, "
                         "position, stream_id, stream_version, event_type, "
                         "recorded_at, body) SELECT r.endpoint_id, "
                         "r.event_id::uuid, r.position, r.stream_id, "
                         "r.stream_version, r.event_type, "
                         "to_timestamp(r.recorded_us / 1000000.0), r.body "
                         "FROM json_to_recordset($1::json) AS r(endpoint_id "
                         "text, event_id text, position text, stream_id text, "
                         "stream_version bigint, event_type text, recorded_us "
                         "bigint, body text) ON CONFLICT (endpoint_id, "
                         "event_id) DO NOTHING RETURNING endpoint_id, seq, "
                         "event_id::text"),
                     std::string(insert.GetString(), insert.GetSize()))) {
              inserted.emplace_back(r[0].as<std::string>(), r[1].as<int64_t>(),
                                    r[2].as<std::string>());
            }
          }
          tx.commit();
          moved = true;
          return absl::OkStatus();
        });
    if (!written.ok() || !moved) {
      if (!written.ok()) {
        Log(LogLevel::kWarn, "webhook queueing failed",
            {{"error", written.ToString()}});
      }
      // An endpoint changed meanwhile (or the write failed): read them
      // again before queueing for them.
      for (Endpoint* e : group) e->reload = true;
      next_reload_ = absl::InfinitePast();
      return false;
    }
    std::map<std::pair<std::string, std::string>, int64_t> seqs;
    for (auto& [endpoint_id, seq, event_id] : inserted) {
      seqs[{endpoint_id, event_id}] = seq;
    }
    const absl::Time now = absl::Now();
    for (const Row& r : rows) {
      auto it = seqs.find({r.endpoint->row.id, r.event->event_id});
      if (it == seqs.end()) continue;  // was waiting already
      Endpoint& e = *r.endpoint;
      Stream& s = e.streams[r.event->stream_id];
      Delivery d;
      d.seq = it->second;
      d.event_id = r.event->event_id;
      d.body = r.body;
      d.recorded_at = r.event->recorded_at;
      d.due = now + Delay(0);
      s.waiting.emplace(r.event->stream_version, std::move(d));
      ++e.queued;
      Refresh(e, r.event->stream_id, s);
    }
    for (Endpoint* e : group) e->row.cursor = page->next;
    return page->events.size() == static_cast<size_t>(kPage);
  }

  // --- Sending ---------------------------------------------------------

  absl::Duration Delay(int attempts) {
    const absl::Duration base = options_.retry_schedule[attempts];
    if (base == absl::ZeroDuration() || options_.jitter <= 0) return base;
    const double factor = absl::Uniform<double>(bitgen_, 1 - options_.jitter,
                                                1 + options_.jitter);
    return base * factor;
  }

  void SendDue(absl::Time now) {
    for (auto& [id, ep] : endpoints_) {
      Endpoint& e = *ep;
      if (!e.row.enabled || e.reload) continue;
      while (e.in_flight < options_.concurrency && !e.ready.empty() &&
             e.ready.begin()->first <= now) {
        const std::string stream_id = e.ready.begin()->second;
        Stream& s = e.streams[stream_id];
        Send(e, stream_id, s, now);
      }
    }
  }

  void Send(Endpoint& e, const std::string& stream_id, Stream& s,
            absl::Time now) {
    const int64_t version = s.waiting.begin()->first;
    const Delivery& d = s.waiting.begin()->second;
    s.busy = true;
    s.busy_version = version;
    Refresh(e, stream_id, s);
    ++e.in_flight;
    const int64_t timestamp = absl::ToUnixSeconds(now);
    absl::StatusOr<std::string> signature =
        SignWebhook(e.row.secret, d.event_id, timestamp, *d.body);
    if (signature.ok() && !e.row.previous_secret.empty() &&
        e.row.previous_secret_until.has_value() &&
        now < *e.row.previous_secret_until) {
      absl::StatusOr<std::string> previous =
          SignWebhook(e.row.previous_secret, d.event_id, timestamp, *d.body);
      if (previous.ok()) absl::StrAppend(&*signature, " ", *previous);
    }
    Completion c;
    c.generation = generation_;
    c.endpoint_id = e.row.id;
    c.stream_id = stream_id;
    c.stream_version = version;
    c.seq = d.seq;
    c.started = now;
    if (!signature.ok()) {
      c.response.failure = http::ClientResponse::Failure::kOther;
      c.response.error = std::string(signature.status().message());
      absl::MutexLock lock(&mu_);
      completions_.push_back(std::move(c));
      return;
    }
    http::ClientRequest request;
    request.method = "POST";
    request.url = e.row.url;
    request.headers = {{"Content-Type", "application/json"},
                       {"webhook-id", d.event_id},
                       {"webhook-timestamp", absl::StrCat(timestamp)},
                       {"webhook-signature", *std::move(signature)}};
    request.body = *d.body;
    request.timeout = options_.attempt_timeout;
    client_->Send(std::move(request),
                  [this, c = std::move(c)](http::ClientResponse r) mutable {
                    c.response = std::move(r);
                    absl::MutexLock lock(&mu_);
                    completions_.push_back(std::move(c));
                  });
  }

  // --- Outcomes --------------------------------------------------------

  void HandleCompletions(std::vector<Completion> completions) {
    for (Completion& c : completions) {
      if (c.generation != generation_) continue;
      auto eit = endpoints_.find(c.endpoint_id);
      if (eit == endpoints_.end()) continue;
      Endpoint& e = *eit->second;
      auto sit = e.streams.find(c.stream_id);
      if (sit == e.streams.end()) continue;
      Stream& s = sit->second;
      auto dit = s.waiting.find(c.stream_version);
      if (dit == s.waiting.end() || dit->second.seq != c.seq) continue;
      --e.in_flight;
      s.busy = false;
      Handle(e, c, s, dit->second);
      if (s.waiting.empty() && !s.busy) {
        e.streams.erase(sit);
      } else {
        Refresh(e, c.stream_id, s);
      }
    }
  }

  void Handle(Endpoint& e, const Completion& c, Stream& s, Delivery& d) {
    const http::ClientResponse& r = c.response;
    const absl::Time now = absl::Now();
    const std::string outcome = OutcomeOf(r);
    if (attempts_metric_ != nullptr) {
      attempts_metric_->WithLabels({e.row.id, outcome}).Increment();
    }
    Outcomes::Attempt a;
    a.endpoint_id = e.row.id;
    a.seq = d.seq;
    a.event_id = d.event_id;
    a.attempt = d.attempts + 1;
    a.at = c.started;
    a.duration = r.elapsed;
    a.status = r.status;
    a.outcome = outcome;
    a.error = ErrorOf(r);
    Outcomes::Totals& totals = pending_.totals[e.row.id];
    if (outcome == "success") {
      a.delivered = true;
      ++totals.delivered;
      totals.last_success = now;
      e.row.failing_since.reset();
      totals.failing_since.reset();
      if (latency_metric_ != nullptr) {
        latency_metric_->WithLabels({}).Observe(
            absl::ToDoubleSeconds(now - d.recorded_at));
      }
      pending_.attempts.push_back(std::move(a));
      s.waiting.erase(c.stream_version);
      --e.queued;
      return;
    }
    ++totals.failed;
    totals.last_failure = now;
    if (!e.row.failing_since.has_value()) e.row.failing_since = now;
    totals.failing_since = e.row.failing_since;
    ++d.attempts;
    if (r.status == 410) {
      // The receiver says the endpoint is gone: the delivery keeps its
      // place (attempt counted) and nothing more is sent.
      d.due = now;
      if (e.row.enabled) Disable(e, "gone");
    } else if (d.attempts >= static_cast<int>(options_.retry_schedule.size())) {
      d.parked = true;
      ++e.parked;
      Log(LogLevel::kWarn, "webhook delivery parked",
          {{"endpoint", e.row.id},
           {"event_id", d.event_id},
           {"attempts", d.attempts},
           {"error", a.error}});
    } else {
      absl::Duration delay = Delay(d.attempts);
      if ((r.status == 429 || r.status == 503) && r.retry_after.has_value()) {
        delay = std::min(*r.retry_after, options_.max_retry_after);
      }
      d.due = now + delay;
    }
    a.next = d.due;
    a.parked = d.parked;
    pending_.attempts.push_back(std::move(a));
    if (e.row.enabled && now - *e.row.failing_since >= options_.disable_after) {
      Disable(e, "failing");
    }
  }

  void Disable(Endpoint& e, const std::string& reason) {
    e.row.enabled = false;
    e.row.disabled_reason = reason;
    Log(LogLevel::kWarn, "webhook endpoint disabled",
        {{"endpoint", e.row.id},
         {"reason", reason},
         {"failing_since", e.row.failing_since.has_value()
                               ? absl::FormatTime(*e.row.failing_since)
                               : std::string()}});
    if (disabled_metric_ != nullptr) {
      disabled_metric_->WithLabels({reason}).Increment();
    }
    absl::Status s = pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::work tx(conn);
          const pqxx::result r = tx.exec_params(
              absl::StrCat("UPDATE ", options_.schema,
                           ".webhook_endpoints SET enabled = false, "
                           "disabled_reason = $2, disabled_at = now(), "
                           "updated_at = now(), revision = revision + 1 "
                           "WHERE id = $1 AND enabled RETURNING revision"),
              e.row.id, reason);
          tx.commit();
          if (!r.empty()) e.row.revision = r[0][0].as<int64_t>();
          return absl::OkStatus();
        });
    if (!s.ok()) {
      Log(LogLevel::kWarn, "webhook endpoint could not be disabled",
          {{"endpoint", e.row.id}, {"error", s.ToString()}});
    }
  }

  // Writes the outcomes gathered so far, in one transaction; kept for the
  // next round when that fails. True when nothing is left to write.
  bool WriteOutcomes() {
    while (!pending_.empty() || !pending_.totals.empty()) {
      if (!WriteSomeOutcomes()) return false;
    }
    return true;
  }

  // Writes up to kMaxOutcomesPerWrite outcomes and the totals.
  bool WriteSomeOutcomes() {
    const size_t count =
        std::min(pending_.attempts.size(), kMaxOutcomesPerWrite);
    JsonBuffer delivered, failed, attempts, totals;
    {
      JsonWriter dw(delivered), fw(failed), aw(attempts);
      dw.StartArray();
      fw.StartArray();
      aw.StartArray();
      for (size_t i = 0; i < count; ++i) {
        const Outcomes::Attempt& a = pending_.attempts[i];
        JsonWriter& w = a.delivered ? dw : fw;
        w.StartObject();
        w.Key("endpoint_id");
        w.String(a.endpoint_id.data(), a.endpoint_id.size());
        w.Key("seq");
        w.Int64(a.seq);
        if (!a.delivered) {
          w.Key("attempts");
          w.Int(a.attempt);
          w.Key("next_us");
          w.Int64(Micros(a.next));
          w.Key("status");
          if (a.status > 0) {
            w.Int(a.status);
          } else {
            w.Null();
          }
          w.Key("error");
          w.String(a.error.data(), a.error.size());
          w.Key("parked");
          w.Bool(a.parked);
        }
        w.EndObject();
        aw.StartObject();
        aw.Key("endpoint_id");
        aw.String(a.endpoint_id.data(), a.endpoint_id.size());
        aw.Key("event_id");
        aw.String(a.event_id.data(), a.event_id.size());
        aw.Key("attempt");
        aw.Int(a.attempt);
        aw.Key("at_us");
        aw.Int64(Micros(a.at));
        aw.Key("duration_ms");
        aw.Int64(absl::ToInt64Milliseconds(a.duration));
        aw.Key("status");
        if (a.status > 0) {
          aw.Int(a.status);
        } else {
          aw.Null();
        }
        aw.Key("outcome");
        aw.String(a.outcome.data(), a.outcome.size());
        aw.Key("error");
        if (a.error.empty()) {
          aw.Null();
        } else {
          aw.String(a.error.data(), a.error.size());
        }
        aw.EndObject();
      }
      dw.EndArray();
      fw.EndArray();
      aw.EndArray();
      JsonWriter tw(totals);
      tw.StartArray();
      for (const auto& [id, t] : pending_.totals) {
        tw.StartObject();
        tw.Key("id");
        tw.String(id.data(), id.size());
        tw.Key("delivered");
        tw.Int64(t.delivered);
        tw.Key("failed");
        tw.Int64(t.failed);
        WriteOptionalMicros(tw, "success_us", t.last_success);
        WriteOptionalMicros(tw, "failure_us", t.last_failure);
        WriteOptionalMicros(tw, "failing_us", t.failing_since);
        tw.EndObject();
      }
      tw.EndArray();
    }
    const std::string& s = options_.schema;
    absl::Status written = pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::work tx(conn);
          // The endpoints' rows first, as an endpoint's deletion (which
          // cascades to its deliveries and attempts) locks them: the same
          // order, no deadlock.
          tx.exec_params(
              absl::StrCat(
                  "UPDATE ", s,
                  ".webhook_endpoints e SET delivered = e.delivered + "
                  "r.delivered, failed_attempts = e.failed_attempts + "
                  "r.failed, last_success_at = coalesce(to_timestamp("
                  "r.success_us / 1000000.0), e.last_success_at), "
                  "last_failure_at = coalesce(to_timestamp(r.failure_us / "
                  "1000000.0), e.last_failure_at), failing_since = "
                  "to_timestamp(r.failing_us / 1000000.0) FROM "
                  "json_to_recordset($1::json) AS r(id text, delivered "
                  "bigint, failed bigint, success_us bigint, failure_us "
                  "bigint, failing_us bigint) WHERE e.id = r.id"),
              std::string(totals.GetString(), totals.GetSize()));
          tx.exec_params(
              absl::StrCat("DELETE FROM ", s,
                           ".webhook_deliveries d USING json_to_recordset($1"
                           "::json) AS r(endpoint_id text, seq bigint) WHERE "
                           "d.endpoint_id = r.endpoint_id AND d.seq = r.seq"),
              std::string(delivered.GetString(), delivered.GetSize()));
          tx.exec_params(
              absl::StrCat(
                  "UPDATE ", s,
                  ".webhook_deliveries d SET attempts = r.attempts, "
                  "next_attempt_at = to_timestamp(r.next_us / 1000000.0), "
                  "last_status = r.status, last_error = r.error, state = "
                  "CASE WHEN r.parked THEN 'parked' ELSE 'pending' END, "
                  "parked_at = CASE WHEN r.parked THEN now() END FROM "
                  "json_to_recordset($1::json) AS r(endpoint_id text, seq "
                  "bigint, attempts integer, next_us bigint, status integer, "
                  "error text, parked boolean) WHERE d.endpoint_id = "
                  "r.endpoint_id AND d.seq = r.seq"),
              std::string(failed.GetString(), failed.GetSize()));
          tx.exec_params(
              absl::StrCat(
                  "INSERT INTO ", s,
                  ".webhook_attempts (endpoint_id, event_id, attempt, "
                  "attempted_at, duration_ms, status, outcome, error) SELECT "
                  "r.endpoint_id, r.event_id::uuid, r.attempt, "
                  "to_timestamp(r.at_us / 1000000.0), r.duration_ms, "
                  "r.status, r.outcome, r.error FROM json_to_recordset($1"
                  "::json) AS r(endpoint_id text, event_id text, attempt "
                  "integer, at_us bigint, duration_ms integer, status "
                  "integer, outcome text, error text) WHERE EXISTS (SELECT "
                  "1 FROM ",
                  s, ".webhook_endpoints e WHERE e.id = r.endpoint_id)"),
              std::string(attempts.GetString(), attempts.GetSize()));
          tx.commit();
          return absl::OkStatus();
        });
    if (!written.ok()) {
      Log(LogLevel::kWarn, "webhook outcomes could not be written",
          {{"error", written.ToString()},
           {"attempts", pending_.attempts.size()}});
      return false;
    }
    pending_.attempts.erase(pending_.attempts.begin(),
                            pending_.attempts.begin() + count);
    pending_.totals.clear();
    return true;
  }

  void TrimAttempts() {
    absl::Status s = pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::work tx(conn);
          tx.exec_params(
              absl::StrCat("DELETE FROM ", options_.schema,
                           ".webhook_attempts a USING (SELECT endpoint_id, "
                           "seq, row_number() OVER (PARTITION BY "
                           "endpoint_id ORDER BY seq DESC) AS n FROM ",
                           options_.schema,
                           ".webhook_attempts) o WHERE o.n > $1 AND "
                           "a.endpoint_id = o.endpoint_id AND a.seq = o.seq"),
              kAttemptsKept);
          tx.commit();
          return absl::OkStatus();
        });
    if (!s.ok()) {
      Log(LogLevel::kWarn, "old webhook attempts could not be deleted",
          {{"error", s.ToString()}});
    }
  }

  // --- Status ----------------------------------------------------------

  void PublishStatus(absl::Time now) {
    std::vector<WebhookEndpointStatus> statuses;
    for (const auto& [id, e] : endpoints_) {
      WebhookEndpointStatus st;
      st.id = id;
      st.url = e->row.url;
      st.enabled = e->row.enabled;
      st.queued = e->queued;
      st.in_flight = e->in_flight;
      st.parked = e->parked;
      absl::Time oldest = absl::InfiniteFuture();
      for (const auto& [stream_id, s] : e->streams) {
        if (!s.waiting.empty()) {
          oldest = std::min(oldest, s.waiting.begin()->second.recorded_at);
        }
      }
      st.lag = oldest == absl::InfiniteFuture()
                   ? absl::ZeroDuration()
                   : std::max(absl::ZeroDuration(), now - oldest);
      if (lag_events_metric_ != nullptr) {
        lag_events_metric_->WithLabels({id}).Set(
            static_cast<double>(e->queued));
        lag_seconds_metric_->WithLabels({id}).Set(
            absl::ToDoubleSeconds(st.lag));
        parked_metric_->WithLabels({id}).Set(static_cast<double>(e->parked));
        enabled_metric_->WithLabels({id}).Set(e->row.enabled ? 1 : 0);
      }
      statuses.push_back(std::move(st));
    }
    absl::MutexLock lock(&status_mu_);
    statuses_ = std::move(statuses);
  }

  void ClearMetrics(const std::string& id) {
    if (lag_events_metric_ == nullptr) return;
    lag_events_metric_->WithLabels({id}).Set(0);
    lag_seconds_metric_->WithLabels({id}).Set(0);
    parked_metric_->WithLabels({id}).Set(0);
    enabled_metric_->WithLabels({id}).Set(0);
  }

  // Constant after construction.
  PgPool* const pool_;
  eventstore::PostgresEventStore* const store_;
  const Publication* const publication_;
  const WebhookDelivererOptions options_;
  ChangeWait wait_for_change_;  // the notifier thread's

  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool changed_ ABSL_GUARDED_BY(mu_) = true;
  bool more_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Completion> completions_ ABSL_GUARDED_BY(mu_);

  mutable absl::Mutex status_mu_;
  bool owner_ ABSL_GUARDED_BY(status_mu_) = false;
  std::vector<WebhookEndpointStatus> statuses_ ABSL_GUARDED_BY(status_mu_);

  // The control thread's.
  std::unique_ptr<pqxx::connection> ownership_;
  absl::Time next_ownership_check_ = absl::InfinitePast();
  int64_t generation_ = 0;
  std::map<std::string, std::unique_ptr<Endpoint>> endpoints_;
  Outcomes pending_;
  absl::Time next_reload_ = absl::InfinitePast();
  absl::Time next_trim_ = absl::InfinitePast();
  absl::Time next_status_ = absl::InfinitePast();
  absl::BitGen bitgen_;

  CounterFamily* attempts_metric_ = nullptr;
  HistogramFamily* latency_metric_ = nullptr;
  GaugeFamily* lag_events_metric_ = nullptr;
  GaugeFamily* lag_seconds_metric_ = nullptr;
  GaugeFamily* parked_metric_ = nullptr;
  GaugeFamily* enabled_metric_ = nullptr;
  CounterFamily* disabled_metric_ = nullptr;

  std::thread notifier_;
  std::thread control_;
  // Last: destroyed first, so that its callbacks (which push completions)
  // run while everything else still exists.
  std::unique_ptr<http::HttpClient> client_;
};

absl::StatusOr<std::unique_ptr<WebhookDeliverer>> WebhookDeliverer::Create(
    PgPool* pool, eventstore::PostgresEventStore* store,
    const Publication* publication, WebhookDelivererOptions options) {
  RETURN_IF_ERROR(ValidateSchemaName(options.schema));
  if (options.retry_schedule.empty()) {
    return absl::InvalidArgumentError(
        "the webhook retry schedule needs at least one attempt");
  }
  for (absl::Duration d : options.retry_schedule) {
    if (d < absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          "the webhook retry schedule has a negative delay");
    }
  }
  if (options.concurrency < 1) {
    return absl::InvalidArgumentError("webhook concurrency must be at least 1");
  }
  if (options.max_queued < 1) {
    return absl::InvalidArgumentError("webhook max_queued must be at least 1");
  }
  if (options.jitter < 0 || options.jitter >= 1) {
    return absl::InvalidArgumentError("webhook jitter must be in [0, 1)");
  }
  http::HttpClientOptions client_options;
  for (const std::string& cidr : options.allow_networks) {
    RETURN_IF_ERROR(client_options.address_policy.Allow(cidr));
  }
  client_options.user_agent = options.user_agent;
  client_options.ca_file = options.ca_file;
  // Several endpoints may share a host; each gets its concurrency.
  client_options.max_connections_per_host =
      std::min(256, std::max(8, options.concurrency * 8));
  ASSIGN_OR_RETURN(std::unique_ptr<http::HttpClient> client,
                   http::HttpClient::Create(std::move(client_options)));
  auto impl = std::make_unique<Impl>(pool, store, publication,
                                     std::move(options), std::move(client));
  RETURN_IF_ERROR(impl->CreateMetrics());
  return std::unique_ptr<WebhookDeliverer>(
      new WebhookDeliverer(std::move(impl)));
}

WebhookDeliverer::WebhookDeliverer(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
WebhookDeliverer::~WebhookDeliverer() { Stop(); }
void WebhookDeliverer::Start() { impl_->Start(); }
void WebhookDeliverer::Stop() { impl_->Stop(); }
bool WebhookDeliverer::owner() const { return impl_->owner(); }
absl::Duration WebhookDeliverer::client_cpu_time() const {
  return impl_->client_cpu_time();
}
std::vector<WebhookEndpointStatus> WebhookDeliverer::Statuses() const {
  return impl_->Statuses();
}

}  // namespace cqrs::integration

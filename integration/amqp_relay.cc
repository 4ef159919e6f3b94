#include "integration/amqp_relay.h"

#include <pqxx/pqxx>

#include <algorithm>
#include <deque>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "framework/json_writer.h"
#include "framework/log.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "integration/amqp_client.h"
#include "integration/feed_hub.h"
#include "rapidjson/document.h"

namespace cqrs::integration {
namespace {

using eventstore::Position;

constexpr char kComponent[] = "amqp_relay";
constexpr Migration kMigrations[] = {
    {1, "AMQP relay checkpoints", R"sql(
CREATE TABLE {s}.amqp_relays (
  name          text        PRIMARY KEY,
  position      text        NOT NULL,
  published     bigint      NOT NULL DEFAULT 0,
  unroutable    bigint      NOT NULL DEFAULT 0,
  state         text        NOT NULL DEFAULT 'stopped',
  last_error    text,
  last_error_at timestamptz,
  updated_at    timestamptz NOT NULL DEFAULT now()
);
)sql"},
};

// pg_try_advisory_lock(class, hashtext("<schema>.<name>")): who relays.
constexpr int kOwnershipLockClass = 0x616d7172;  // "amqr"

std::string Text(const rapidjson::Value& v) {
  if (v.IsString()) return std::string(v.GetString(), v.GetStringLength());
  JsonBuffer buffer;
  JsonWriter w(buffer);
  v.Accept(w);
  return std::string(buffer.GetString(), buffer.GetSize());
}

absl::Status Check(const AmqpRelayOptions& o) {
  RETURN_IF_ERROR(ValidateSchemaName(o.schema));
  if (o.url.empty()) {
    return absl::InvalidArgumentError("the AMQP relay needs a broker URL");
  }
  if (o.exchange.empty()) {
    return absl::InvalidArgumentError("the AMQP relay needs an exchange");
  }
  if (o.name.empty() || o.name.size() > 100) {
    return absl::InvalidArgumentError("a relay's name is 1 to 100 bytes");
  }
  if (o.batch_size < 1 || o.batch_size > 10000) {
    return absl::InvalidArgumentError("relay batch_size must be 1..10000");
  }
  if (o.pipeline_pages < 1 || o.pipeline_pages > 64) {
    return absl::InvalidArgumentError("relay pipeline_pages must be 1..64");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AmqpMessageParts> CloudEventToAmqp(absl::string_view cloud_event,
                                                  CloudEventsAmqpMode mode) {
  rapidjson::Document doc;
  doc.Parse(cloud_event.data(), cloud_event.size());
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("id") ||
      !doc["id"].IsString() || !doc.HasMember("type") ||
      !doc["type"].IsString()) {
    return absl::InvalidArgumentError("not a CloudEvent JSON object");
  }
  AmqpMessageParts m;
  m.message_id = doc["id"].GetString();
  const std::string category =
      doc.HasMember("category") ? Text(doc["category"]) : std::string();
  m.routing_key = absl::StrCat(category, category.empty() ? "" : ".",
                               doc["type"].GetString());
  if (mode == CloudEventsAmqpMode::kStructured) {
    m.content_type = "application/cloudevents+json; charset=utf-8";
    m.body = std::string(cloud_event);
    return m;
  }
  m.content_type = "application/json";
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    const std::string name(it->name.GetString(), it->name.GetStringLength());
    if (name == "data") {
      // The payload as JSON text, whatever its JSON type (datacontenttype
      // says JSON).
      JsonBuffer buffer;
      JsonWriter w(buffer);
      it->value.Accept(w);
      m.body.assign(buffer.GetString(), buffer.GetSize());
    } else if (name == "datacontenttype") {
      m.content_type = Text(it->value);
    } else {
      m.headers.emplace_back(absl::StrCat("cloudEvents:", name),
                             Text(it->value));
    }
  }
  return m;
}

class AmqpRelay::Impl {
 public:
  Impl(PgPool* pool, eventstore::PostgresEventStore* store,
       const Publication* publication, AmqpRelayOptions options)
      : pool_(pool),
        store_(store),
        publication_(publication),
        options_(std::move(options)),
        wait_for_change_(ChangeWaitOn(pool->conninfo(), options_.schema)) {}

  absl::Status CreateMetrics() {
    MetricsRegistry* m = options_.metrics;
    if (m == nullptr) return absl::OkStatus();
    ASSIGN_OR_RETURN(
        published_metric_,
        m->AddCounter("cqrs_relay_published_total",
                      "Events the broker confirmed, by relay.", {"relay"}));
    ASSIGN_OR_RETURN(
        unroutable_metric_,
        m->AddCounter("cqrs_relay_unroutable_total",
                      "Messages the broker returned as unroutable (no "
                      "queue bound for their routing key), by relay.",
                      {"relay"}));
    ASSIGN_OR_RETURN(connected_metric_,
                     m->AddGauge("cqrs_relay_connected",
                                 "1 while the relay is connected to its "
                                 "broker (and owns the relaying).",
                                 {"relay"}));
    ASSIGN_OR_RETURN(lag_metric_,
                     m->AddGauge("cqrs_relay_lag_seconds",
                                 "Age of the oldest event not yet confirmed "
                                 "by the broker (0 when caught up).",
                                 {"relay"}));
    return absl::OkStatus();
  }

  // Connects once: the configuration's errors at startup.
  absl::Status Probe() {
    ASSIGN_OR_RETURN(std::unique_ptr<amqp::Connection> conn, Connect());
    return absl::OkStatus();
  }

  void Start() {
    absl::MutexLock lock(&mu_);
    if (started_) return;
    started_ = true;
    notifier_ = std::thread([this] { NotifyLoop(); });
    thread_ = std::thread([this] { Loop(); });
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      if (!started_ || stopping_) return;
      stopping_ = true;
    }
    notifier_.join();
    thread_.join();
  }

  bool owner() const {
    absl::MutexLock lock(&mu_);
    return owner_;
  }

 private:
  absl::StatusOr<std::unique_ptr<amqp::Connection>> Connect() {
    amqp::ConnectionOptions o;
    o.connection_name =
        absl::StrCat("cqrs relay ", options_.schema, ".", options_.name);
    ASSIGN_OR_RETURN(std::unique_ptr<amqp::Connection> conn,
                     amqp::Connection::Open(options_.url, o));
    if (options_.declare_exchange) {
      RETURN_IF_ERROR(
          conn->DeclareExchange(options_.exchange, options_.exchange_type));
    } else {
      RETURN_IF_ERROR(conn->CheckExchange(options_.exchange));
    }
    RETURN_IF_ERROR(conn->EnableConfirms());
    return conn;
  }

  void NotifyLoop() {
    while (!Stopping()) {
      wait_for_change_(std::min(options_.poll_interval, absl::Seconds(1)));
      absl::MutexLock lock(&mu_);
      changed_ = true;
    }
  }

  bool Stopping() const {
    absl::MutexLock lock(&mu_);
    return stopping_;
  }

  // Until a change, stop, or `d`.
  void Wait(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    auto woken = [this] { return stopping_ || changed_; };
    mu_.AwaitWithTimeout(absl::Condition(&woken), d);
    changed_ = false;
  }

  void Sleep(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
  }

  void Loop() {
    absl::Duration backoff = absl::Milliseconds(250);
    while (!Stopping()) {
      if (!Owned()) {
        Sleep(options_.takeover_interval);
        continue;
      }
      if (conn_ == nullptr) {
        SetState("connecting");
        absl::StatusOr<std::unique_ptr<amqp::Connection>> conn = Connect();
        if (!conn.ok()) {
          Failed("disconnected", conn.status());
          Sleep(backoff);
          backoff = std::min(backoff * 2, options_.max_backoff);
          continue;
        }
        conn_ = *std::move(conn);
        Gauge(connected_metric_, 1);
        Log(LogLevel::kInfo, "AMQP relay connected",
            {{"relay", options_.name}, {"exchange", options_.exchange}});
      }
      absl::StatusOr<bool> more = Pump();
      if (!more.ok()) {
        DropConnection();
        Failed("disconnected", more.status());
        Sleep(backoff);
        backoff = std::min(backoff * 2, options_.max_backoff);
        continue;
      }
      backoff = absl::Milliseconds(250);
      if (!*more) {
        SetState("caught_up");
        Gauge(lag_metric_, 0);
        Wait(options_.poll_interval);
      }
    }
    DropConnection();
    if (ownership_ != nullptr) SetState("stopped");
    ownership_.reset();
  }

  // Takes or confirms ownership; loads the checkpoint when it takes it.
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
      tx.exec_params(
          "SELECT set_config('application_name', $1, false)",
          absl::StrCat("cqrs relay ", options_.schema, ".", options_.name));
      if (!tx.exec_params1("SELECT pg_try_advisory_lock($1, hashtext($2))",
                           kOwnershipLockClass,
                           absl::StrCat(options_.schema, ".", options_.name))[0]
               .as<bool>()) {
        return false;
      }
      tx.exec_params(absl::StrCat("INSERT INTO ", options_.schema,
                                  ".amqp_relays (name, position) VALUES ($1, "
                                  "$2) ON CONFLICT (name) DO NOTHING"),
                     options_.name, Position::Start().ToToken());
      const pqxx::row row =
          tx.exec_params1(absl::StrCat("SELECT position FROM ", options_.schema,
                                       ".amqp_relays WHERE name = $1"),
                          options_.name);
      absl::StatusOr<Position> at =
          Position::FromToken(row[0].as<std::string>());
      if (!at.ok()) {
        Log(LogLevel::kError, "AMQP relay checkpoint is not a position",
            {{"relay", options_.name}});
        return false;
      }
      checkpoint_ = *at;
      read_at_ = checkpoint_;
      in_flight_.clear();
      ownership_ = std::move(conn);
      {
        absl::MutexLock lock(&mu_);
        owner_ = true;
      }
      Log(LogLevel::kInfo, "AMQP relay owned",
          {{"relay", options_.name},
           {"schema", options_.schema},
           {"checkpoint", checkpoint_.ToToken()}});
      return true;
    } catch (const std::exception& e) {
      if (ownership_ != nullptr) {
        Log(LogLevel::kWarn, "AMQP relay ownership session lost",
            {{"relay", options_.name}, {"error", e.what()}});
      }
      ownership_.reset();
      DropConnection();
      absl::MutexLock lock(&mu_);
      owner_ = false;
      return false;
    }
  }

  // One round of the pipeline: reads and publishes pages until
  // options_.pipeline_pages are in flight (or the log is drained), then
  // waits for the broker to confirm the oldest and stores the checkpoint
  // past every page confirmed by then. So the broker works on one page
  // while the relay reads and encodes the next, and the checkpoint only
  // ever moves over confirmed messages. True while there is more to do.
  absl::StatusOr<bool> Pump() {
    bool drained = false;
    while (static_cast<int>(in_flight_.size()) < options_.pipeline_pages) {
      ASSIGN_OR_RETURN(eventstore::ReadAllResult page,
                       store_->ReadAll(read_at_, options_.batch_size));
      if (page.events.empty()) {
        drained = true;
        break;
      }
      SetState("relaying");
      InFlight sent;
      ASSIGN_OR_RETURN(sent.published, PublishPage(page.events));
      sent.last_seq = conn_->LastPublished();
      sent.next = page.next;
      sent.newest = page.events.back().recorded_at;
      in_flight_.push_back(sent);
      read_at_ = page.next;
      if (page.events.size() < static_cast<size_t>(options_.batch_size)) {
        drained = true;
        break;
      }
    }
    if (in_flight_.empty()) return false;
    ASSIGN_OR_RETURN(amqp::ConfirmResult confirmed,
                     conn_->WaitForConfirmsThrough(in_flight_.front().last_seq,
                                                   options_.confirm_timeout));
    if (!confirmed.nacked.empty()) {
      return absl::UnavailableError(
          absl::StrCat("the broker nacked ", confirmed.nacked.size(),
                       " messages; publishing them again"));
    }
    Unroutable(confirmed.returned);
    // Every page whose last message is confirmed (acks may cover several).
    int64_t published = 0;
    std::optional<InFlight> last;
    while (!in_flight_.empty() &&
           in_flight_.front().last_seq <= conn_->ConfirmedThrough()) {
      published += in_flight_.front().published;
      last = in_flight_.front();
      in_flight_.pop_front();
    }
    if (!last.has_value()) return true;
    RETURN_IF_ERROR(StoreCheckpoint(last->next, published));
    checkpoint_ = last->next;
    if (published_metric_ != nullptr && published > 0) {
      published_metric_->WithLabels({options_.name})
          .Increment(static_cast<double>(published));
    }
    Gauge(lag_metric_, absl::ToDoubleSeconds(absl::Now() - last->newest));
    return !drained || !in_flight_.empty();
  }

  // Publishes the page's published events; returns how many.
  absl::StatusOr<int64_t> PublishPage(
      const std::vector<eventstore::RecordedEvent>& events) {
    int64_t published = 0;
    for (const eventstore::RecordedEvent& ev : events) {
      ASSIGN_OR_RETURN(std::optional<std::string> ce, publication_->Encode(ev));
      if (!ce.has_value()) continue;
      ASSIGN_OR_RETURN(AmqpMessageParts parts,
                       CloudEventToAmqp(*ce, options_.mode));
      message_.exchange = options_.exchange;
      message_.routing_key = std::move(parts.routing_key);
      message_.message_id = std::move(parts.message_id);
      message_.content_type = std::move(parts.content_type);
      message_.headers = std::move(parts.headers);
      message_.body = std::move(parts.body);
      message_.persistent = true;
      message_.mandatory = true;
      RETURN_IF_ERROR(conn_->Publish(message_).status());
      ++published;
    }
    return published;
  }

  // Messages the broker returned: logged, counted, shown as the last error.
  void Unroutable(const std::vector<amqp::Message>& returned) {
    for (const amqp::Message& r : returned) {
      Log(LogLevel::kWarn, "AMQP message unroutable",
          {{"relay", options_.name},
           {"exchange", r.exchange},
           {"routing_key", r.routing_key},
           {"message_id", r.message_id}});
    }
    if (returned.empty()) return;
    if (unroutable_metric_ != nullptr) {
      unroutable_metric_->WithLabels({options_.name})
          .Increment(static_cast<double>(returned.size()));
    }
    const amqp::Message& r = returned.front();
    RecordError(absl::StrCat(returned.size(), " messages unroutable, e.g. ",
                             r.message_id, " with routing key ", r.routing_key,
                             ": bind a queue for them"));
    unroutable_pending_ += static_cast<int64_t>(returned.size());
  }

  // Forgets what is in flight: the next connection publishes again from
  // the checkpoint.
  void DropConnection() {
    conn_.reset();
    in_flight_.clear();
    read_at_ = checkpoint_;
    Gauge(connected_metric_, 0);
  }

  absl::Status StoreCheckpoint(const Position& next, int64_t published) {
    const int64_t unroutable = unroutable_pending_;
    RETURN_IF_ERROR(pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::work tx(conn);
          tx.exec_params(
              absl::StrCat("UPDATE ", options_.schema,
                           ".amqp_relays SET position = $2, published = "
                           "published + $3, unroutable = unroutable + $4, "
                           "state = $5, updated_at = now() WHERE name = $1"),
              options_.name, next.ToToken(), published, unroutable, state_);
          tx.commit();
          return absl::OkStatus();
        }));
    unroutable_pending_ = 0;
    return absl::OkStatus();
  }

  void SetState(const std::string& state) {
    if (state == state_) return;
    state_ = state;
    WriteRow("state = $2", state);
  }

  void Failed(const std::string& state, const absl::Status& error) {
    Log(LogLevel::kWarn, "AMQP relay failed",
        {{"relay", options_.name},
         {"state", state},
         {"error", error.ToString()}});
    state_ = state;
    WriteRow("state = $2", state);
    RecordError(std::string(error.message()));
  }

  void RecordError(const std::string& error) {
    WriteRow("last_error = $2, last_error_at = now()", error);
  }

  // Best effort: the state is for humans; a failure here only logs.
  void WriteRow(const std::string& set, const std::string& value) {
    absl::Status s = pool_->Run(
        PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
          pqxx::work tx(conn);
          tx.exec_params(
              absl::StrCat("UPDATE ", options_.schema, ".amqp_relays SET ", set,
                           ", updated_at = now() WHERE name = $1"),
              options_.name, value);
          tx.commit();
          return absl::OkStatus();
        });
    if (!s.ok()) {
      Log(LogLevel::kWarn, "AMQP relay state could not be written",
          {{"relay", options_.name}, {"error", s.ToString()}});
    }
  }

  void Gauge(GaugeFamily* family, double value) {
    if (family != nullptr) family->WithLabels({options_.name}).Set(value);
  }

  // Constant after construction.
  PgPool* const pool_;
  eventstore::PostgresEventStore* const store_;
  const Publication* const publication_;
  const AmqpRelayOptions options_;
  ChangeWait wait_for_change_;  // the notifier thread's

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool changed_ ABSL_GUARDED_BY(mu_) = true;
  bool owner_ ABSL_GUARDED_BY(mu_) = false;

  // The relay thread's.
  std::unique_ptr<pqxx::connection> ownership_;
  absl::Time next_ownership_check_ = absl::InfinitePast();
  std::unique_ptr<amqp::Connection> conn_;
  // Pages published, oldest first, not yet all confirmed.
  struct InFlight {
    uint64_t last_seq = 0;  // of its last message (or the one before it)
    Position next;          // the checkpoint once it is confirmed
    int64_t published = 0;
    absl::Time newest;  // its newest event's commit time
  };
  std::deque<InFlight> in_flight_;
  Position checkpoint_;    // stored: everything before it is confirmed
  Position read_at_;       // where the next page starts (>= checkpoint_)
  amqp::Message message_;  // reused: Publish allocates nothing then
  std::string state_;
  int64_t unroutable_pending_ = 0;

  CounterFamily* published_metric_ = nullptr;
  CounterFamily* unroutable_metric_ = nullptr;
  GaugeFamily* connected_metric_ = nullptr;
  GaugeFamily* lag_metric_ = nullptr;

  std::thread notifier_;
  std::thread thread_;
};

absl::Status AmqpRelay::Migrate(PgPool& pool, absl::string_view schema) {
  return ApplyMigrations(pool, schema, kComponent, kMigrations);
}

absl::StatusOr<std::unique_ptr<AmqpRelay>> AmqpRelay::Create(
    PgPool* pool, eventstore::PostgresEventStore* store,
    const Publication* publication, AmqpRelayOptions options) {
  RETURN_IF_ERROR(Check(options));
  ASSIGN_OR_RETURN(int version,
                   MigratedVersion(*pool, options.schema, kComponent));
  if (version < kMigrations[std::size(kMigrations) - 1].version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "schema '", options.schema, "' has no amqp_relays table: run migrate"));
  }
  auto impl =
      std::make_unique<Impl>(pool, store, publication, std::move(options));
  RETURN_IF_ERROR(impl->CreateMetrics());
  RETURN_IF_ERROR(impl->Probe());
  return std::unique_ptr<AmqpRelay>(new AmqpRelay(std::move(impl)));
}

AmqpRelay::AmqpRelay(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AmqpRelay::~AmqpRelay() { Stop(); }
void AmqpRelay::Start() { impl_->Start(); }
void AmqpRelay::Stop() { impl_->Stop(); }
bool AmqpRelay::owner() const { return impl_->owner(); }

absl::StatusOr<AmqpRelayStatus> AmqpRelay::ReadStatus(
    PgPool& pool, eventstore::PostgresEventStore& store,
    absl::string_view schema, absl::string_view name) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  AmqpRelayStatus status;
  status.name = std::string(name);
  bool found = false;
  RETURN_IF_ERROR(
      pool.Run(PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        pqxx::read_transaction tx(conn);
        const pqxx::result r = tx.exec_params(
            absl::StrCat(
                "SELECT position, published, unroutable, state, "
                "coalesce(last_error, ''), "
                "(extract(epoch FROM last_error_at) * 1000000)::bigint, "
                "(extract(epoch FROM updated_at) * 1000000)::bigint, "
                "(pg_try_advisory_lock_shared($2, hashtext($3)))"
                " FROM ",
                schema, ".amqp_relays WHERE name = $1"),
            std::string(name), kOwnershipLockClass,
            absl::StrCat(schema, ".", name));
        if (r.empty()) return absl::OkStatus();
        found = true;
        absl::StatusOr<Position> at = Position::FromToken(r[0][0].c_str());
        if (at.ok()) status.checkpoint = *at;
        status.published = r[0][1].as<int64_t>();
        status.unroutable = r[0][2].as<int64_t>();
        status.state = r[0][3].as<std::string>();
        status.last_error = r[0][4].as<std::string>();
        if (!r[0][5].is_null()) {
          status.last_error_at = absl::FromUnixMicros(r[0][5].as<int64_t>());
        }
        status.updated_at = absl::FromUnixMicros(r[0][6].as<int64_t>());
        // Got the lock: nobody holds it, so nobody relays.
        if (r[0][7].as<bool>()) {
          tx.exec_params("SELECT pg_advisory_unlock_shared($1, hashtext($2))",
                         kOwnershipLockClass, absl::StrCat(schema, ".", name));
          status.state = "stopped";
        }
        return absl::OkStatus();
      }));
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("no relay '", name, "' has run in schema '", schema, "'"));
  }
  // The lag: events after the checkpoint, counted up to a bound.
  Position after = status.checkpoint;
  absl::Time oldest = absl::InfiniteFuture();
  for (int pages = 0; pages < 100; ++pages) {
    ASSIGN_OR_RETURN(eventstore::ReadAllResult page,
                     store.ReadAll(after, 10000));
    if (page.events.empty()) break;
    if (oldest == absl::InfiniteFuture()) {
      oldest = page.events.front().recorded_at;
    }
    status.lag_events += static_cast<int64_t>(page.events.size());
    after = page.next;
  }
  if (oldest != absl::InfiniteFuture()) status.lag = absl::Now() - oldest;
  return status;
}

}  // namespace cqrs::integration

#include "app/internal/inbound.h"

#include <algorithm>
#include <deque>
#include <exception>
#include <functional>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "framework/auth/scopes.h"
#include "framework/log.h"
#include "framework/status_macros.h"
#include "framework/uuid.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::app_internal {
namespace {

using integration::amqp::Connection;
using integration::amqp::Delivery;
using integration::amqp::Message;

constexpr absl::string_view kErrorHeader = "x-cqrs-error";
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);
constexpr absl::Duration kMaxReconnectWait = absl::Seconds(30);
constexpr size_t kMaxCorrelationIdLength = 128;

bool IsStructured(const Delivery& d) {
  absl::string_view type = d.content_type;
  type = absl::StripAsciiWhitespace(type.substr(0, type.find(';')));
  return absl::EqualsIgnoreCase(type, "application/cloudevents+json");
}

std::optional<absl::string_view> HeaderOf(const Delivery& d,
                                          absl::string_view name) {
  for (const auto& [key, value] : d.headers) {
    if (key == name) return absl::string_view(value);
  }
  return std::nullopt;
}

// The value of attribute `name` of the CloudEvent: header cloudEvents:<name>
// (cloudEvents_<name> in the binding's older spelling), or the structured
// event's member.
std::string CloudEventAttribute(const Delivery& d, absl::string_view name) {
  if (IsStructured(d)) {
    rapidjson::Document doc;
    doc.Parse(d.body.data(), d.body.size());
    if (doc.HasParseError() || !doc.IsObject()) return "";
    auto it = doc.FindMember(rapidjson::Value(
        name.data(), static_cast<rapidjson::SizeType>(name.size())));
    if (it == doc.MemberEnd() || !it->value.IsString()) return "";
    return std::string(it->value.GetString(), it->value.GetStringLength());
  }
  for (absl::string_view prefix : {"cloudEvents:", "cloudEvents_"}) {
    if (auto v = HeaderOf(d, absl::StrCat(prefix, name))) {
      return std::string(*v);
    }
  }
  return "";
}

// The command body: the `data` of a structured CloudEvent, else the body.
absl::StatusOr<std::string> CommandBody(const Delivery& d) {
  if (!IsStructured(d)) return d.body;
  // RapidJSON reads a NUL byte as the end of its input: the envelope
  // {"data":{...}}\0garbage would pass, and its data would be re-encoded
  // without the NUL that Request::Create() refuses.
  if (d.body.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        "the structured CloudEvent holds a NUL byte");
  }
  rapidjson::Document doc;
  doc.Parse(d.body.data(), d.body.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    return absl::InvalidArgumentError(
        "the structured CloudEvent is not a JSON object");
  }
  auto it = doc.FindMember("data");
  if (it == doc.MemberEnd()) return std::string();
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  it->value.Accept(w);
  return std::string(buffer.GetString(), buffer.GetSize());
}

// Percent-encodes everything but RFC 3986's unreserved characters, so that
// an id is one path segment.
std::string PathSegment(absl::string_view id) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(id.size());
  for (char c : id) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' ||
        c == '~') {
      out.push_back(c);
    } else {
      const auto b = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back(kHex[b >> 4]);
      out.push_back(kHex[b & 0xf]);
    }
  }
  return out;
}

// "<status> <code>: <message>" from an error response's
// {"error":{"code":...,"message":...}}.
std::string ErrorText(const http::Response& response) {
  std::string code = "error";
  std::string message;
  rapidjson::Document doc;
  doc.Parse(response.body.data(), response.body.size());
  if (!doc.HasParseError() && doc.IsObject()) {
    auto error = doc.FindMember("error");
    if (error != doc.MemberEnd() && error->value.IsObject()) {
      auto c = error->value.FindMember("code");
      if (c != error->value.MemberEnd() && c->value.IsString()) {
        code = c->value.GetString();
      }
      auto m = error->value.FindMember("message");
      if (m != error->value.MemberEnd() && m->value.IsString()) {
        message = m->value.GetString();
      }
    }
  }
  return absl::StrCat(response.status, " ", code, ": ", message);
}

bool IsValidCorrelationId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxCorrelationIdLength) return false;
  return std::all_of(id.begin(), id.end(),
                     [](char c) { return c >= 0x20 && c <= 0x7e; });
}

enum class Kind { kApplied, kReplayed, kDeadLetter, kTransient };

struct Result {
  Kind kind = Kind::kApplied;
  std::string error;       // kDeadLetter, kTransient: "<status> <code>: ..."
  std::string log_detail;  // kTransient: the hidden cause of a 5xx
};

// The declaration the relay makes with declare_exchange (durable topic),
// only when `name` does not exist: an existing exchange of another type is
// bound to as it is.
absl::Status DeclareExchangeIfMissing(Connection& c, const std::string& name) {
  absl::Status exists = c.CheckExchange(name);
  if (exists.ok()) return exists;
  if (!absl::IsNotFound(exists)) return exists;
  return c.DeclareExchange(name, "topic", /*durable=*/true);
}

Result DeadLetter(std::string error) {
  return {Kind::kDeadLetter, std::move(error), ""};
}

}  // namespace

absl::Status InboundCounters(MetricsRegistry& registry,
                             InboundOptions& options) {
  ASSIGN_OR_RETURN(
      options.messages,
      registry.AddCounter("cqrs_inbound_messages_total",
                          "AMQP messages settled by the inbound consumers, by "
                          "queue and outcome (applied, replayed: a repeated "
                          "message_id, dead_lettered).",
                          {"queue", "outcome"}));
  ASSIGN_OR_RETURN(
      options.retries,
      registry.AddCounter("cqrs_inbound_retries_total",
                          "Transient failures of inbound messages, retried.",
                          {"queue"}));
  return absl::OkStatus();
}

std::string CloudEventSubject(const Delivery& delivery) {
  return CloudEventAttribute(delivery, "subject");
}

struct Inbound::State {
  // A delivery on its way to a worker; `generation` names the connection
  // it came on (its delivery tag means nothing on another).
  struct Work {
    uint64_t generation = 0;
    Delivery delivery;
    std::string id;
  };
  struct Outcome {
    uint64_t generation = 0;
    Result result;
    Delivery delivery;
  };

  // Constant after construction.
  ConsumerBuilder::Spec spec;
  size_t concurrency = 1;  // queues.size()
  const http::Router* router = nullptr;
  InboundOptions options;
  std::shared_ptr<const http::Principal> principal;
  Counter* applied = nullptr;
  Counter* replayed = nullptr;
  Counter* dead_lettered = nullptr;
  Counter* retries = nullptr;

  // The consumer thread's once started.
  std::unique_ptr<Connection> conn;

  absl::Mutex mu;
  // Worker i waits on work_cvs[i] for its queue (no thundering herd of
  // every worker per message); retries and reconnects on stop_cv.
  std::unique_ptr<absl::CondVar[]> work_cvs;
  absl::CondVar stop_cv;
  bool stopping ABSL_GUARDED_BY(mu) = false;
  bool workers_done ABSL_GUARDED_BY(mu) = false;
  std::vector<std::deque<Work>> queues ABSL_GUARDED_BY(mu);
  std::deque<Outcome> outcomes ABSL_GUARDED_BY(mu);

  // Owned by Start/Stop's thread.
  std::thread consumer;
  std::vector<std::thread> workers;
  bool started = false;
  bool stopped = false;

  static absl::StatusOr<std::unique_ptr<Connection>> Connect(
      const ConsumerBuilder::Spec& spec, const std::string& url);

  // spec.body's answer; an exception becomes kInvalidArgument.
  absl::StatusOr<std::string> MappedBody(const Delivery& d) const;
  Result Apply(const Delivery& d, const std::string& id) const;
  void WorkerLoop(size_t index);
  void ConsumerLoop();
  // Consumes on `conn` until the workers are done (OK) or the connection
  // fails.
  absl::Status Serve(uint64_t generation);
  absl::Status Settle(const Outcome& outcome);
  // Hands a delivery to its aggregate's worker (counting it in
  // `in_flight`), or settles it at once when it has no message id or no
  // aggregate id.
  absl::Status Dispatch(uint64_t generation, Delivery delivery,
                        size_t& in_flight);
  // Waits `d` or until stopping; true when stopping.
  bool SleepUnlessStopping(absl::Duration d);
};

absl::StatusOr<std::unique_ptr<Connection>> Inbound::State::Connect(
    const ConsumerBuilder::Spec& spec, const std::string& url) {
  integration::amqp::ConnectionOptions connection_options;
  connection_options.connection_name = absl::StrCat("inbound ", spec.queue);
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> c,
                   Connection::Open(url, connection_options));
  const std::string dead_queue = absl::StrCat(spec.queue, ".dead");
  RETURN_IF_ERROR(c->DeclareExchange(spec.dead_letter_exchange, "fanout"));
  RETURN_IF_ERROR(c->DeclareQueue(dead_queue, {}));
  RETURN_IF_ERROR(c->BindQueue(dead_queue, spec.dead_letter_exchange, ""));
  Connection::QueueOptions queue_options;
  queue_options.dead_letter_exchange = spec.dead_letter_exchange;
  RETURN_IF_ERROR(c->DeclareQueue(spec.queue, queue_options));
  for (const ConsumerBuilder::Spec::Binding& b : spec.bindings) {
    RETURN_IF_ERROR(DeclareExchangeIfMissing(*c, b.exchange));
    RETURN_IF_ERROR(c->BindQueue(spec.queue, b.exchange, b.routing_key));
  }
  RETURN_IF_ERROR(c->EnableConfirms());
  RETURN_IF_ERROR(c->Qos(spec.prefetch));
  return c;
}

absl::StatusOr<std::string> Inbound::State::MappedBody(
    const Delivery& d) const {
  absl::StatusOr<std::string> body;
  try {
    body = spec.body(d);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body codec threw: ", e.what()));
  }
  if (body.ok()) return body;
  return absl::InvalidArgumentError(body.status().message());
}

Result Inbound::State::Apply(const Delivery& d, const std::string& id) const {
  absl::StatusOr<std::string> body;
  if (spec.body) {
    body = MappedBody(d);
    if (!body.ok()) {
      return DeadLetter(
          absl::StrCat("400 invalid_request: ", body.status().message()));
    }
  } else {
    body = CommandBody(d);
    if (!body.ok()) {
      return DeadLetter(
          absl::StrCat("400 invalid_json: ", body.status().message()));
    }
  }
  const std::string target =
      absl::StrReplaceAll(spec.pattern, {{"{id}", PathSegment(id)}});
  http::HeaderList headers = {{"Idempotency-Key", d.message_id},
                              {"Content-Type", "application/json"}};
  const std::string correlation = CloudEventAttribute(d, "correlationid");
  if (!correlation.empty())
    headers.emplace_back("X-Correlation-Id", correlation);
  absl::StatusOr<http::Request> request = http::Request::Create(
      spec.method, target, std::move(headers), *std::move(body));
  if (!request.ok()) {
    return DeadLetter(
        absl::StrCat("400 invalid_request: ", request.status().message()));
  }
  http::RouteMatch match = router->Match(spec.method, request->raw_path());
  if (match.result != http::RouteMatch::Result::kFound ||
      !match.route->handler) {
    return DeadLetter(absl::StrCat("404 not_found: no command route for ",
                                   spec.method, " ", request->path()));
  }
  request->set_path_params(std::move(match.params));
  request->set_route_pattern(match.route->pattern);
  request->set_correlation_id(IsValidCorrelationId(correlation) ? correlation
                                                                : NewUuid());
  request->set_principal(principal);
  http::Response response;
  try {
    response = match.route->handler(*request);
  } catch (const std::exception& e) {
    return {Kind::kTransient, "500 internal: the command threw", e.what()};
  }
  if (response.status >= 200 && response.status < 300) {
    const auto replay = response.Header("Idempotent-Replayed");
    return {replay.has_value() && *replay == "true" ? Kind::kReplayed
                                                    : Kind::kApplied,
            "", ""};
  }
  if (response.status == 429 || response.status >= 500) {
    return {Kind::kTransient, ErrorText(response), response.log_detail};
  }
  return DeadLetter(ErrorText(response));
}

bool Inbound::State::SleepUnlessStopping(absl::Duration d) {
  const absl::Time deadline = absl::Now() + d;
  absl::MutexLock lock(&mu);
  while (!stopping) {
    if (stop_cv.WaitWithDeadline(&mu, deadline)) break;  // timed out
  }
  return stopping;
}

void Inbound::State::WorkerLoop(size_t index) {
  while (true) {
    Work work;
    {
      absl::MutexLock lock(&mu);
      while (!stopping && queues[index].empty()) work_cvs[index].Wait(&mu);
      if (stopping) return;
      work = std::move(queues[index].front());
      queues[index].pop_front();
    }
    absl::Duration backoff = options.first_backoff;
    Result result = Apply(work.delivery, work.id);
    while (result.kind == Kind::kTransient) {
      if (retries != nullptr) retries->Increment();
      // The detail is a hidden 5xx's cause (ResponseFromStatus), not the
      // body.
      Log(LogLevel::kWarn, "inbound message failed; retrying",
          {{"queue", spec.queue},
           {"message_id", work.delivery.message_id},
           {"error",
            result.log_detail.empty()
                ? result.error
                : absl::StrCat(result.error, " (", result.log_detail, ")")},
           {"retry_in_ms", absl::ToInt64Milliseconds(backoff)}});
      // Not acked: the broker redelivers it to the next consumer.
      if (SleepUnlessStopping(backoff)) return;
      backoff = std::min(backoff * 2, kMaxBackoff);
      result = Apply(work.delivery, work.id);
    }
    absl::MutexLock lock(&mu);
    outcomes.push_back(
        {work.generation, std::move(result), std::move(work.delivery)});
  }
}

absl::Status Inbound::State::Settle(const Outcome& outcome) {
  const Delivery& d = outcome.delivery;
  switch (outcome.result.kind) {
    case Kind::kApplied:
      if (applied != nullptr) applied->Increment();
      return conn->Ack(d.delivery_tag);
    case Kind::kReplayed:
      if (replayed != nullptr) replayed->Increment();
      return conn->Ack(d.delivery_tag);
    case Kind::kDeadLetter:
    case Kind::kTransient:
      break;
  }
  Message copy;
  copy.exchange = spec.dead_letter_exchange;
  copy.routing_key = spec.queue;
  copy.body = d.body;
  copy.message_id = d.message_id;
  copy.content_type = d.content_type;
  for (const auto& header : d.headers) {
    if (header.first != kErrorHeader) copy.headers.push_back(header);
  }
  copy.headers.emplace_back(std::string(kErrorHeader), outcome.result.error);
  RETURN_IF_ERROR(conn->Publish(copy).status());
  ASSIGN_OR_RETURN(integration::amqp::ConfirmResult confirmed,
                   conn->WaitForConfirms(absl::Seconds(30)));
  if (!confirmed.nacked.empty()) {
    // Left unacked: the broker redelivers it, and it is refused again.
    return absl::UnavailableError(absl::StrCat(
        "the broker refused the dead letter of message ", d.message_id));
  }
  Log(LogLevel::kWarn, "inbound message dead-lettered",
      {{"queue", spec.queue},
       {"message_id", d.message_id},
       {"dead_letter_exchange", spec.dead_letter_exchange},
       {"reason", outcome.result.error}});
  if (dead_lettered != nullptr) dead_lettered->Increment();
  return conn->Ack(d.delivery_tag);
}

absl::Status Inbound::State::Serve(uint64_t generation) {
  RETURN_IF_ERROR(conn->Consume(spec.queue));
  size_t in_flight = 0;
  while (true) {
    std::deque<Outcome> done;
    bool stop = false;
    bool finished = false;
    {
      absl::MutexLock lock(&mu);
      done.swap(outcomes);
      stop = stopping;
      finished = workers_done;
    }
    for (const Outcome& outcome : done) {
      if (outcome.generation != generation) continue;  // redelivered anyway
      --in_flight;
      RETURN_IF_ERROR(Settle(outcome));
    }
    if (finished) return absl::OkStatus();
    if (stop || in_flight >= static_cast<size_t>(spec.prefetch)) {
      // Stopping: waiting for the workers' last outcomes (new deliveries
      // stay unacked and go back to the queue when the connection closes).
      // A full window: no delivery can come before an ack, so wait for an
      // outcome rather than for the socket, reading it now and then for
      // the heartbeats.
      {
        absl::MutexLock lock(&mu);
        auto settled = [this] { return !outcomes.empty() || workers_done; };
        mu.AwaitWithTimeout(absl::Condition(&settled), absl::Milliseconds(100));
      }
      if (!stop) {
        ASSIGN_OR_RETURN(std::optional<Delivery> early,
                         conn->Next(absl::ZeroDuration()));
        if (early.has_value()) {
          RETURN_IF_ERROR(Dispatch(generation, *std::move(early), in_flight));
        }
      }
      continue;
    }
    ASSIGN_OR_RETURN(std::optional<Delivery> delivery,
                     conn->Next(in_flight > 0 ? absl::Milliseconds(5)
                                              : absl::Milliseconds(100)));
    if (!delivery.has_value()) continue;
    RETURN_IF_ERROR(Dispatch(generation, *std::move(delivery), in_flight));
  }
}

absl::Status Inbound::State::Dispatch(uint64_t generation, Delivery delivery,
                                      size_t& in_flight) {
  Outcome refused;
  refused.generation = generation;
  if (delivery.message_id.empty()) {
    refused.result = DeadLetter("400 invalid_request: no message_id");
  } else {
    std::string id;
    try {
      id = spec.id_from ? spec.id_from(delivery) : CloudEventSubject(delivery);
    } catch (const std::exception&) {
      id.clear();
    }
    if (!id.empty()) {
      const size_t worker = std::hash<std::string>{}(id) % concurrency;
      ++in_flight;
      absl::MutexLock lock(&mu);
      queues[worker].push_back(
          {generation, std::move(delivery), std::move(id)});
      work_cvs[worker].Signal();
      return absl::OkStatus();
    }
    refused.result = DeadLetter(
        "400 invalid_request: no aggregate id (the CloudEvent subject, or "
        "IdFrom)");
  }
  refused.delivery = std::move(delivery);
  return Settle(refused);
}

void Inbound::State::ConsumerLoop() {
  uint64_t generation = 1;
  absl::Duration reconnect_wait = absl::Seconds(1);
  while (true) {
    if (conn == nullptr) {
      absl::StatusOr<std::unique_ptr<Connection>> c =
          Connect(spec, options.url);
      if (!c.ok()) {
        Log(LogLevel::kWarn, "inbound: cannot connect to the AMQP broker",
            {{"queue", spec.queue},
             {"error", c.status().ToString()},
             {"retry_in_ms", absl::ToInt64Milliseconds(reconnect_wait)}});
        if (SleepUnlessStopping(reconnect_wait)) return;
        reconnect_wait = std::min(reconnect_wait * 2, kMaxReconnectWait);
        continue;
      }
      conn = *std::move(c);
      ++generation;
      reconnect_wait = absl::Seconds(1);
      Log(LogLevel::kInfo, "inbound: connected", {{"queue", spec.queue}});
    }
    absl::Status served = Serve(generation);
    if (served.ok()) break;
    Log(LogLevel::kWarn, "inbound: AMQP connection lost; reconnecting",
        {{"queue", spec.queue}, {"error", served.ToString()}});
    conn.reset();
    {
      absl::MutexLock lock(&mu);
      if (stopping) return;
    }
  }
  conn.reset();
}

Inbound::Inbound(std::unique_ptr<State> state) : state_(std::move(state)) {}

absl::StatusOr<std::unique_ptr<Inbound>> Inbound::Create(
    ConsumerBuilder::Spec spec, const http::Router* router,
    InboundOptions options) {
  auto s = std::make_unique<State>();
  ASSIGN_OR_RETURN(s->conn, State::Connect(spec, options.url));
  http::Principal principal;
  principal.id = absl::StrCat("amqp:", spec.queue);
  principal.scopes = {std::string(auth::kCommandsScope)};
  s->principal = std::make_shared<const http::Principal>(std::move(principal));
  if (options.messages != nullptr) {
    s->applied = &options.messages->WithLabels({spec.queue, "applied"});
    s->replayed = &options.messages->WithLabels({spec.queue, "replayed"});
    s->dead_lettered =
        &options.messages->WithLabels({spec.queue, "dead_lettered"});
  }
  if (options.retries != nullptr) {
    s->retries = &options.retries->WithLabels({spec.queue});
  }
  s->concurrency = static_cast<size_t>(std::max(1, spec.concurrency));
  {
    absl::MutexLock lock(&s->mu);
    s->queues.resize(s->concurrency);
    s->work_cvs = std::make_unique<absl::CondVar[]>(s->concurrency);
  }
  s->spec = std::move(spec);
  s->router = router;
  s->options = std::move(options);
  return std::unique_ptr<Inbound>(new Inbound(std::move(s)));
}

Inbound::~Inbound() { Stop(); }

void Inbound::Start() {
  State& s = *state_;
  if (s.started || s.stopped) return;
  s.started = true;
  for (size_t i = 0; i < s.concurrency; ++i) {
    s.workers.emplace_back([&s, i] { s.WorkerLoop(i); });
  }
  s.consumer = std::thread([&s] { s.ConsumerLoop(); });
}

void Inbound::Stop() {
  State& s = *state_;
  if (s.stopped) return;
  s.stopped = true;
  {
    absl::MutexLock lock(&s.mu);
    s.stopping = true;
    for (size_t i = 0; i < s.concurrency; ++i) s.work_cvs[i].Signal();
    s.stop_cv.SignalAll();
  }
  for (std::thread& t : s.workers) t.join();
  {
    absl::MutexLock lock(&s.mu);
    s.workers_done = true;
  }
  if (s.consumer.joinable()) s.consumer.join();
  s.conn.reset();
}

}  // namespace cqrs::app_internal

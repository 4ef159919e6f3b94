// The application object: an app declares its events, aggregates, commands,
// projections, process managers and query routes; the framework wires them
// (connection pool or embedded PostgreSQL, migrations, one event store, the
// idempotency store, the projection runner with read-your-writes, the query
// service, the router and server, /healthz, /readyz, /metrics,
// /projections, /openapi.json, /events and /asyncapi.json for published
// events, logging, signals, ordered shutdown) and gives
// the app its command line (app/cli.h: serve, project, migrate,
// projections).
//
//   struct Incremented { int64_t by = 0; static auto Json() {...} };
//   int main(int argc, char** argv) {
//     cqrs::App app("counter_app");
//     app.Event<Incremented>("Incremented");
//     auto& counters = app.Aggregate<Counter, Incremented>("counter")
//         .On<Incremented>([](Counter& c, const Incremented& e) {
//           c.value += e.by;
//         });
//     app.Command<Increment>("POST", "/counters/{id}/increment", counters,
//         [](const Counter& c, const Increment& cmd) -> Counters::Decision {
//           return Counters::Emit(Incremented{cmd.by});
//         });
//     app.Projection("counter_values").Table("counter_values", "CREATE ...")
//         .On<Incremented>([](cqrs::ReadModel& db,
//                             const cqrs::Recorded<Incremented>& e) {
//           db.Exec("INSERT INTO {counter_values} ...", e.id, e.event.by);
//         });
//     app.Query("/counters/{id}", {"counter_values"}, ...);
//     return app.Main(argc, argv);
//   }
//
// Names are written once: an event type's wire name is given to Event<E>()
// with its C++ type (its JSON shape comes from E::Json(), see
// framework/json_shape.h), and everything else (aggregates, projection
// subscriptions, process managers) refers to the C++ type. A type used but
// never declared, a name declared twice, or a projection that subscribes to
// nothing is a definition error: Main() prints every one and exits 1 before
// it touches the database.
//
// Thread-safety: declare everything from one thread before Main(); the
// declared functions run on many threads at once and must be safe to.
#ifndef APP_APP_H_
#define APP_APP_H_

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

#include <pqxx/pqxx>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "commands/aggregate.h"
#include "commands/http_command.h"
#include "commands/idempotency.h"
#include "commands/process_manager.h"
#include "eventstore/postgres_event_store.h"
#include "framework/error_code.h"
#include "framework/event_registry.h"
#include "framework/http/router.h"
#include "framework/json_shape.h"
#include "framework/metrics.h"
#include "framework/pg_pool.h"
#include "framework/status_macros.h"
#include "integration/amqp_client.h"
#include "integration/cloud_events.h"
#include "projections/projection.h"
#include "queries/query_context.h"
#include "queries/query_service.h"

namespace cqrs {

class App;

using QueryContext = queries::QueryContext;

// Refusals a decision returns: 422 and 404 with the contract's error shape,
// `code` a snake_case word clients act on.
absl::Status Reject(absl::string_view code, absl::string_view message);
absl::Status NotFound(absl::string_view code, absl::string_view message);

// The body of a command that takes none ({} or an empty body).
struct NoBody {
  static json::Shape<NoBody> Json() { return json::Shape<NoBody>(); }
};

struct EventOptions {
  // The version Encode writes; stored events of older versions are upgraded
  // by `upcasters` (upcasters[v] turns version v into v + 1) before they are
  // decoded.
  int schema_version = 1;
  std::map<int, Upcaster> upcasters;
};

// An event as a projection handler sees it.
template <typename E>
struct Recorded {
  const E& event;
  // The aggregate's id: the stream id without "<category>-" of the
  // aggregate type declared for it (the whole stream id otherwise).
  std::string id;
  const eventstore::RecordedEvent& raw;  // stream, version, position, time
};

// A projection handler's access to its read model: the batch's transaction,
// with `{table}` placeholders in SQL naming the projection's tables.
//
//   db.Exec("INSERT INTO {counter_values} VALUES ($1, $2)", e.id, 5);
class ReadModel {
 public:
  explicit ReadModel(projections::ProjectionContext& ctx) : ctx_(ctx) {}

  // `sql` with every `{name}` of one of the projection's tables replaced by
  // its physical (schema-qualified) name. Throws std::invalid_argument for
  // a placeholder that names no table of the projection (the batch fails).
  std::string Sql(absl::string_view sql) const;

  // Runs Sql(sql) with `args` bound to $1, $2, ...
  template <typename... Args>
  pqxx::result Exec(absl::string_view sql, const Args&... args) {
    return ctx_.tx().exec_params(Sql(sql), args...);
  }

  pqxx::transaction_base& tx() { return ctx_.tx(); }
  projections::ProjectionContext& context() { return ctx_; }

 private:
  projections::ProjectionContext& ctx_;
};

// What a command did, for its response.
template <typename State>
struct CommandResult {
  std::string id;
  const State& state;
  int64_t version = 0;
  eventstore::Position position;
  bool appended = false;
};

// What a running app has; raw routes (AddCommandRoute) and process
// managers use it. Valid while the app serves.
struct AppRuntime {
  PgPool* pool = nullptr;
  eventstore::PostgresEventStore* store = nullptr;
  commands::IdempotencyStore* idempotency = nullptr;
  const commands::HttpCommandRunner* commands = nullptr;
  MetricsRegistry* metrics = nullptr;
  std::string schema;
};

namespace app_internal {

// The demangled name of a type, for messages.
std::string TypeName(const std::type_info& type);

struct EventDeclaration {
  std::string name;
  int schema_version = 1;
  std::map<int, Upcaster> upcasters;
};

// Looks up declared events by C++ type; records definition errors.
class Declarations {
 public:
  const EventDeclaration* Find(std::type_index type) const;
  void Error(std::string message) { errors_.push_back(std::move(message)); }

  std::map<std::type_index, EventDeclaration> events;
  std::vector<std::string> errors_;
};

// The JSON of a stored event of `declaration`, upgraded to its current
// schema version. kFailedPrecondition for a newer version or a missing
// upcaster.
absl::StatusOr<std::string> Upcast(const EventDeclaration& declaration,
                                   int schema_version, absl::string_view json);

class AggregateBase {
 public:
  explicit AggregateBase(std::string category)
      : category_(std::move(category)) {}
  virtual ~AggregateBase() = default;
  const std::string& category() const { return category_; }
  // Resolves the event names; called once before the app runs.
  virtual void Finalize(Declarations& declarations) = 0;

 private:
  const std::string category_;
};

// The request body as `Body`, strictly decoded (400 invalid_json or
// invalid_request naming the field).
template <typename Body>
absl::StatusOr<Body> DecodeBody(absl::string_view body) {
  if (body.find_first_not_of(" \t\r\n") == absl::string_view::npos) {
    return json::Decode<Body>("{}");
  }
  return json::Decode<Body>(body);
}

// A command's aggregate id: 400 invalid_request unless 1 to 128 bytes of
// valid UTF-8 without control characters.
absl::Status ValidateId(absl::string_view id, absl::string_view what);

// {"id": ..., "version": ..., "position": ...}
std::string DefaultCommandResponse(absl::string_view id, int64_t version,
                                   const eventstore::Position& position);

}  // namespace app_internal

// An aggregate type whose state is `State` and whose events are `Es...`
// (each declared with App::Event). Declared with App::Aggregate.
template <typename State, typename... Es>
class AggregateOf : public app_internal::AggregateBase {
 public:
  using Event = std::variant<Es...>;
  using Decision = absl::StatusOr<std::vector<Event>>;
  using Type = commands::AggregateType<State, Event>;

  // The events a decision appends, in order: `return Emit(A{...}, B{...});`
  template <typename... Ts>
  static std::vector<Event> Emit(Ts&&... events) {
    std::vector<Event> out;
    out.reserve(sizeof...(Ts));
    (out.emplace_back(std::forward<Ts>(events)), ...);
    return out;
  }

  explicit AggregateOf(std::string category)
      : AggregateBase(std::move(category)) {}

  // How an event of type E changes the state. An event without one leaves
  // the state as it is.
  template <typename E, typename Fn>
  AggregateOf& On(Fn fn) {
    static_assert((std::is_same_v<E, Es> || ...),
                  "On<E>(): E is not one of the aggregate's event types");
    appliers_[IndexOf<E>()] = [fn = std::move(fn)](State& s, const Event& e) {
      fn(s, std::get<E>(e));
    };
    return *this;
  }

  // Writes a snapshot every `events` events (State needs a JSON shape,
  // State::Json()); 0 turns snapshots off.
  AggregateOf& SnapshotEvery(int64_t events) {
    snapshot_every_ = events;
    return *this;
  }

  // The stream of aggregate `id`: "<category>-<id>".
  std::string StreamId(absl::string_view id) const {
    return absl::StrCat(category(), "-", id);
  }

  // Load / Execute for code that goes beyond App::Command (raw routes,
  // process managers). Valid once the app runs.
  const Type& type() const { return *type_; }

  void Finalize(app_internal::Declarations& declarations) override {
    (Register<Es>(declarations), ...);
    typename Type::Options options;
    options.category = category();
    options.registry = &registry_;
    options.apply = [this](State& s, const Event& e) {
      const auto& apply = appliers_[e.index()];
      if (apply) apply(s, e);
    };
    if (snapshot_every_ > 0) {
      if constexpr (json::json_internal::HasShape<State>::value) {
        options.snapshots.every = snapshot_every_;
        options.snapshots.to_json = [](const State& s) {
          return json::Encode(s);
        };
        options.snapshots.from_json = [](absl::string_view j) {
          return json::Decode<State>(j);
        };
      } else {
        declarations.Error(absl::StrCat(
            "aggregate '", category(), "': snapshots need a JSON shape of ",
            app_internal::TypeName(typeid(State)), " (State::Json())"));
      }
    }
    type_ = std::make_unique<Type>(std::move(options));
  }

 private:
  template <typename E>
  static constexpr size_t IndexOf() {
    constexpr bool kMatches[] = {std::is_same_v<E, Es>...};
    for (size_t i = 0; i < sizeof...(Es); ++i) {
      if (kMatches[i]) return i;
    }
    return sizeof...(Es);
  }

  template <typename E>
  void Register(app_internal::Declarations& declarations) {
    const app_internal::EventDeclaration* d =
        declarations.Find(std::type_index(typeid(E)));
    if (d == nullptr) {
      declarations.Error(
          absl::StrCat("aggregate '", category(), "' uses event type ",
                       app_internal::TypeName(typeid(E)),
                       " that was never declared (app.Event<T>(\"Name\"))"));
      return;
    }
    EventCodec<E> codec;
    codec.name = d->name;
    codec.schema_version = d->schema_version;
    codec.upcasters = d->upcasters;
    codec.to_json = [](const E& e) { return json::Encode(e); };
    codec.from_json = [](absl::string_view j) { return json::Decode<E>(j); };
    absl::Status s = registry_.template Register<E>(std::move(codec));
    if (!s.ok()) declarations.Error(std::string(s.message()));
  }

  std::array<std::function<void(State&, const Event&)>, sizeof...(Es)>
      appliers_;
  int64_t snapshot_every_ = 0;
  EventRegistry<Event> registry_;
  std::unique_ptr<Type> type_;
};

// Options of a command declared with App::Command, set by chaining:
//   app.Command<Open>(...).Status(201).IdFrom(...).Respond(...);
template <typename Body, typename State>
class CommandBuilder {
 public:
  struct Spec {
    std::string name;  // in cqrs_commands_total{command}
    int status = 200;
    std::function<absl::StatusOr<std::string>(const http::Request&,
                                              const Body&)>
        id;
    std::function<std::string(const CommandResult<State>&)> respond;
    std::function<absl::Status(absl::string_view)> check_id;
    bool require_body = false;
  };

  explicit CommandBuilder(std::shared_ptr<Spec> spec)
      : spec_(std::move(spec)) {}

  // The command's name in metrics (default: the last literal path segment).
  CommandBuilder& Name(std::string name) {
    spec_->name = std::move(name);
    return *this;
  }
  // The success status (default 200; 201 for a command that creates).
  CommandBuilder& Status(int status) {
    spec_->status = status;
    return *this;
  }
  // Where the aggregate id comes from (default: the path parameter {id}):
  // fn(const Body&) -> std::string, e.g. a given id or a new UUID.
  template <typename Fn>
  CommandBuilder& IdFrom(Fn fn) {
    spec_->id = [fn = std::move(fn)](const http::Request&, const Body& body)
        -> absl::StatusOr<std::string> { return std::string(fn(body)); };
    return *this;
  }
  // An app's own rule for ids (beyond 1 to 128 bytes of UTF-8 without
  // control characters): fn(absl::string_view id) returns an error, usually
  // InvalidRequest (400), to refuse the command before anything is loaded.
  template <typename Fn>
  CommandBuilder& CheckId(Fn fn) {
    spec_->check_id = std::move(fn);
    return *this;
  }
  // Refuses an empty body as invalid_json (400) instead of reading it as
  // {}: for commands whose body carries what they do.
  CommandBuilder& RequireBody() {
    spec_->require_body = true;
    return *this;
  }
  // The response body (default {"id", "version", "position"}):
  // fn(const CommandResult<State>&) returns a type with a JSON shape.
  template <typename Fn>
  CommandBuilder& Respond(Fn fn) {
    spec_->respond = [fn = std::move(fn)](const CommandResult<State>& r) {
      return json::Encode(fn(r));
    };
    return *this;
  }

 private:
  std::shared_ptr<Spec> spec_;
};

// A read model declared with App::Projection, built by chaining:
//   app.Projection("counter_values").Table(...).On<Incremented>(...);
class ProjectionBuilder {
 public:
  explicit ProjectionBuilder(std::string name);

  // Bump when the handlers or tables change meaning (then rebuild).
  ProjectionBuilder& Version(int version);
  // A table: `ddl` is CREATE TABLE {table} (...) (docs/projections.md).
  ProjectionBuilder& Table(std::string name, std::string ddl,
                           std::vector<std::string> deferred_indexes = {});
  ProjectionBuilder& OnError(projections::ErrorPolicy policy);

  // Handles events of type E: fn(ReadModel&, const Recorded<E>&), returning
  // void or absl::Status. An error or exception fails the batch (the
  // runner retries, then applies the error policy).
  template <typename E, typename Fn>
  ProjectionBuilder& On(Fn fn) {
    Handler h;
    h.type = std::type_index(typeid(E));
    h.type_name = app_internal::TypeName(typeid(E));
    h.apply = [fn = std::move(fn)](
                  ReadModel& db, const eventstore::RecordedEvent& raw,
                  absl::string_view json, std::string id) -> absl::Status {
      ASSIGN_OR_RETURN(E event, json::Decode<E>(json));
      const Recorded<E> recorded{event, std::move(id), raw};
      if constexpr (std::is_same_v<decltype(fn(db, recorded)), void>) {
        fn(db, recorded);
        return absl::OkStatus();
      } else {
        return fn(db, recorded);
      }
    };
    handlers_.push_back(std::move(h));
    return *this;
  }

  // The projection for the runner; records definition errors.
  projections::Projection Build(
      app_internal::Declarations& declarations,
      std::function<std::string(absl::string_view)> id_of) const;

 private:
  struct Handler {
    std::type_index type = std::type_index(typeid(void));
    std::string type_name;
    std::function<absl::Status(ReadModel&, const eventstore::RecordedEvent&,
                               absl::string_view json, std::string id)>
        apply;
  };
  projections::Projection p_;
  std::vector<Handler> handlers_;
};

// A queue whose messages become commands, declared with App::Consume and
// built by chaining:
//   app.Consume("deposits", "POST", "/accounts/{id}/deposit")
//       .Prefetch(64).Concurrency(4);
//   app.Consume("rewards.transfers", "POST", "/members/{id}/earn")
//       .Bind("bank.events", "account.bank.account.transfer_debited.v1")
//       .Body(EarnFromTransfer);
// See App::Consume for what runs.
class ConsumerBuilder {
 public:
  struct Spec {
    std::string queue;
    std::string method;
    std::string pattern;
    int prefetch = 64;
    int concurrency = 4;
    // The aggregate id of a message (its {id}); null: the CloudEvent
    // subject (app_internal::CloudEventSubject).
    std::function<std::string(const integration::amqp::Delivery&)> id_from;
    // Empty: "<queue>.dlx".
    std::string dead_letter_exchange;
    // Bind(): the queue is bound to each exchange with its routing key.
    struct Binding {
      std::string exchange;
      std::string routing_key;
    };
    std::vector<Binding> bindings;
    // Body(): the command body of a message; null: the message body (or a
    // structured CloudEvent's data).
    std::function<absl::StatusOr<std::string>(
        const integration::amqp::Delivery&)>
        body;
  };

  explicit ConsumerBuilder(Spec spec) : spec_(std::move(spec)) {}

  // Unacknowledged deliveries at a time (basic.qos); 1 to 65535.
  ConsumerBuilder& Prefetch(int n);
  // Workers applying messages at once; one aggregate's messages always go
  // to the same worker, in queue order. 1 to 256.
  ConsumerBuilder& Concurrency(int n);
  // The aggregate id of a message: fills {id} in the route's pattern and
  // picks the worker. An empty id dead-letters the message.
  ConsumerBuilder& IdFrom(
      std::function<std::string(const integration::amqp::Delivery&)> fn);
  // The fanout exchange refused messages are published to.
  ConsumerBuilder& DeadLetterExchange(std::string name);
  // Binds the queue to `exchange` with `routing_key` (topic patterns:
  // "account.#", "*.bank.account.transfer_debited.v1"); repeatable. At
  // start the exchange is declared as a durable topic exchange when it does
  // not exist (the declaration `APP project --amqp-declare-exchange` makes
  // for the relay, so producer and consumer may start in either order); an
  // existing exchange is used as it is, whatever its type. Both names must
  // be 1 to 255 bytes and the exchange not "amq.*" (a definition error
  // otherwise).
  ConsumerBuilder& Bind(std::string exchange, std::string routing_key);
  // Maps a message to the command's JSON body, for messages that are not
  // the command as they are (another app's events): fn(delivery) returns
  // the body, or an error status for a message that can never apply,
  // which is dead-lettered with `x-cqrs-error: 400 invalid_request:
  // <status message>` (so is a message fn throws on). Runs on the worker,
  // once per delivery; it must be thread-safe when Concurrency > 1.
  ConsumerBuilder& Body(std::function<absl::StatusOr<std::string>(
                            const integration::amqp::Delivery&)>
                            fn);

  const Spec& spec() const { return spec_; }

 private:
  friend class App;  // Finalize() fills in defaults
  Spec spec_;
};

// Where the app's command line sets things; every flag overrides these.
struct AppOptions {
  // PostgreSQL schema (--schema); default: the app's name, with '-' as '_'.
  std::string schema;
  // Embedded cluster directory (--data-dir); default ./<name>-data.
  std::string data_dir;
  std::string listen = "127.0.0.1:8080";
  // One line for --help.
  std::string description;
  // The CloudEvents `source` of the published events (a URI reference);
  // default "/<name>".
  std::string event_source;
};

class App {
 public:
  // `name` is the program's name in help and messages.
  explicit App(std::string name, AppOptions options = {});
  ~App();
  App(const App&) = delete;
  App& operator=(const App&) = delete;

  // Declares event type E under `name` (its stored and published name), its
  // JSON shape from E::Json().
  template <typename E>
  App& Event(std::string name, EventOptions options = {}) {
    static_assert(json::json_internal::HasShape<E>::value,
                  "an event type needs a JSON shape: static auto Json()");
    const std::type_index type(typeid(E));
    for (const auto& [t, d] : declarations_.events) {
      if (d.name == name) {
        declarations_.Error(
            absl::StrCat("event name '", name, "' declared twice"));
      }
    }
    if (declarations_.events.count(type) > 0) {
      declarations_.Error(absl::StrCat(
          "event type ", app_internal::TypeName(typeid(E)), " declared twice"));
    }
    declarations_.events[type] = {std::move(name), options.schema_version,
                                  std::move(options.upcasters)};
    return *this;
  }

  // Publishes event type E (declared with Event<E>) to other systems: GET
  // /events (scope events) serves its events as CloudEvents of type
  // "<public_type>.v<version>" with E's stored JSON as data
  // (integration/cloud_events.h), and GET /asyncapi.json (open) describes
  // them, `data` with the JSON Schema of E's shape. Events of types not
  // published never leave the process. A bad or repeated public type is a
  // definition error.
  template <typename E>
  App& Publish(std::string public_type, int version = 1) {
    AddPublished(typeid(E), std::move(public_type), version,
                 json::SchemaOf<E>(), nullptr);
    return *this;
  }

  // Publishes E under a public shape P of its own (a struct with a static
  // Json(), as every shape): each stored E, upgraded to its current schema
  // version by its upcasters, is decoded and mapped by `to_public`; P's
  // JSON is the CloudEvent's data and P's JSON Schema the one /asyncapi.json
  // documents. E can then change while P, the consumers' contract, stays
  // (publish a new version of P beside the old one when it must change).
  // An event that does not decode fails the feed's read that meets it.
  //
  //   app.Publish<MoneyDeposited, PublicDeposit>(
  //       "bank.account.deposited", 2,
  //       [](const MoneyDeposited& e) { return PublicDeposit{e.amount}; });
  template <typename E, typename P>
  App& Publish(std::string public_type, int version,
               std::function<P(const E&)> to_public) {
    AddPublished(typeid(E), std::move(public_type), version,
                 json::SchemaOf<P>(),
                 [to_public = std::move(to_public)](
                     absl::string_view current) -> absl::StatusOr<std::string> {
                   absl::StatusOr<E> event = json::Decode<E>(current);
                   if (!event.ok()) return event.status();
                   return json::Encode(to_public(*event));
                 });
    return *this;
  }

  // The declared name of event type E ("" and a definition error when E
  // was never declared): for projections written against raw events.
  template <typename E>
  std::string EventName() {
    const app_internal::EventDeclaration* d =
        declarations_.Find(std::type_index(typeid(E)));
    if (d == nullptr) {
      declarations_.Error(absl::StrCat("event type ",
                                       app_internal::TypeName(typeid(E)),
                                       " was never declared"));
      return "";
    }
    return d->name;
  }

  // Declares an aggregate type living in streams "<category>-<id>".
  template <typename State, typename... Es>
  AggregateOf<State, Es...>& Aggregate(std::string category) {
    auto a = std::make_unique<AggregateOf<State, Es...>>(std::move(category));
    AggregateOf<State, Es...>& ref = *a;
    aggregates_.push_back(std::move(a));
    return ref;
  }

  // Declares `method pattern` as a command on `aggregate`: the body is
  // decoded strictly as Body (Body::Json()), the aggregate loaded (id from
  // the path's {id} unless IdFrom), `decide(state, body)` returns the events
  // to append or a refusal, and conflicts are retried. If-Match and
  // Idempotency-Key work as on every command route (docs/commands.md).
  template <typename Body, typename State, typename... Es, typename Decide>
  CommandBuilder<Body, State>& Command(std::string method, std::string pattern,
                                       AggregateOf<State, Es...>& aggregate,
                                       Decide decide) {
    using Type = typename AggregateOf<State, Es...>::Type;
    AggregateOf<State, Es...>* agg = &aggregate;
    return CommandOn<Body, State, std::variant<Es...>>(
        std::move(method), std::move(pattern),
        [agg]() -> const Type& { return agg->type(); }, std::move(decide));
  }

  // The same on an aggregate type built outside the app
  // (commands/aggregate.h), for apps that keep theirs: its event types must
  // be declared with Event<E>(), under the names its registry uses. `type`
  // must outlive the app's use.
  template <typename Body, typename State, typename Ev, typename Decide>
  CommandBuilder<Body, State>& Command(
      std::string method, std::string pattern,
      const commands::AggregateType<State, Ev>& type, Decide decide) {
    using Type = commands::AggregateType<State, Ev>;
    const Type* t = &type;
    return CommandOn<Body, State, Ev>(
        std::move(method), std::move(pattern),
        [t]() -> const Type& { return *t; }, std::move(decide));
  }

  // A command route written by hand: `handler` runs inside the command
  // runner (If-Match, Idempotency-Key, errors to responses) with the store
  // to use. `name` gives its name in metrics when the route is registered.
  using RawCommand = std::function<absl::StatusOr<http::Response>(
      const http::Request&, eventstore::EventStore&,
      const commands::CommandContext&)>;
  void AddCommandRoute(std::string method, std::string pattern,
                       RawCommand handler, std::function<std::string()> name);

  // Declares a read model built by typed handlers (ProjectionBuilder).
  ProjectionBuilder& Projection(std::string name);
  // A read model written against raw event batches (for speed: one
  // statement per batch). Its event_types must be declared names.
  void AddProjection(projections::Projection projection);
  // A process manager (commands/process_manager.h): its commands append
  // through ctx.store(), in the batch's transaction.
  void AddProcessManager(commands::ProcessManager pm);

  // A query route: GET `pattern`, answered by `handler`
  // (absl::StatusOr<http::Response>(QueryContext&)) from the tables of
  // `projections`, whose progress read-your-writes waits for
  // (queries/query_context.h: q.One, q.Many, q.Page, `{table}` in SQL).
  template <typename Fn>
  void Query(std::string pattern, std::vector<std::string> projections,
             Fn handler) {
    queries::QueryRoute route;
    route.pattern = std::move(pattern);
    route.projections = std::move(projections);
    route.handler = std::move(handler);
    AddQuery(std::move(route));
  }
  // Applies the messages of the AMQP queue `queue` as the command declared
  // at `method pattern` (App::Command, a definition error otherwise), when
  // the app runs with an AMQP broker (`serve --amqp-url`,
  // ServeOptions::amqp_url; docs/amqp.md "Inbound"). The queue (durable,
  // dead-lettering to DeadLetterExchange), that fanout exchange and the
  // queue "<queue>.dead" bound to it are declared at start. Each message
  // runs through the route's own handler, exactly as an HTTP request with
  // `Idempotency-Key: <message_id>`, so a redelivered message applies once;
  // the command body is the message body (binary CloudEvents or plain
  // JSON), or the `data` of a structured CloudEvent
  // (application/cloudevents+json). A 2xx answer acks the message; a 4xx
  // refusal (bad body, business rule, no message_id) publishes a copy to
  // the dead-letter exchange with the header `x-cqrs-error: <status>
  // <code>: <message>`, then acks; a 5xx or 429 is retried with backoff
  // (100 ms doubling to 5 s) until it applies or the process stops.
  // ConsumerBuilder::Bind subscribes the queue to other apps' exchanges and
  // ConsumerBuilder::Body maps their messages to the command's body
  // (docs/choreography.md).
  ConsumerBuilder& Consume(std::string queue, std::string method,
                           std::string pattern);

  // A query route in full (queries/query_service.h: batch handlers,
  // prepared statements, snapshots).
  void AddQuery(queries::QueryRoute route);

  // A route outside the command and query machinery (a constant document,
  // a probe): `handler` runs as `options` say (framework/http/router.h),
  // without If-Match, Idempotency-Key or read-your-writes. It is not in
  // the generated OpenAPI document. Unless `options.access` says otherwise
  // it needs the scope "queries" for GET and HEAD, "commands" for any
  // other method.
  void AddRoute(std::string method, std::string pattern, http::Handler handler,
                http::RouteOptions options = {});

  // Serves `document` at GET /openapi.json instead of the generated one.
  void SetOpenApi(std::string document);

  // The command line: serve, project, migrate, projections ... (app/cli.h).
  // Returns the process's exit code: 0 success, 1 failure, 2 usage error.
  int Main(int argc, char** argv);

  // Parses and checks the command line exactly as Main() does, printing
  // the same usage errors (and --help), and runs nothing: no database, no
  // server. Returns 0 for a command line Main() would run, 1 for a
  // definition error, 2 for a usage error. For the CLI's fuzz harness
  // (fuzz/cli_fuzzer.cc) and for tools that check a command line first.
  int CheckCommandLine(int argc, char** argv);

  // The aggregate id in `stream`: without "<category>-" of the declared
  // aggregate type whose category prefixes it (the longest), else `stream`.
  std::string IdOf(absl::string_view stream) const;

  const std::string& name() const { return name_; }
  const AppOptions& options() const { return options_; }

  // For app/ itself (cli.cc, runtime.cc).
  struct Parts;
  // Resolves every declaration; the definition errors, if any.
  std::vector<std::string> Finalize();
  // What Publish() declared (complete after Finalize()).
  const integration::Publication& publication() const;
  const Parts& parts() const { return *parts_; }

 private:
  // Main() when `run`, CheckCommandLine() when not.
  int CommandLine(int argc, char** argv, bool run);

  // `to_public`: the public data of an event's JSON at its current schema
  // version; null for the stored data as it is.
  void AddPublished(
      const std::type_info& type, std::string public_type, int version,
      std::string data_schema,
      std::function<absl::StatusOr<std::string>(absl::string_view)> to_public);
  // Command() on the aggregate type `type()` returns (valid once the app
  // runs).
  template <typename Body, typename State, typename Ev, typename Decide>
  CommandBuilder<Body, State>& CommandOn(
      std::string method, std::string pattern,
      std::function<const commands::AggregateType<State, Ev>&()> type,
      Decide decide) {
    using Builder = CommandBuilder<Body, State>;
    using Decision = absl::StatusOr<std::vector<Ev>>;
    auto spec = std::make_shared<typename Builder::Spec>();
    spec->name = DefaultCommandName(pattern);
    AddCommandRoute(
        std::move(method), std::move(pattern),
        [spec, type, decide](const http::Request& request,
                             eventstore::EventStore& store,
                             const commands::CommandContext& ctx)
            -> absl::StatusOr<http::Response> {
          ASSIGN_OR_RETURN(
              Body body, spec->require_body
                             ? json::Decode<Body>(request.body())
                             : app_internal::DecodeBody<Body>(request.body()));
          std::string id;
          if (spec->id) {
            ASSIGN_OR_RETURN(id, spec->id(request, body));
          } else {
            id = std::string(request.PathParam("id"));
          }
          if (spec->check_id) RETURN_IF_ERROR(spec->check_id(id));
          RETURN_IF_ERROR(app_internal::ValidateId(id, "id"));
          ASSIGN_OR_RETURN(
              auto out, type().Execute(store, id, ctx.metadata, ctx.execute,
                                       [&](const State& state, int64_t) {
                                         return Decision(decide(state, body));
                                       }));
          const CommandResult<State> result{id, out.state, out.version,
                                            out.position, out.appended};
          return http::JsonResponse(spec->status,
                                    spec->respond
                                        ? spec->respond(result)
                                        : app_internal::DefaultCommandResponse(
                                              id, out.version, out.position));
        },
        [spec] { return spec->name; });
    SetLastCommandSchema(json::SchemaOf<Body>());
    auto builder = std::make_shared<Builder>(spec);
    Builder& ref = *builder;
    commands_.push_back(std::move(builder));
    return ref;
  }

  static std::string DefaultCommandName(absl::string_view pattern);
  // Finalize() for the consumers (App::Consume).
  void FinalizeConsumers();
  // The JSON Schema of the body of the last command route added.
  void SetLastCommandSchema(std::string schema);

  const std::string name_;
  AppOptions options_;
  app_internal::Declarations declarations_;
  std::vector<std::unique_ptr<app_internal::AggregateBase>> aggregates_;
  std::vector<std::shared_ptr<void>> commands_;
  std::unique_ptr<Parts> parts_;
  bool finalized_ = false;
};

}  // namespace cqrs

#endif  // APP_APP_H_

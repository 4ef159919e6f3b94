// counter_app: the smallest complete application on the cqrs framework.
// Named counters that only go up:
//
//   POST /counters/{id}/increment {"by": 5}  command: appends `Incremented`
//   GET  /counters/{id}                      query: reads the read model
//
// The command appends an event to the PostgreSQL event store; a projection
// folds the events into the table `counter_values`; the query reads that
// table. Reads lag the commands slightly; a client that passes a command's
// `position` back as X-Min-Position waits until its write is visible.
//
//   DATABASE_URL=postgresql:///mydb ./counter_app     # serves 127.0.0.1:8080
//   curl --json '{"by":5}' localhost:8080/counters/c1/increment
//   # {"id":"c1","value":5,"version":1,"position":"745.1"}
//   curl localhost:8080/counters/c1 -H 'X-Min-Position: 745.1'
//   # {"id":"c1","value":5}
//
// `counter_app --self-test` runs one command and one query against a
// throwaway schema and exits (tests/packaging/ uses it).
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "commands/aggregate.h"
#include "commands/http_command.h"
#include "commands/idempotency.h"
#include "eventstore/postgres_event_store.h"
#include "framework/event_registry.h"
#include "framework/http/json_body.h"
#include "framework/http/server.h"
#include "framework/http/status_mapping.h"
#include "framework/pg_pool.h"
#include "framework/status_macros.h"
#include "projections/runner.h"
#include "queries/progress_tracker.h"
#include "queries/query_service.h"
#include "rapidjson/document.h"
#include "self_test.h"

namespace {

namespace commands = cqrs::commands;
namespace eventstore = cqrs::eventstore;
namespace http = cqrs::http;
namespace projections = cqrs::projections;
namespace queries = cqrs::queries;

// --- The domain: events, state, and how an event changes the state. -------

struct Incremented {
  int64_t by = 0;
};
using CounterEvent = std::variant<Incremented>;  // one alternative per event
struct Counter {
  int64_t value = 0;
};
using CounterType = commands::AggregateType<Counter, CounterEvent>;

// How events are named and stored (JSON).
const cqrs::EventRegistry<CounterEvent>& CounterEvents() {
  static const auto* registry = [] {
    auto* r = new cqrs::EventRegistry<CounterEvent>();
    cqrs::EventCodec<Incremented> codec;
    codec.name = "Incremented";
    codec.to_json = [](const Incremented& e) {
      return absl::StrCat(R"({"by":)", e.by, "}");
    };
    codec.from_json =
        [](absl::string_view json) -> absl::StatusOr<Incremented> {
      rapidjson::Document doc;
      RETURN_IF_ERROR(http::ParseJsonBody(json, &doc));
      ASSIGN_OR_RETURN(int64_t by, http::RequiredInt64(doc, "by"));
      return Incremented{by};
    };
    // Cannot fail: one complete codec.
    r->Register(std::move(codec)).IgnoreError();
    return r;
  }();
  return *registry;
}

// Counters live in the streams "counter-<id>".
const CounterType& Counters() {
  static const auto* type = [] {
    CounterType::Options options;
    options.category = "counter";
    options.registry = &CounterEvents();
    options.apply = [](Counter& c, const CounterEvent& e) {
      c.value += std::get<Incremented>(e).by;
    };
    return new CounterType(std::move(options));
  }();
  return *type;
}

// Ids go into JSON unescaped below, so they are kept to safe characters.
absl::Status ValidateId(absl::string_view id) {
  bool ok = !id.empty() && id.size() <= 64;
  for (char c : id) {
    ok = ok && (absl::ascii_isalnum(c) || c == '-' || c == '_');
  }
  return ok ? absl::OkStatus()
            : http::InvalidRequest("id must be 1..64 of [A-Za-z0-9_-]");
}

// --- The command: parse, decide, append. ----------------------------------

// The runner adds If-Match, Idempotency-Key and error responses.
http::Response Increment(const commands::HttpCommandRunner& runner,
                         const http::Request& request) {
  return runner.Run(
      request, "increment",
      [&](eventstore::EventStore& store, const commands::CommandContext& ctx)
          -> absl::StatusOr<http::Response> {
        const absl::string_view id = request.PathParam("id");
        RETURN_IF_ERROR(ValidateId(id));
        rapidjson::Document body;
        RETURN_IF_ERROR(http::ParseJsonBody(request.body(), &body));
        RETURN_IF_ERROR(http::RejectUnknownFields(body, {"by"}));
        constexpr http::Int64Bounds kBy{1, 1000};
        ASSIGN_OR_RETURN(int64_t by, http::RequiredInt64(body, "by", kBy));
        // The decision sees the current state; conflicts with concurrent
        // commands are retried by Execute().
        auto decide =
            [by](const Counter& c,
                 int64_t) -> absl::StatusOr<std::vector<CounterEvent>> {
          if (c.value > 1000000000 - by) {  // a business rule: 422
            return http::WithErrorCode(
                absl::FailedPreconditionError("counters stop at 10^9"),
                "counter_full");
          }
          return std::vector<CounterEvent>{Incremented{by}};
        };
        ASSIGN_OR_RETURN(auto done, Counters().Execute(store, id, ctx.metadata,
                                                       ctx.execute, decide));
        return http::JsonResponse(
            200,
            absl::StrCat(R"({"id":")", id, R"(","value":)", done.state.value,
                         R"(,"version":)", done.version, R"(,"position":")",
                         done.position.ToToken(), R"("})"));
      });
}

// --- The read model: a projection and a query on it. ----------------------

projections::Projection CounterValues() {
  projections::Projection p;
  p.name = "counter_values";
  p.event_types = {"Incremented"};
  p.tables = {{"counter_values",
               "CREATE TABLE {table} (id text PRIMARY KEY, value bigint)"}};
  // Runs in the transaction that also moves the projection's checkpoint,
  // so every event counts exactly once. One statement per event keeps the
  // example short; a busy projection writes a batch in one statement.
  p.apply = [](projections::ProjectionContext& ctx,
               projections::EventBatch events) -> absl::Status {
    const std::string sql = absl::StrCat(
        "INSERT INTO ", ctx.Table("counter_values"),
        " AS t VALUES ($1, $2) "
        "ON CONFLICT (id) DO UPDATE SET value = t.value + EXCLUDED.value");
    for (const eventstore::RecordedEvent& e : events) {
      ASSIGN_OR_RETURN(
          CounterEvent event,
          CounterEvents().Decode(e.event_type, e.schema_version, e.data));
      const std::string id(absl::StripPrefix(e.stream_id, "counter-"));
      ctx.tx().exec_params(sql, id, std::get<Incremented>(event).by);
    }
    return absl::OkStatus();
  };
  return p;
}

queries::QueryRoute GetCounter(const std::string& schema) {
  queries::QueryRoute route;
  route.pattern = "/counters/{id}";
  route.projections = {"counter_values"};  // what X-Min-Position waits for
  route.handler =
      [schema](const http::Request& request,
               pqxx::transaction_base& tx) -> absl::StatusOr<http::Response> {
    const absl::string_view id = request.PathParam("id");
    RETURN_IF_ERROR(ValidateId(id));
    const pqxx::result rows =
        tx.exec_params(absl::StrCat("SELECT value FROM ", schema,
                                    ".counter_values WHERE id = $1"),
                       std::string(id));
    if (rows.empty()) {
      return http::WithErrorCode(absl::NotFoundError("no such counter"),
                                 "counter_not_found");
    }
    return http::JsonResponse(200,
                              absl::StrCat(R"({"id":")", id, R"(","value":)",
                                           rows[0][0].as<int64_t>(), "}"));
  };
  return route;
}

// --- Wiring. ---------------------------------------------------------------

enum class Mode { kServe, kSelfTest };

absl::Status Run(const std::string& url, const std::string& schema, Mode mode) {
  // Declared in dependency order: on return they are destroyed in reverse,
  // the server first (it drains its requests), the pool last.
  cqrs::PgPoolOptions pool_options;
  pool_options.conninfo = url;
  ASSIGN_OR_RETURN(auto pool, cqrs::PgPool::Create(pool_options));
  // Each part creates or upgrades its tables (idempotent).
  RETURN_IF_ERROR(eventstore::PostgresEventStore::Migrate(*pool, schema));
  RETURN_IF_ERROR(projections::ProjectionRunner::Migrate(*pool, schema));
  RETURN_IF_ERROR(commands::PostgresIdempotencyStore::Migrate(*pool, schema));

  eventstore::PostgresEventStoreOptions store_options;
  store_options.schema = schema;
  ASSIGN_OR_RETURN(auto store, eventstore::PostgresEventStore::Create(
                                   pool.get(), store_options));
  ASSIGN_OR_RETURN(auto idempotency, commands::PostgresIdempotencyStore::Create(
                                         pool.get(), store.get(), schema));
  const commands::HttpCommandRunner runner(store.get(), idempotency.get());

  // The tracker learns each projection's progress, for X-Min-Position.
  queries::ProgressTrackerOptions tracker_options;
  tracker_options.schema = schema;
  ASSIGN_OR_RETURN(auto tracker, queries::ProgressTracker::Create(
                                     pool.get(), tracker_options));
  projections::ProjectionRunnerOptions runner_options;
  runner_options.schema = schema;
  runner_options.on_progress = [t = tracker.get()](absl::string_view name,
                                                   eventstore::Position p) {
    t->Record(name, p);
  };
  ASSIGN_OR_RETURN(auto projector, projections::ProjectionRunner::Create(
                                       pool.get(), store.get(),
                                       {CounterValues()}, runner_options));
  queries::QueryServiceOptions query_options;
  query_options.conninfo = url;
  query_options.threads = 2;
  ASSIGN_OR_RETURN(auto query_service,
                   queries::QueryService::Create(tracker.get(), query_options));

  http::Router router;
  http::RouteOptions json_body;
  json_body.require_json_body = true;
  router.Add(
      "POST", "/counters/{id}/increment",
      [&runner](const http::Request& r) { return Increment(runner, r); },
      json_body);
  query_service->Add(router, GetCounter(schema));

  http::ServerOptions server_options;
  server_options.listen_address =
      mode == Mode::kSelfTest ? "127.0.0.1:0" : "127.0.0.1:8080";
  ASSIGN_OR_RETURN(auto server, http::Server::Create(server_options, &router));
  tracker->Start();
  projector->Start();
  if (mode == Mode::kServe) return server->Run();  // until SIGINT or SIGTERM
  RETURN_IF_ERROR(server->Start());
  return counter_app::RunSelfTest(server->port());
}

}  // namespace

int main(int argc, char** argv) {
  const char* url = std::getenv("DATABASE_URL");
  const bool self_test = argc == 2 && std::string(argv[1]) == "--self-test";
  if (url == nullptr || *url == '\0' || (argc > 1 && !self_test)) {
    std::cerr << "usage: DATABASE_URL=postgresql://... counter_app "
                 "[--self-test]\n";
    return 2;
  }
  // The self-test works in a schema of its own and drops it afterwards.
  const std::string schema =
      self_test ? absl::StrCat("counter_self_test_", getpid()) : "counters";
  absl::Status s = Run(url, schema, self_test ? Mode::kSelfTest : Mode::kServe);
  if (self_test) s.Update(counter_app::DropSchema(url, schema));
  if (!s.ok()) {
    std::cerr << "counter_app: " << s << "\n";
    return 1;
  }
  if (self_test) std::cout << "counter_app: self-test passed\n";
  return 0;
}

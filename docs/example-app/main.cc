// counter_app: the smallest complete application on the cqrs framework.
// Named counters that only go up:
//
//   POST /counters/{id}/increment {"by": 5}  command: appends `Incremented`
//   GET  /counters/{id}                      query: reads `counter_values`
//
//   counter_app serve           # embedded PostgreSQL in ./counter_app-data
//   counter_app serve --database-url postgresql:///mydb --listen :8080
//   counter_app projections rebuild counter_values    # and --help for all
#include "app/app.h"

namespace json = cqrs::json;

struct Incremented {  // the event
  int64_t by = 0;
  static auto Json() {
    return json::Shape<Incremented>().Field("by", &Incremented::by);
  }
};

struct Increment {  // the command's body
  int64_t by = 0;
  static auto Json() {
    return json::Shape<Increment>().Field("by", &Increment::by,
                                          json::Range(1, 1000));
  }
};

struct Counter {  // the aggregate's state
  int64_t value = 0;
};
using Counters = cqrs::AggregateOf<Counter, Incremented>;

int main(int argc, char** argv) {
  cqrs::App app("counter_app");
  app.Event<Incremented>("Incremented");
  Counters& counters =
      app.Aggregate<Counter, Incremented>("counter").On<Incremented>(
          [](Counter& c, const Incremented& e) { c.value += e.by; });
  // Conflicts with concurrent commands are retried: the decision always
  // sees the current state.
  app.Command<Increment>(
      "POST", "/counters/{id}/increment", counters,
      [](const Counter& c, const Increment& cmd) -> Counters::Decision {
        if (c.value > 1000000000 - cmd.by) {
          return cqrs::Reject("counter_full", "counters stop at 10^9");
        }
        return Counters::Emit(Incremented{cmd.by});
      });
  // The read model: written in the transaction that moves its checkpoint,
  // so each event counts once.
  app.Projection("counter_values")
      .Table("counter_values",
             "CREATE TABLE {table} (id text PRIMARY KEY, value bigint)")
      .On<Incremented>(
          [](cqrs::ReadModel& db, const cqrs::Recorded<Incremented>& e) {
            db.Exec(
                "INSERT INTO {counter_values} AS t VALUES ($1, $2) ON "
                "CONFLICT (id) DO UPDATE SET value = t.value + $2",
                e.id, e.event.by);
          });
  // With X-Min-Position (a command's `position`) it waits for that write.
  app.Query("/counters/{id}", {"counter_values"}, [](cqrs::QueryContext& q) {
    return q.One(
        "SELECT id, value FROM {counter_values} "
        "WHERE id = $1",
        {q.Param("id")}, "counter_not_found");
  });
  return app.Main(argc, argv);
}

// Access to the test PostgreSQL for tests tagged [pg].
//
//   cqrs::testing::TestSchema schema;           // fresh schema, dropped after
//   auto store = schema.NewEventStore();        // migrated PostgresEventStore
//   CHECK(schema.StreamOrderInversions() == 0); // the log keeps stream order
//
// The connection string comes from CQRS_TEST_DATABASE_URL, which scripts/test
// sets after starting its throwaway cluster. Without it, the test FAILS with
// a message saying to run scripts/test; it never skips.
//
// Thread-safety: TestSchema and TestDatabase are created and destroyed on the
// test's thread; a TestSchema's pool and stores are thread-safe.
#ifndef TESTS_SUPPORT_TEST_DATABASE_H_
#define TESTS_SUPPORT_TEST_DATABASE_H_

#include <memory>
#include <string>

#include "eventstore/postgres_event_store.h"
#include "framework/pg_pool.h"

namespace cqrs::testing {

inline constexpr char kTestDatabaseEnv[] = "CQRS_TEST_DATABASE_URL";

// The test database's connection string; fails the current test when the
// variable is missing.
std::string TestDatabaseUrl();

inline constexpr char kTestPgControlEnv[] = "CQRS_TEST_PG_CONTROL";

// Runs scripts/pg-node `command` ("restart": crashed with pg_ctl -m
// immediate and started again; "stop"; "start") on the test cluster, and
// fails the test when it fails or CQRS_TEST_PG_CONTROL (set by scripts/test)
// is missing. Every session of the cluster ends: tests using it run alone
// (RUN_SERIAL).
void ControlTestDatabase(const std::string& command);

// `url` (a libpq connection string or URI) with its database replaced by
// `dbname`.
std::string WithDatabase(const std::string& url, const std::string& dbname);

// Counts, over the whole events table of the event store in `schema`, the
// pairs of consecutive versions of one stream that the global order
// ((transaction_id, global_position), what readers follow) puts the other
// way round. 0 when every stream's versions are in order in the global
// order (docs/event-store.md).
long long StreamOrderInversions(const std::string& url,
                                const std::string& schema);

// Ends every client session of the database `url` names, except the one it
// opens for this, with pg_terminate_backend (the fault "every session
// killed"); returns how many ended. Throws pqxx::failure when the database
// cannot be reached.
long long TerminateOtherSessions(const std::string& url);

// A database of its own on the test cluster, for tests that need database
// settings (a collation): created with a unique name and `create_options`
// appended to CREATE DATABASE ... TEMPLATE template0, dropped (with any
// session still connected) on destruction.
//
//   TestDatabase icu("LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
//                    "LOCALE 'C.UTF-8'");
//   TestSchema schema(icu.url(), /*pool_size=*/8);
class TestDatabase {
 public:
  explicit TestDatabase(const std::string& create_options);
  ~TestDatabase();
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  const std::string& name() const { return name_; }
  // TestDatabaseUrl() connected to this database.
  const std::string& url() const { return url_; }

 private:
  std::string admin_url_;  // the test database, to create and drop this one
  std::string name_;
  std::string url_;
};

// A schema of its own for one test case: created (with a unique name) on
// construction, dropped with everything in it on destruction.
class TestSchema {
 public:
  explicit TestSchema(int pool_size = 20);
  // The same in the database `url` connects to (a TestDatabase's url()).
  TestSchema(std::string url, int pool_size);
  ~TestSchema();

  const std::string& name() const { return name_; }
  const std::string& url() const { return url_; }
  PgPool& pool() { return *pool_; }

  // A PostgresEventStore on this schema, migrated on first call.
  std::unique_ptr<eventstore::PostgresEventStore> NewEventStore(
      eventstore::PostgresEventStoreOptions options = {});

  // Runs one SQL statement on a fresh connection (test setup, assertions).
  void Exec(const std::string& sql);
  // Ends every server session of pool() with pg_terminate_backend; returns
  // how many there were.
  int TerminatePoolSessions();
  // Runs a query returning one bigint.
  long long QueryInt(const std::string& sql);

  // The position token of the newest event in the schema's log ("0.0" when
  // it is empty), for X-Min-Position: once an app is quiet (every command
  // answered, every process manager done), a read at it reflects
  // everything. A query's own X-Projection-Position does not: it is the
  // position taken before its read, which may show more than it names.
  std::string LogHead();
  // StreamOrderInversions() of this schema's event store.
  long long StreamOrderInversions();

 private:
  std::string url_;
  std::string name_;
  std::unique_ptr<PgPool> pool_;
  bool migrated_ = false;
};

}  // namespace cqrs::testing

#endif  // TESTS_SUPPORT_TEST_DATABASE_H_

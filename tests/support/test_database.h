// Access to the test PostgreSQL for tests tagged [pg].
//
//   cqrs::testing::TestSchema schema;           // fresh schema, dropped after
//   auto store = schema.NewEventStore();        // migrated PostgresEventStore
//
// The connection string comes from CQRS_TEST_DATABASE_URL, which scripts/test
// sets after starting its throwaway cluster. Without it, the test FAILS with
// a message saying to run scripts/test; it never skips.
//
// Thread-safety: TestSchema is created and destroyed on the test's thread;
// its pool and stores are thread-safe.
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

// A schema of its own for one test case: created (with a unique name) on
// construction, dropped with everything in it on destruction.
class TestSchema {
 public:
  explicit TestSchema(int pool_size = 20);
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

 private:
  std::string url_;
  std::string name_;
  std::unique_ptr<PgPool> pool_;
  bool migrated_ = false;
};

}  // namespace cqrs::testing

#endif  // TESTS_SUPPORT_TEST_DATABASE_H_

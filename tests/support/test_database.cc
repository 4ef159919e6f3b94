#include "tests/support/test_database.h"

#include <cstdlib>
#include <utility>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "framework/uuid.h"
#include "tests/support/child_process.h"

namespace cqrs::testing {

std::string TestDatabaseUrl() {
  const char* url = std::getenv(kTestDatabaseEnv);
  if (url == nullptr || *url == '\0') {
    FAIL(kTestDatabaseEnv
         << " is not set: this test needs PostgreSQL. Run the suite with "
            "scripts/test, which starts a throwaway cluster and sets it.");
  }
  return url;
}

void ControlTestDatabase(const std::string& command) {
  const char* script = std::getenv(kTestPgControlEnv);
  if (script == nullptr || *script == '\0') {
    FAIL(kTestPgControlEnv
         << " is not set: this test restarts PostgreSQL. Run the suite with "
            "scripts/test, which sets it to scripts/pg-node.");
  }
  const ShellResult result =
      RunShell(absl::StrCat(script, " ", command, " 2>&1"));
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
}

std::string WithDatabase(const std::string& url, const std::string& dbname) {
  // libpq takes the last value of a repeated keyword, and a URI's query
  // parameters override its path.
  if (absl::StartsWith(url, "postgresql://") ||
      absl::StartsWith(url, "postgres://")) {
    return absl::StrCat(url, url.find('?') == std::string::npos ? "?" : "&",
                        "dbname=", dbname);
  }
  return absl::StrCat(url, " dbname=", dbname);
}

long long StreamOrderInversions(const std::string& url,
                                const std::string& schema) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  return tx
      .exec1(absl::StrCat(
          "SELECT count(*) FROM (SELECT transaction_id, global_position, "
          "lag(transaction_id) OVER w AS prev_xid, "
          "lag(global_position) OVER w AS prev_position FROM ",
          schema,
          ".events WINDOW w AS (PARTITION BY stream_id "
          "ORDER BY stream_version)) e WHERE prev_xid IS NOT NULL AND "
          "(transaction_id, global_position) < (prev_xid, prev_position)"))[0]
      .as<long long>();
}

long long TerminateOtherSessions(const std::string& url) {
  pqxx::connection conn(url);
  pqxx::nontransaction tx(conn);
  return tx
      .exec1(
          "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
          "WHERE datname = current_database() AND pid <> pg_backend_pid() "
          "AND backend_type = 'client backend'")[0]
      .as<long long>();
}

TestDatabase::TestDatabase(const std::string& create_options)
    : admin_url_(TestDatabaseUrl()),
      name_(absl::StrCat("t_", NewUuid().substr(24))),
      url_(WithDatabase(admin_url_, name_)) {
  pqxx::connection conn(admin_url_);
  pqxx::nontransaction tx(conn);
  tx.exec(absl::StrCat("CREATE DATABASE ", name_, " TEMPLATE template0 ",
                       create_options));
}

TestDatabase::~TestDatabase() {
  try {
    pqxx::connection conn(admin_url_);
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat("DROP DATABASE IF EXISTS ", name_, " WITH (FORCE)"));
  } catch (const std::exception&) {
    // Best effort: the whole cluster is thrown away after the run anyway.
  }
}

TestSchema::TestSchema(int pool_size)
    : TestSchema(TestDatabaseUrl(), pool_size) {}

TestSchema::TestSchema(std::string url, int pool_size) : url_(std::move(url)) {
  std::string suffix = NewUuid().substr(24);  // 12 random hex digits
  name_ = absl::StrCat("t_", suffix);
  Exec(absl::StrCat("CREATE SCHEMA ", name_));
  // Tagging the pool's sessions lets fault-injection tests find them in
  // pg_stat_activity.
  PgPoolOptions options;
  options.conninfo = absl::StrCat(url_, " application_name=", name_);
  options.max_connections = pool_size;
  absl::StatusOr<std::unique_ptr<PgPool>> pool =
      PgPool::Create(std::move(options));
  REQUIRE(pool.ok());
  pool_ = *std::move(pool);
}

TestSchema::~TestSchema() {
  pool_.reset();
  try {
    pqxx::connection conn(url_);
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat("DROP SCHEMA IF EXISTS ", name_, " CASCADE"));
  } catch (const std::exception&) {
    // Best effort: the whole cluster is thrown away after the run anyway.
  }
}

std::unique_ptr<eventstore::PostgresEventStore> TestSchema::NewEventStore(
    eventstore::PostgresEventStoreOptions options) {
  if (!migrated_) {
    absl::Status migrated =
        eventstore::PostgresEventStore::Migrate(*pool_, name_);
    INFO(migrated.ToString());
    REQUIRE(migrated.ok());
    migrated_ = true;
  }
  options.schema = name_;
  auto store = eventstore::PostgresEventStore::Create(pool_.get(), options);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  return *std::move(store);
}

void TestSchema::Exec(const std::string& sql) {
  pqxx::connection conn(url_);
  pqxx::nontransaction tx(conn);
  tx.exec(sql);
}

int TestSchema::TerminatePoolSessions() {
  return static_cast<int>(QueryInt(absl::StrCat(
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
      "WHERE application_name = '",
      name_, "'")));
}

std::string TestSchema::LogHead() {
  pqxx::connection conn(url_);
  pqxx::nontransaction tx(conn);
  const pqxx::result head = tx.exec(absl::StrCat(
      "SELECT transaction_id::text || '.' || global_position::text FROM ",
      name_,
      ".events ORDER BY transaction_id DESC, global_position DESC LIMIT 1"));
  return head.empty() ? "0.0" : head[0][0].as<std::string>();
}

long long TestSchema::QueryInt(const std::string& sql) {
  pqxx::connection conn(url_);
  pqxx::nontransaction tx(conn);
  return tx.exec1(sql)[0].as<long long>();
}

long long TestSchema::StreamOrderInversions() {
  return cqrs::testing::StreamOrderInversions(url_, name_);
}

}  // namespace cqrs::testing

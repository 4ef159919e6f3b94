#include "framework/migrations.h"

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "framework/status_macros.h"

namespace cqrs {

absl::Status ValidateSchemaName(absl::string_view schema) {
  bool ok = !schema.empty() && schema.size() <= 63 &&
            !(schema[0] >= '0' && schema[0] <= '9');
  for (char c : schema) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid schema name '", schema,
        "': use 1 to 63 characters of [a-z0-9_], not starting with a digit"));
  }
  return absl::OkStatus();
}

std::string WithSchema(absl::string_view sql, absl::string_view schema) {
  return absl::StrReplaceAll(sql, {{"{s}", schema}});
}

absl::Status ApplyMigrations(PgPool& pool, absl::string_view schema,
                             absl::string_view component,
                             absl::Span<const Migration> migrations) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  const std::string s(schema);
  const std::string c(component);
  return pool.Run(
      PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        pqxx::work tx(conn);
        // One migrator per schema at a time, across processes.
        tx.exec_params("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))",
                       absl::StrCat("cqrs.migrate.", s));
        tx.exec(WithSchema("CREATE SCHEMA IF NOT EXISTS {s}", s));
        tx.exec(
            WithSchema("CREATE TABLE IF NOT EXISTS {s}.schema_migrations ("
                       " component text NOT NULL, version integer NOT NULL,"
                       " description text NOT NULL,"
                       " applied_at timestamptz NOT NULL DEFAULT now(),"
                       " PRIMARY KEY (component, version))",
                       s));
        const int current =
            tx.exec_params1(WithSchema("SELECT coalesce(max(version), 0) FROM "
                                       "{s}.schema_migrations "
                                       "WHERE component = $1",
                                       s),
                            c)[0]
                .as<int>();
        for (const Migration& m : migrations) {
          if (m.version <= current) continue;
          tx.exec(WithSchema(m.sql, s));
          tx.exec_params(WithSchema("INSERT INTO {s}.schema_migrations "
                                    "(component, version, description) "
                                    "VALUES ($1, $2, $3)",
                                    s),
                         c, m.version, std::string(m.description));
        }
        tx.commit();
        return absl::OkStatus();
      });
}

absl::StatusOr<int> MigratedVersion(PgPool& pool, absl::string_view schema,
                                    absl::string_view component) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  int version = 0;
  RETURN_IF_ERROR(
      pool.Run(PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        pqxx::nontransaction tx(conn);
        const bool exists =
            tx.exec_params1("SELECT to_regclass($1) IS NOT NULL",
                            absl::StrCat(schema, ".schema_migrations"))[0]
                .as<bool>();
        if (!exists) return absl::OkStatus();
        version = tx.exec_params1(WithSchema("SELECT coalesce(max(version), "
                                             "0) FROM {s}.schema_migrations "
                                             "WHERE component = $1",
                                             schema),
                                  std::string(component))[0]
                      .as<int>();
        return absl::OkStatus();
      }));
  return version;
}

}  // namespace cqrs

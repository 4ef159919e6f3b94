// Versioned, idempotent schema migrations for every module that keeps tables
// in PostgreSQL.
//
//   constexpr cqrs::Migration kMigrations[] = {{1, "events", "CREATE ..."}};
//   RETURN_IF_ERROR(cqrs::ApplyMigrations(pool, "cqrs", "eventstore",
//                                         kMigrations));
//
// Each module ("component") numbers its own migrations from 1. Applied
// versions are recorded in <schema>.schema_migrations (component, version).
// SQL text refers to the schema as {s}; the name is validated before it is
// spliced in, so it is safe. Never edit a migration that has shipped; append
// a new one.
//
// Thread-safety: thread-safe; concurrent callers, also in other processes,
// wait for each other on an advisory lock.
#ifndef FRAMEWORK_MIGRATIONS_H_
#define FRAMEWORK_MIGRATIONS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "framework/pg_pool.h"

namespace cqrs {

struct Migration {
  int version;
  const char* description;
  const char* sql;  // may hold several statements; {s} is the schema
};

// kInvalidArgument unless `schema` is 1 to 63 characters of [a-z0-9_] not
// starting with a digit.
absl::Status ValidateSchemaName(absl::string_view schema);

// `sql` with every "{s}" replaced by `schema` (which must be valid).
std::string WithSchema(absl::string_view sql, absl::string_view schema);

// Creates `schema` if needed and applies the migrations of `component` that
// are not applied yet, in version order, in one transaction. Returns
// kInvalidArgument for a bad schema name, kUnavailable when the database is
// unreachable; a failing migration rolls back entirely.
absl::Status ApplyMigrations(PgPool& pool, absl::string_view schema,
                             absl::string_view component,
                             absl::Span<const Migration> migrations);

// The highest applied version of `component` in `schema` (0: none).
absl::StatusOr<int> MigratedVersion(PgPool& pool, absl::string_view schema,
                                    absl::string_view component);

}  // namespace cqrs

#endif  // FRAMEWORK_MIGRATIONS_H_

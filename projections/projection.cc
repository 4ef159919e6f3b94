#include "projections/projection.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "framework/migrations.h"

namespace cqrs::projections {

absl::Status ValidateProjection(const Projection& p) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("projection '", p.name, "': ", why));
  };
  // Names become parts of SQL identifiers (tables, views, generations).
  if (!ValidateSchemaName(p.name).ok() || p.name.size() > 40) {
    return bad("name must be 1 to 40 characters of [a-z0-9_]");
  }
  if (p.version < 1) return bad("version must be at least 1");
  if (p.event_types.empty()) return bad("no event types");
  if (p.tables.empty() && p.kind == ProjectionKind::kReadModel) {
    return bad("no tables");
  }
  if (p.batch_size < 0 || p.batch_size > 100000) {
    return bad("batch_size must be 0 (the runner's) to 100000");
  }
  if (!p.apply) return bad("no apply function");
  if (p.max_attempts < 1) return bad("max_attempts must be at least 1");
  std::set<std::string> names;
  for (const ProjectionTable& t : p.tables) {
    if (!ValidateSchemaName(t.name).ok() || t.name.size() > 40) {
      return bad(absl::StrCat("table name '", t.name,
                              "' must be 1 to 40 characters of [a-z0-9_]"));
    }
    if (!names.insert(t.name).second) {
      return bad(absl::StrCat("table '", t.name, "' declared twice"));
    }
    if (!absl::StrContains(t.ddl, "{table}")) {
      return bad(
          absl::StrCat("the DDL of table '", t.name, "' does not use {table}"));
    }
  }
  return absl::OkStatus();
}

}  // namespace cqrs::projections

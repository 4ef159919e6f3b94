#include "projections/parked.h"

#include <set>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "eventstore/event_store.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "projections/internal/common.h"

namespace cqrs::projections {

using projections_internal::ParseXid;

absl::StatusOr<std::vector<ParkedEvent>> ListParked(
    PgPool& pool, absl::string_view schema, absl::string_view projection,
    int limit) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  if (limit < 1 || limit > 100000) {
    return absl::InvalidArgumentError("limit must be 1 to 100000");
  }
  std::vector<ParkedEvent> out;
  RETURN_IF_ERROR(
      pool.Run(PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        pqxx::read_transaction tx(conn);
        for (const pqxx::row& r : tx.exec_params(
                 absl::StrCat(
                     "SELECT k.name, k.transaction_id::text || '.' || "
                     "k.global_position::text, k.stream_id, k.stream_version, "
                     "k.event_id::text, k.event_type, k.error, "
                     "(date_part('epoch', k.parked_at) * 1000000)::int8 FROM ",
                     schema, ".projection_parked k JOIN ", schema,
                     ".projections p ON p.name = k.name AND p.generation = "
                     "k.generation WHERE ($1 = '' OR k.name = $1) ORDER BY "
                     "k.name, k.transaction_id, k.global_position LIMIT $2"),
                 std::string(projection), limit)) {
          ParkedEvent e;
          e.projection = r[0].as<std::string>();
          e.position = r[1].as<std::string>();
          e.stream_id = r[2].as<std::string>();
          e.stream_version = r[3].as<int64_t>();
          e.event_id = r[4].as<std::string>();
          e.event_type = r[5].as<std::string>();
          e.error = r[6].as<std::string>();
          e.parked_at = absl::FromUnixMicros(r[7].as<int64_t>());
          out.push_back(std::move(e));
        }
        return absl::OkStatus();
      }));
  return out;
}

absl::StatusOr<ReplayResult> ReplayParked(PgPool& pool, const Projection& p,
                                          absl::string_view schema) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  RETURN_IF_ERROR(ValidateProjection(p));
  ReplayResult result;
  RETURN_IF_ERROR(pool.Run(
      PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
        result = ReplayResult();
        pqxx::work tx(conn);
        pqxx::result row = tx.exec_params(
            absl::StrCat("SELECT generation FROM ", schema,
                         ".projections WHERE name = $1 FOR UPDATE"),
            p.name);
        if (row.empty()) {
          return absl::NotFoundError(
              absl::StrCat("projection '", p.name, "' has never run"));
        }
        const int generation = row[0][0].as<int>();
        const auto tables =
            projections_internal::TableMap(schema, p, generation);
        std::set<std::string> blocked;
        std::string last_failure;  // of an event that failed again
        for (const pqxx::row& r : tx.exec_params(
                 absl::StrCat(
                     "SELECT transaction_id::text, global_position, "
                     "stream_id, stream_version, event_id::text, event_type, "
                     "schema_version, data::text, metadata::text, "
                     "(date_part('epoch', recorded_at) * 1000000)::int8 "
                     "FROM ",
                     schema,
                     ".projection_parked WHERE name = $1 AND generation = $2 "
                     "ORDER BY transaction_id, global_position"),
                 p.name, generation)) {
          eventstore::RecordedEvent e;
          e.position = {ParseXid(r[0]), r[1].as<int64_t>()};
          e.stream_id = r[2].as<std::string>();
          e.stream_version = r[3].as<int64_t>();
          e.event_id = r[4].as<std::string>();
          e.event_type = r[5].as<std::string>();
          e.schema_version = r[6].as<int>();
          e.data = r[7].as<std::string>();
          e.metadata = r[8].as<std::string>();
          e.recorded_at = absl::FromUnixMicros(r[9].as<int64_t>());
          if (blocked.count(e.stream_id) > 0) {
            ++result.still_parked;
            continue;
          }
          // Each event in a savepoint of its own: one that fails again
          // stays parked, the others are applied.
          bool lost = false;
          absl::Status applied = InSavepoint(
              tx,
              [&](pqxx::transaction_base& t) {
                return projections_internal::ApplyHandler(p, t, tables,
                                                          {&e, 1});
              },
              &lost);
          if (lost) return applied;
          const std::string key_sql = absl::StrCat(
              " WHERE name = $1 AND generation = $2 AND transaction_id = "
              "$3::text::xid8 AND global_position = $4");
          if (applied.ok()) {
            tx.exec_params(absl::StrCat("DELETE FROM ", schema,
                                        ".projection_parked", key_sql),
                           p.name, generation,
                           absl::StrCat(e.position.transaction_id),
                           e.position.global_position);
            ++result.replayed;
          } else {
            last_failure = std::string(applied.message());
            blocked.insert(e.stream_id);
            tx.exec_params(
                absl::StrCat("UPDATE ", schema,
                             ".projection_parked SET error = $5", key_sql),
                p.name, generation, absl::StrCat(e.position.transaction_id),
                e.position.global_position, std::string(applied.message()));
            ++result.still_parked;
          }
        }
        // The last error describes what is parked: none left, no error;
        // an event that failed again, its new error.
        tx.exec_params(
            absl::StrCat(
                "UPDATE ", schema,
                ".projections SET parked_epoch = parked_epoch + 1, "
                "last_error = CASE WHEN NOT EXISTS (SELECT 1 FROM ",
                schema,
                ".projection_parked k WHERE k.name = $1 AND k.generation = "
                "$2) THEN NULL WHEN $3 <> '' THEN $3 ELSE last_error END, "
                "last_error_at = CASE WHEN NOT EXISTS (SELECT 1 FROM ",
                schema,
                ".projection_parked k WHERE k.name = $1 AND k.generation = "
                "$2) THEN NULL WHEN $3 <> '' THEN now() ELSE last_error_at "
                "END WHERE name = $1 AND state <> 'failed'"),
            p.name, generation, last_failure);
        tx.exec_params(absl::StrCat("UPDATE ", schema,
                                    ".projections SET parked_epoch = "
                                    "parked_epoch + 1 WHERE name = $1 AND "
                                    "state = 'failed'"),
                       p.name);
        tx.commit();
        return absl::OkStatus();
      }));
  return result;
}

}  // namespace cqrs::projections

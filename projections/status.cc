#include "projections/status.h"

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "framework/log.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "projections/internal/common.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::projections {

absl::StatusOr<std::vector<StoredStatus>> ReadProjectionStatuses(
    PgPool& pool, absl::string_view schema, absl::string_view event_schema,
    const std::map<std::string, int>& code_versions) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  RETURN_IF_ERROR(ValidateSchemaName(event_schema));
  ASSIGN_OR_RETURN(int migrated, MigratedVersion(pool, schema, "projections"));
  if (migrated == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no projections in schema '", schema, "': run `bank migrate`"));
  }
  if (migrated < projections_internal::kBookkeepingSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("the projection tables in schema '", schema,
                     "' are of an older version: run `bank migrate`"));
  }
  std::vector<StoredStatus> out;
  RETURN_IF_ERROR(
      pool.Run(PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        pqxx::read_transaction tx(conn);
        // The owner is whoever holds the ownership lock; the lag counts
        // events after the checkpoint by global position (gaps from rolled
        // back appends make it an estimate) and dates the oldest of them.
        const std::string sql = absl::StrCat(
            "SELECT p.name, p.version, p.generation, p.state, "
            "p.position_xid::text || '.' || p.position_gp::text, "
            "greatest(coalesce((SELECT max(global_position) FROM ",
            event_schema,
            ".events), 0) - p.position_gp, 0), "
            "coalesce(extract(epoch FROM now() - (SELECT e.recorded_at FROM ",
            event_schema,
            ".events e WHERE (e.transaction_id, e.global_position) > "
            "(p.position_xid, p.position_gp) ORDER BY e.transaction_id, "
            "e.global_position LIMIT 1)), 0)::float8, "
            "coalesce((SELECT a.application_name || ' pid ' || a.pid FROM "
            "pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE "
            "l.locktype = 'advisory' AND l.granted AND l.classid = $1::oid "
            "AND l.objid = hashtext($2 || '.' || p.name)::oid "
            "AND l.objsubid = 2 AND l.database = (SELECT oid FROM "
            "pg_database WHERE datname = current_database()) LIMIT 1), ''), "
            "(SELECT count(*) FROM ",
            schema,
            ".projection_parked k WHERE k.name = p.name AND k.generation = "
            "p.generation), coalesce(p.last_error, ''), "
            "coalesce(p.failed_position, ''), "
            "EXISTS (SELECT 1 FROM ",
            schema,
            ".projection_rebuilds r WHERE r.name = p.name), "
            "coalesce(p.transient_error, ''), "
            "coalesce(to_char(p.last_error_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '') "
            "FROM ",
            schema, ".projections p ORDER BY p.name");
        for (const pqxx::row& r :
             tx.exec_params(sql, projections_internal::kOwnershipLockClass,
                            std::string(schema))) {
          StoredStatus s;
          s.name = r[0].as<std::string>();
          s.version = r[1].as<int>();
          s.generation = r[2].as<int>();
          s.position = r[4].as<std::string>();
          s.lag_events = r[5].as<int64_t>();
          s.lag_seconds = r[6].as<double>();
          s.owner = r[7].as<std::string>();
          s.parked = r[8].as<int64_t>();
          s.last_error = r[9].as<std::string>();
          s.failed_position = r[10].as<std::string>();
          const bool rebuilding = r[11].as<bool>();
          // Left by an owner that has gone: not a current retry.
          if (!s.owner.empty()) s.transient_error = r[12].as<std::string>();
          if (!s.last_error.empty()) s.last_error_at = r[13].as<std::string>();
          auto code = code_versions.find(s.name);
          if (code != code_versions.end()) s.code_version = code->second;
          if (r[3].as<std::string>() == "failed") {
            s.state = "failed";
          } else if (s.code_version != 0 && s.code_version != s.version) {
            s.state = "outdated";
          } else if (rebuilding) {
            s.state = "rebuilding";
          } else if (s.owner.empty()) {
            s.state = "stopped";
          } else {
            s.state = s.lag_events > 1000 ? "catching_up" : "running";
          }
          out.push_back(std::move(s));
        }
        return absl::OkStatus();
      }));
  return out;
}

namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void WriteStatus(Writer& w, const StoredStatus& s, StatusFields fields) {
  auto string = [&w](const char* key, const std::string& value) {
    w.Key(key);
    w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  };
  const bool all = fields == StatusFields::kAll;
  w.StartObject();
  string("name", s.name);
  w.Key("version");
  w.Int(s.version);
  if (all) {
    w.Key("generation");
    w.Int(s.generation);
  }
  string("state", s.state);
  string("position", s.position);
  w.Key("lag_events");
  w.Int64(s.lag_events);
  w.Key("lag_seconds");
  w.Double(s.lag_seconds);
  if (all) string("owner", s.owner);
  w.Key("parked");
  w.Int64(s.parked);
  if (s.code_version != 0) {
    w.Key("code_version");
    w.Int(s.code_version);
  }
  if (!s.last_error.empty()) string("last_error", s.last_error);
  if (!s.last_error_at.empty()) string("last_error_at", s.last_error_at);
  if (all && !s.failed_position.empty()) {
    string("failed_position", s.failed_position);
  }
  if (!s.transient_error.empty()) {
    string("transient_error", s.transient_error);
  }
  w.EndObject();
}

}  // namespace

std::string StatusesJson(const std::vector<StoredStatus>& statuses,
                         StatusFields fields) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartArray();
  for (const StoredStatus& s : statuses) WriteStatus(w, s, fields);
  w.EndArray();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string StatusJson(const StoredStatus& status, StatusFields fields) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  WriteStatus(w, status, fields);
  return std::string(buffer.GetString(), buffer.GetSize());
}

absl::Status ResumeProjection(PgPool& pool, absl::string_view schema,
                              absl::string_view name) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  ASSIGN_OR_RETURN(int migrated, MigratedVersion(pool, schema, "projections"));
  if (migrated == 0) {
    return absl::NotFoundError(absl::StrCat(
        "no projection '", name, "': schema '", schema, "' has none"));
  }
  return pool.Run(
      PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
        pqxx::work tx(conn);
        // The row lock orders this after a batch or swap in flight.
        pqxx::result row = tx.exec_params(
            absl::StrCat("SELECT state FROM ", schema,
                         ".projections WHERE name = $1 FOR UPDATE"),
            std::string(name));
        if (row.empty()) {
          return absl::NotFoundError(
              absl::StrCat("no projection '", name, "'"));
        }
        if (row[0][0].as<std::string>() != "failed") {
          return absl::FailedPreconditionError(absl::StrCat(
              "projection '", name, "' has not failed: nothing to resume"));
        }
        tx.exec_params(
            absl::StrCat("UPDATE ", schema,
                         ".projections SET state = 'running', last_error = "
                         "NULL, last_error_at = NULL, failed_position = NULL, "
                         "transient_error = NULL, updated_at = now() "
                         "WHERE name = $1"),
            std::string(name));
        tx.commit();
        Log(LogLevel::kInfo, "projection resumed",
            {{"projection", name}, {"schema", schema}});
        return absl::OkStatus();
      });
}

}  // namespace cqrs::projections

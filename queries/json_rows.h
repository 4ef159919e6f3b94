// Writes libpqxx rows as JSON with RapidJSON's Writer: one object per row,
// keyed by column name, each value typed by its column's type OID.
//
//   rapidjson::StringBuffer buffer;
//   queries::JsonWriter w(buffer);
//   RETURN_IF_ERROR(queries::WriteJsonRows(w, tx.exec("SELECT id, n ...")));
//
// Values by column type:
//   int2, int4, int8        JSON integer
//   numeric                 JSON number with PostgreSQL's digits as they
//                           are (exact beyond 2^63 and past 17 digits)
//   float4, float8          JSON number, PostgreSQL's text as it is
//   bool                    true / false
//   json, jsonb             the value itself, validated and condensed
//                           (numbers keep their digits)
//   timestamptz, timestamp  RFC 3339 string in UTC with microseconds,
//                           always 6 digits: "2024-05-01T12:00:00.250000Z"
//                           (a timestamp without time zone is taken as UTC)
//   date                    "YYYY-MM-DD"
//   NULL                    null, or no member (JsonRowOptions)
//   anything else (text, varchar, bpchar, name, uuid, arrays, ...)
//                           its text as a JSON string
// Rename and nest in SQL (`SELECT account_id AS id`, json_build_object),
// not here.
//
// Timestamps and dates must be in PostgreSQL's ISO DateStyle (the default;
// QueryService's read sessions set it); timestamptz may carry any UTC offset.
//
// This header is for PostgreSQL-facing code: it takes libpqxx rows.
//
// Thread-safety: plain functions; a writer is one thread's at a time.
#ifndef QUERIES_JSON_ROWS_H_
#define QUERIES_JSON_ROWS_H_

#include <string>

#include <pqxx/result>
#include <pqxx/row>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::queries {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

enum class NullColumns {
  kWriteNull,  // "reason": null
  kOmit,       // no "reason" member: the contract's optional fields
};

struct JsonRowOptions {
  NullColumns nulls = NullColumns::kWriteNull;
};

inline constexpr JsonRowOptions kOmitNullColumns{NullColumns::kOmit};

// Writes `field`'s value (see the table above), null for NULL.
// kInternal, naming the column, for a value JSON cannot hold: numeric or
// float NaN/Infinity, a timestamp out of years 1..9999 or infinite, a json
// value that does not parse, text that is not UTF-8. The writer is then
// mid-value: drop what it wrote.
absl::Status WriteJsonValue(JsonWriter& writer, const pqxx::field& field);

// Writes `row` as an object, members in column order. kInternal for a value
// as above, or for two columns of one name (alias one of them in SQL).
absl::Status WriteJsonRow(JsonWriter& writer, const pqxx::row& row,
                          const JsonRowOptions& options = {});

// Writes `rows` as an array of objects; errors as WriteJsonRow().
absl::Status WriteJsonRows(JsonWriter& writer, const pqxx::result& rows,
                           const JsonRowOptions& options = {});

// The JSON text of WriteJsonRow() / WriteJsonRows(); same errors.
absl::StatusOr<std::string> RowToJson(const pqxx::row& row,
                                      const JsonRowOptions& options = {});
absl::StatusOr<std::string> RowsToJson(const pqxx::result& rows,
                                       const JsonRowOptions& options = {});

}  // namespace cqrs::queries

#endif  // QUERIES_JSON_ROWS_H_

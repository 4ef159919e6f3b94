#include "queries/query_context.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include <pqxx/pqxx>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "framework/error_code.h"
#include "framework/http/status_mapping.h"
#include "framework/status_macros.h"
#include "queries/pagination.h"

namespace cqrs::queries {
namespace {

// PostgreSQL's keywords that cannot name a schema or table unquoted
// (pg_get_keywords() categories R and T, PostgreSQL 15, plus system_user
// of 16), sorted for binary search.
constexpr absl::string_view kReservedWords[] = {
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
};

bool IsTableName(absl::string_view name) {
  if (name.empty() || name.size() > 63 || absl::ascii_isdigit(name[0])) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_';
  });
}

// `name` (a valid lower-case identifier) as SQL: quoted when a keyword.
void AppendIdentifier(std::string& out, absl::string_view name) {
  if (std::binary_search(std::begin(kReservedWords), std::end(kReservedWords),
                         name)) {
    absl::StrAppend(&out, "\"", name, "\"");
  } else {
    absl::StrAppend(&out, name);
  }
}

absl::Status NotFound(const http::Request& request, absl::string_view code) {
  return WithErrorCode(
      absl::NotFoundError(absl::StrCat(request.path(), " does not exist")),
      code);
}

// A template error found at run time is the handler's bug.
absl::Status AsInternal(const absl::Status& status) {
  return absl::InternalError(status.message());
}

}  // namespace

absl::StatusOr<std::string> ExpandTables(absl::string_view sql,
                                         absl::string_view schema) {
  std::string out;
  out.reserve(sql.size() + 32);
  size_t i = 0;
  while (i < sql.size()) {
    const size_t brace = sql.find_first_of("{}", i);
    if (brace == absl::string_view::npos) {
      absl::StrAppend(&out, sql.substr(i));
      break;
    }
    absl::StrAppend(&out, sql.substr(i, brace - i));
    const char c = sql[brace];
    if (brace + 1 < sql.size() && sql[brace + 1] == c) {  // {{ or }}
      out.push_back(c);
      i = brace + 2;
      continue;
    }
    const size_t close = c == '{' ? sql.find('}', brace + 1) : brace;
    if (c == '}' || close == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("unmatched '", std::string(1, c), "' at offset ", brace,
                       " of the SQL (write {{ or }} for a literal brace): ",
                       sql.substr(brace, 40)));
    }
    const absl::string_view name = sql.substr(brace + 1, close - brace - 1);
    if (!IsTableName(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown placeholder {", name,
          "} in the SQL: a placeholder is {table} with `table` a projection "
          "table's lower-case name (write {{ or }} for a literal brace)"));
    }
    if (schema.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("placeholder {", name,
                       "} in the SQL, but QueryServiceOptions::schema (the "
                       "projections' schema) is not set"));
    }
    AppendIdentifier(out, schema);
    out.push_back('.');
    AppendIdentifier(out, name);
    i = close + 1;
  }
  return out;
}

absl::StatusOr<http::Response> OneRowResponse(const pqxx::result& rows,
                                              absl::Status not_found,
                                              const JsonRowOptions& options) {
  if (rows.empty()) return not_found;
  if (rows.size() > 1) {
    return absl::InternalError(
        absl::StrCat("a query for one row returned ", rows.size(), " rows"));
  }
  ASSIGN_OR_RETURN(std::string body, RowToJson(rows[0], options));
  return http::JsonResponse(200, std::move(body));
}

absl::StatusOr<http::Response> RowsResponse(const pqxx::result& rows,
                                            const JsonRowOptions& options) {
  ASSIGN_OR_RETURN(std::string body, RowsToJson(rows, options));
  return http::JsonResponse(200, std::move(body));
}

absl::StatusOr<http::Response> PageResponse(
    const pqxx::result& rows, int limit,
    const std::vector<std::string>& cursor_columns,
    const JsonRowOptions& options) {
  if (limit < 1)
    return absl::InternalError("a page needs a limit of 1 or more");
  const pqxx::result::size_type shown =
      std::min<pqxx::result::size_type>(rows.size(), limit);
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  writer.Key("items");
  writer.StartArray();
  for (pqxx::result::size_type i = 0; i < shown; ++i) {
    RETURN_IF_ERROR(WriteJsonRow(writer, rows[i], options));
  }
  writer.EndArray();
  writer.Key("next");
  if (rows.size() > shown) {
    const pqxx::row last = rows[shown - 1];
    std::vector<std::string> key;
    key.reserve(cursor_columns.size());
    for (const std::string& column : cursor_columns) {
      const pqxx::row::size_type n = rows.columns();
      pqxx::row::size_type c = 0;
      while (c < n && column != rows.column_name(c)) ++c;
      if (c == n || last[c].is_null()) {
        return absl::InternalError(absl::StrCat("the cursor column \"", column,
                                                "\" is missing or NULL"));
      }
      key.emplace_back(last[c].c_str(), last[c].size());
    }
    const std::string cursor = EncodeCursor(key);
    writer.String(cursor.data(),
                  static_cast<rapidjson::SizeType>(cursor.size()));
  } else {
    writer.Null();
  }
  writer.EndObject();
  return http::JsonResponse(200,
                            std::string(buffer.GetString(), buffer.GetSize()));
}

QueryContext::QueryContext(const http::Request& request,
                           pqxx::transaction_base& tx, absl::string_view schema)
    : request_(request), tx_(tx), schema_(schema) {}

absl::StatusOr<std::string> QueryContext::Sql(
    absl::string_view sql_template) const {
  absl::StatusOr<std::string> sql = ExpandTables(sql_template, schema_);
  if (!sql.ok()) return AsInternal(sql.status());
  return sql;
}

absl::StatusOr<pqxx::result> QueryContext::Exec(const Statement& statement,
                                                const SqlParams& params) {
  // libpqxx sends a null pointer as NULL; the strings outlive the call.
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const SqlParam& p : params) {
    // Sent as a C string, "Ann\0x" would be read as "Ann". The server
    // refuses such requests already (http::Request::Create()); this keeps
    // a value built by a handler from being cut off silently.
    if (p.value().has_value() && p.value()->find('\0') != std::string::npos) {
      return InvalidRequest("a query parameter must not contain a NUL byte");
    }
    values.push_back(p.value().has_value() ? p.value()->c_str() : nullptr);
  }
  if (statement.prepared()) {
    return tx_.exec_prepared(std::string(statement.text()),
                             pqxx::prepare::make_dynamic_params(values));
  }
  ASSIGN_OR_RETURN(std::string sql, Sql(statement.text()));
  return tx_.exec_params(sql, pqxx::prepare::make_dynamic_params(values));
}

absl::StatusOr<http::Response> QueryContext::One(
    const Statement& statement, const SqlParams& params,
    absl::string_view not_found_code, const JsonRowOptions& options) {
  ASSIGN_OR_RETURN(pqxx::result rows, Exec(statement, params));
  if (rows.empty()) return NotFound(request_, not_found_code);
  return OneRowResponse(rows, absl::NotFoundError(""), options);
}

absl::StatusOr<http::Response> QueryContext::One(
    const Statement& statement, const SqlParams& params, absl::Status not_found,
    const JsonRowOptions& options) {
  ASSIGN_OR_RETURN(pqxx::result rows, Exec(statement, params));
  return OneRowResponse(rows, std::move(not_found), options);
}

absl::StatusOr<http::Response> QueryContext::Many(
    const Statement& statement, const SqlParams& params,
    const JsonRowOptions& options) {
  ASSIGN_OR_RETURN(pqxx::result rows, Exec(statement, params));
  return RowsResponse(rows, options);
}

absl::StatusOr<http::Response> QueryContext::Page(
    const Statement& statement, const SqlParams& params, int limit,
    const std::vector<std::string>& cursor_columns,
    const JsonRowOptions& options) {
  ASSIGN_OR_RETURN(pqxx::result rows, Exec(statement, params));
  return PageResponse(rows, limit, cursor_columns, options);
}

}  // namespace cqrs::queries

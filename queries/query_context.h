// What a query handler gets for one request: the request, the read
// transaction, SQL with the projections' tables as `{table}` placeholders,
// and responses built from rows (queries/json_rows.h).
//
//   queries->Add(router, {"/counters/{id}", {"counter_values"},
//       [](queries::QueryContext& q) -> absl::StatusOr<http::Response> {
//         return q.One("SELECT id, value FROM {counter_values} WHERE id = $1",
//                      {q.Param("id")}, "counter_not_found");
//       }});
//
// Placeholders: `{name}` in a SQL template becomes the view of the
// projection table `name` in QueryServiceOptions::schema, as
// `<schema>.<name>`, each part double-quoted when it is a PostgreSQL
// keyword. `name` must be a lower-case identifier ([a-z_][a-z0-9_]*, at
// most 63 characters); `{{` and `}}` stand for literal braces (an array
// literal '{{1,2}}', a JSON literal). Any other brace is an error: SQL never
// reaches the server with a brace left unexpanded. Whether the table exists
// is left to PostgreSQL (the service does not know which tables a
// projection has): a missing one fails the statement, which the service
// answers with 503 unavailable.
//
// Database errors are libpqxx exceptions, as from the transaction itself:
// let them through; the service translates them (framework/pg_pool.h).
//
// This header is for PostgreSQL-facing code: it exposes libpqxx types.
//
// Thread-safety: a QueryContext belongs to the query thread running one
// request; it and the request and transaction it refers to live only for
// that handler call.
#ifndef QUERIES_QUERY_CONTEXT_H_
#define QUERIES_QUERY_CONTEXT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqxx/result>
#include <pqxx/transaction_base>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "framework/http/message.h"
#include "queries/json_rows.h"

namespace cqrs::queries {

// `sql` with every `{name}` replaced by the view name of table `name` in
// `schema`, and `{{` / `}}` by `{` / `}` (see above). kInvalidArgument
// naming the offending text for a brace that is neither, or for a
// placeholder when `schema` is empty.
absl::StatusOr<std::string> ExpandTables(absl::string_view sql,
                                         absl::string_view schema);

// One statement parameter, sent as text (NULL for std::nullopt).
class SqlParam {
 public:
  SqlParam(std::nullopt_t) {}  // NOLINT: implicit, like the others
  SqlParam(const char* text) : value_(text) {}                     // NOLINT
  SqlParam(absl::string_view text) : value_(std::string(text)) {}  // NOLINT
  SqlParam(std::string text) : value_(std::move(text)) {}          // NOLINT
  SqlParam(std::optional<std::string> text)                        // NOLINT
      : value_(std::move(text)) {}
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>,
                             int> = 0>
  SqlParam(T number) : value_(absl::StrCat(number)) {}  // NOLINT
  template <typename T, std::enable_if_t<std::is_same_v<T, bool>, int> = 0>
  SqlParam(T flag) : value_(flag ? "true" : "false") {}  // NOLINT

  const std::optional<std::string>& value() const { return value_; }

 private:
  std::optional<std::string> value_;
};

using SqlParams = std::vector<SqlParam>;

// A statement to run: a SQL template (placeholders expanded at each call),
// or Prepared(name), one of the route's QueryRoute::prepared statements
// (expanded once, at QueryService::Add()).
class Statement {
 public:
  Statement(const char* sql) : text_(sql) {}         // NOLINT
  Statement(absl::string_view sql) : text_(sql) {}   // NOLINT
  Statement(const std::string& sql) : text_(sql) {}  // NOLINT
  static Statement Prepared(absl::string_view name) {
    Statement s(name);
    s.prepared_ = true;
    return s;
  }

  bool prepared() const { return prepared_; }
  // The SQL template, or the prepared statement's name.
  absl::string_view text() const { return text_; }

 private:
  // Refers to the caller's string: a Statement lives for one call.
  absl::string_view text_;
  bool prepared_ = false;
};

// The response helpers' bodies, for results a handler has looked at first.
//
// 200 with the only row of `rows` as an object; `not_found` (the handler's
// error, with its code) when there is none; kInternal when there are more.
absl::StatusOr<http::Response> OneRowResponse(
    const pqxx::result& rows, absl::Status not_found,
    const JsonRowOptions& options = {});
// 200 with all rows as an array of objects.
absl::StatusOr<http::Response> RowsResponse(const pqxx::result& rows,
                                            const JsonRowOptions& options = {});
// 200 {"items": [the first `limit` rows], "next": cursor-or-null}, for
// `rows` fetched ordered by the cursor columns with LIMIT limit + 1: the
// extra row only says that another page exists. The cursor is
// EncodeCursor() (queries/pagination.h) of the text of `cursor_columns` in
// the last row shown, so ParsePageRequest(..., cursor_columns.size())
// decodes it. kInternal when a cursor column is missing or NULL.
absl::StatusOr<http::Response> PageResponse(
    const pqxx::result& rows, int limit,
    const std::vector<std::string>& cursor_columns,
    const JsonRowOptions& options = {});

class QueryContext {
 public:
  // `request`, `tx` and `schema` must outlive the context. `schema` may be
  // empty when no SQL has placeholders.
  QueryContext(const http::Request& request, pqxx::transaction_base& tx,
               absl::string_view schema);

  const http::Request& request() const { return request_; }
  // The path parameter `name` ("/accounts/{id}" -> Param("id")), or "".
  absl::string_view Param(absl::string_view name) const {
    return request_.PathParam(name);
  }
  // The query parameter `name`, or nullopt.
  absl::optional<absl::string_view> Query(absl::string_view name) const {
    return request_.Query(name);
  }
  // The authenticated caller (its key id and scopes), or nullptr when the
  // route is open or the server runs without authentication. For answers
  // that show more to some callers: check a scope with HasScope(); a caller
  // without a principal holds none.
  const http::Principal* principal() const { return request_.principal(); }
  // The read session's transaction (read-only; autocommit with
  // Snapshot::kPerStatement). Do not commit or abort it.
  pqxx::transaction_base& tx() { return tx_; }

  // `sql_template` expanded. kInternal on an unknown placeholder: the
  // handler's SQL is wrong, which is the server's fault (500).
  absl::StatusOr<std::string> Sql(absl::string_view sql_template) const;

  // Runs `statement` with `params` ($1, $2, ...). kInternal as Sql();
  // invalid_request (400) when a parameter holds a NUL byte, which libpq
  // would cut off (it takes parameters as C strings) and PostgreSQL's text
  // cannot store; database errors throw (see above).
  absl::StatusOr<pqxx::result> Exec(const Statement& statement,
                                    const SqlParams& params = {});

  // 200 with the statement's single row as an object. With no row: 404
  // with `not_found_code` and a message naming the request path (or the
  // given `not_found` status, message and code of the caller's choosing).
  // kInternal when the statement returns more than one row, or as Exec()
  // and WriteJsonRow().
  absl::StatusOr<http::Response> One(const Statement& statement,
                                     const SqlParams& params,
                                     absl::string_view not_found_code,
                                     const JsonRowOptions& options = {});
  absl::StatusOr<http::Response> One(const Statement& statement,
                                     const SqlParams& params,
                                     absl::Status not_found,
                                     const JsonRowOptions& options = {});

  // 200 with every row as an array of objects (RowsResponse()).
  absl::StatusOr<http::Response> Many(const Statement& statement,
                                      const SqlParams& params = {},
                                      const JsonRowOptions& options = {});

  // A page of rows (PageResponse()): the statement must order by the
  // cursor columns and fetch `limit` + 1 rows.
  absl::StatusOr<http::Response> Page(
      const Statement& statement, const SqlParams& params, int limit,
      const std::vector<std::string>& cursor_columns,
      const JsonRowOptions& options = {});

 private:
  const http::Request& request_;
  pqxx::transaction_base& tx_;
  const absl::string_view schema_;
};

}  // namespace cqrs::queries

#endif  // QUERIES_QUERY_CONTEXT_H_

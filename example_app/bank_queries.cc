#include "example_app/bank_queries.h"

#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "example_app/account.h"
#include "example_app/transfer.h"
#include "framework/auth/scopes.h"
#include "framework/error_code.h"
#include "framework/http/status_mapping.h"
#include "framework/status_macros.h"
#include "projections/sql_array.h"
#include "queries/json_rows.h"
#include "queries/pagination.h"
#include "queries/query_context.h"

namespace bank {
namespace {

namespace http = cqrs::http;
namespace queries = cqrs::queries;
using queries::QueryContext;
using queries::Statement;

constexpr size_t kMaxOwnerLength = 200;

absl::Status AccountNotFound(absl::string_view id) {
  return cqrs::WithErrorCode(
      absl::NotFoundError(absl::StrCat("account '", id, "' does not exist")),
      "account_not_found");
}

std::optional<std::string> OptionalQuery(const http::Request& request,
                                         absl::string_view name) {
  absl::optional<absl::string_view> value = request.Query(name);
  if (!value.has_value()) return std::nullopt;
  return std::string(*value);
}

absl::StatusOr<queries::PageRequest> PageOf(const http::Request& request) {
  return queries::ParsePageRequest(OptionalQuery(request, "limit"),
                                   OptionalQuery(request, "after"), 1);
}

// The contract's account object, in its order.
constexpr char kAccountColumns[] =
    "SELECT account_id, owner, currency, balance, status, version "
    "FROM {account_balances} ";

// Batched: one statement answers every request waiting for a thread.
queries::QueryRoute GetAccount() {
  queries::QueryRoute route;
  route.pattern = "/accounts/{id}";
  route.projections = {"account_balances"};
  route.prepared = {
      {"bank_get_accounts",
       absl::StrCat(kAccountColumns, "WHERE account_id = ANY($1::text[])")}};
  route.batch_handler = [](const std::vector<const http::Request*>& requests,
                           pqxx::transaction_base& tx) {
    std::vector<absl::StatusOr<http::Response>> out(requests.size());
    std::vector<bool> invalid(requests.size(), false);
    cqrs::projections::SqlArray ids;
    bool any = false;
    for (size_t i = 0; i < requests.size(); ++i) {
      const absl::string_view id = requests[i]->PathParam("id");
      if (absl::Status valid = ValidateAccountId(id); !valid.ok()) {
        out[i] = valid;
        invalid[i] = true;
        continue;
      }
      ids.Add(id);
      any = true;
    }
    absl::flat_hash_map<std::string, absl::StatusOr<std::string>> bodies;
    if (any) {
      for (const pqxx::row& row :
           tx.exec_prepared("bank_get_accounts", ids.literal())) {
        bodies.emplace(row["account_id"].c_str(), queries::RowToJson(row));
      }
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      if (invalid[i]) continue;
      const absl::string_view id = requests[i]->PathParam("id");
      auto it = bodies.find(id);
      if (it == bodies.end()) {
        out[i] = AccountNotFound(id);
      } else if (!it->second.ok()) {
        out[i] = it->second.status();
      } else {
        out[i] = http::JsonResponse(200, *it->second);
      }
    }
    return out;
  };
  return route;
}

// Admin callers also see who appended each transaction's event: the
// actor (a key id, "anonymous", or "process:transfer_process") and, for a
// process's commands, the key it acted for. Others get the contract's
// items. Rows of events stored before actors were recorded have neither.
bool SeesActors(const QueryContext& q) {
  const http::Principal* caller = q.principal();
  return caller != nullptr && caller->HasScope(cqrs::auth::kAdminScope);
}

queries::QueryRoute ListTransactions() {
  queries::QueryRoute route;
  route.pattern = "/accounts/{id}/transactions";
  route.projections = {"account_transactions"};
  constexpr char kPage[] =
      "FROM {account_transactions} WHERE account_id = $1 AND version > $2 "
      "ORDER BY version LIMIT $3";
  route.prepared = {
      {"bank_list_transactions",
       absl::StrCat("SELECT type, amount, balance_after, transfer_id, "
                    "version, at ",
                    kPage)},
      {"bank_list_transactions_with_actors",
       absl::StrCat("SELECT type, amount, balance_after, transfer_id, "
                    "version, at, actor, on_behalf_of ",
                    kPage)}};
  route.handler = [](QueryContext& q) -> absl::StatusOr<http::Response> {
    const absl::string_view id = q.Param("id");
    RETURN_IF_ERROR(ValidateAccountId(id));
    ASSIGN_OR_RETURN(queries::PageRequest page, PageOf(q.request()));
    int64_t after = 0;
    if (!page.after.empty() &&
        (!absl::SimpleAtoi(page.after[0], &after) || after < 0)) {
      return cqrs::InvalidRequest("after is not a cursor of this list");
    }
    ASSIGN_OR_RETURN(
        pqxx::result rows,
        q.Exec(Statement::Prepared(SeesActors(q)
                                       ? "bank_list_transactions_with_actors"
                                       : "bank_list_transactions"),
               {id, after, page.limit + 1}));
    // Every account has its "opened" row, so an empty first page means
    // there is no such account (in this read model, at this position).
    if (rows.empty() && page.after.empty()) return AccountNotFound(id);
    return queries::PageResponse(rows, page.limit, {"version"},
                                 queries::kOmitNullColumns);
  };
  return route;
}

queries::QueryRoute ListAccounts() {
  queries::QueryRoute route;
  route.pattern = "/accounts";
  route.projections = {"account_balances"};
  route.prepared = {
      {"bank_list_accounts_by_owner",
       absl::StrCat(kAccountColumns,
                    "WHERE owner = $1 AND account_id > $2 "
                    "ORDER BY account_id LIMIT $3")},
      {"bank_list_accounts",
       absl::StrCat(kAccountColumns,
                    "WHERE account_id > $1 ORDER BY account_id LIMIT $2")}};
  route.handler = [](QueryContext& q) -> absl::StatusOr<http::Response> {
    ASSIGN_OR_RETURN(queries::PageRequest page, PageOf(q.request()));
    // Ids are never empty, so "" sorts before every one.
    const std::string after = page.after.empty() ? "" : page.after[0];
    const absl::optional<absl::string_view> owner = q.Query("owner");
    if (!owner.has_value()) {
      return q.Page(Statement::Prepared("bank_list_accounts"),
                    {after, page.limit + 1}, page.limit, {"account_id"});
    }
    if (owner->empty() || owner->size() > kMaxOwnerLength) {
      return cqrs::InvalidRequest("owner must be 1 to 200 characters");
    }
    return q.Page(Statement::Prepared("bank_list_accounts_by_owner"),
                  {*owner, after, page.limit + 1}, page.limit, {"account_id"});
  };
  return route;
}

queries::QueryRoute GetStats() {
  queries::QueryRoute route;
  route.pattern = "/stats";
  route.projections = {"bank_stats"};
  // One row from the key/value table. Totals stay numeric (exact: a total
  // may exceed 64 bits); json (not jsonb) keeps the members in ORDER BY
  // order, bytewise as before ("C").
  route.prepared = {{"bank_get_stats",
                     R"sql(
SELECT
  coalesce(max(value) FILTER (WHERE key = 'accounts'), 0)::bigint
    AS accounts,
  coalesce(max(value) FILTER (WHERE key = 'open_accounts'), 0)::bigint
    AS open_accounts,
  coalesce(json_object_agg(substr(key, 9), value ORDER BY key COLLATE "C")
             FILTER (WHERE key LIKE 'balance:%'),
           '{{}}') AS total_balance,
  (SELECT json_object_agg(state, coalesce(n, 0) ORDER BY state COLLATE "C")
     FROM (SELECT substr(key, 11) AS state, value::bigint AS n
             FROM {bank_stats} WHERE key LIKE 'transfers:%') counts
     FULL JOIN (VALUES ('pending'), ('completed'), ('failed')) AS states (state)
       USING (state)) AS transfers
FROM {bank_stats})sql"}};
  route.handler = [](QueryContext& q) -> absl::StatusOr<http::Response> {
    // Aggregates without GROUP BY: always exactly one row.
    return q.One(Statement::Prepared("bank_get_stats"), {}, "not_found");
  };
  return route;
}

queries::QueryRoute GetTransfer() {
  queries::QueryRoute route;
  route.pattern = "/transfers/{id}";
  route.projections = {"transfers"};
  route.prepared = {
      {"bank_get_transfer",
       "SELECT transfer_id, from_account AS \"from\", to_account AS \"to\", "
       "amount, currency, status, reason "
       "FROM {transfers} WHERE transfer_id = $1"}};
  route.handler = [](QueryContext& q) -> absl::StatusOr<http::Response> {
    const absl::string_view id = q.Param("id");
    RETURN_IF_ERROR(ValidateTransferId(id));
    return q.One(Statement::Prepared("bank_get_transfer"), {id},
                 cqrs::WithErrorCode(absl::NotFoundError(absl::StrCat(
                                         "transfer '", id, "' does not exist")),
                                     "transfer_not_found"),
                 queries::kOmitNullColumns);
  };
  return route;
}

}  // namespace

std::vector<cqrs::queries::QueryRoute> BankQueries() {
  return {GetAccount(), ListTransactions(), ListAccounts(), GetStats(),
          GetTransfer()};
}

}  // namespace bank

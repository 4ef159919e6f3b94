#include "example_app/bank_queries.h"

#include <map>
#include <optional>
#include <vector>

#include <pqxx/pqxx>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "example_app/account.h"
#include "example_app/transfer.h"
#include "framework/http/status_mapping.h"
#include "framework/status_macros.h"
#include "projections/sql_array.h"
#include "queries/pagination.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace bank {
namespace {

namespace http = cqrs::http;
namespace queries = cqrs::queries;
using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

constexpr size_t kMaxOwnerLength = 200;

void String(Writer& w, absl::string_view text) {
  w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
}

std::string Finish(const rapidjson::StringBuffer& buffer) {
  return std::string(buffer.GetString(), buffer.GetSize());
}

absl::Status AccountNotFound(absl::string_view id) {
  return http::WithErrorCode(
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

// Columns: account_id, owner, currency, balance, status, version.
void WriteAccount(Writer& w, const pqxx::row& row) {
  w.StartObject();
  w.Key("account_id");
  String(w, row[0].c_str());
  w.Key("owner");
  String(w, row[1].c_str());
  w.Key("currency");
  String(w, row[2].c_str());
  w.Key("balance");
  w.Int64(row[3].as<int64_t>());
  w.Key("status");
  String(w, row[4].c_str());
  w.Key("version");
  w.Int64(row[5].as<int64_t>());
  w.EndObject();
}

// {"items": [...], "next": cursor-or-null} for `rows` fetched with LIMIT
// limit + 1: the extra row only says that another page exists, and the
// cursor is the key (column `key_column`) of the last row shown.
template <typename WriteItem>
std::string PageBody(const pqxx::result& rows, int limit, int key_column,
                     WriteItem write_item) {
  const size_t shown = std::min<size_t>(rows.size(), limit);
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("items");
  w.StartArray();
  for (size_t i = 0; i < shown; ++i) {
    write_item(w, rows[static_cast<pqxx::result::size_type>(i)]);
  }
  w.EndArray();
  w.Key("next");
  if (rows.size() > shown) {
    String(
        w,
        queries::EncodeCursor(
            {rows[static_cast<pqxx::result::size_type>(shown - 1)][key_column]
                 .c_str()}));
  } else {
    w.Null();
  }
  w.EndObject();
  return Finish(buffer);
}

// Batched: one statement answers every request waiting for a thread.
queries::QueryRoute GetAccount(const std::string& schema) {
  queries::QueryRoute route;
  route.pattern = "/accounts/{id}";
  route.projections = {"account_balances"};
  route.prepared = {
      {"bank_get_accounts",
       absl::StrCat("SELECT account_id, owner, currency, balance, status, "
                    "version FROM ",
                    schema,
                    ".account_balances WHERE account_id = ANY($1::text[])")}};
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
    absl::flat_hash_map<std::string, std::string> bodies;
    if (any) {
      for (const pqxx::row& row :
           tx.exec_prepared("bank_get_accounts", ids.literal())) {
        rapidjson::StringBuffer buffer;
        Writer w(buffer);
        WriteAccount(w, row);
        bodies.emplace(row[0].c_str(), Finish(buffer));
      }
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      if (invalid[i]) continue;
      const absl::string_view id = requests[i]->PathParam("id");
      auto it = bodies.find(id);
      if (it == bodies.end()) {
        out[i] = AccountNotFound(id);
      } else {
        out[i] = http::JsonResponse(200, it->second);
      }
    }
    return out;
  };
  return route;
}

queries::QueryRoute ListTransactions(const std::string& schema) {
  queries::QueryRoute route;
  route.pattern = "/accounts/{id}/transactions";
  route.projections = {"account_transactions"};
  route.prepared = {
      {"bank_list_transactions",
       absl::StrCat("SELECT version, type, amount, balance_after, "
                    "transfer_id, to_char(at AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM ",
                    schema,
                    ".account_transactions WHERE account_id = $1 AND "
                    "version > $2 ORDER BY version LIMIT $3")}};
  route.handler =
      [](const http::Request& request,
         pqxx::transaction_base& tx) -> absl::StatusOr<http::Response> {
    const absl::string_view id = request.PathParam("id");
    RETURN_IF_ERROR(ValidateAccountId(id));
    ASSIGN_OR_RETURN(queries::PageRequest page, PageOf(request));
    int64_t after = 0;
    if (!page.after.empty() &&
        (!absl::SimpleAtoi(page.after[0], &after) || after < 0)) {
      return http::WithErrorCode(
          absl::InvalidArgumentError("after is not a cursor of this list"),
          "invalid_request");
    }
    const pqxx::result rows = tx.exec_prepared(
        "bank_list_transactions", std::string(id), after, page.limit + 1);
    // Every account has its "opened" row, so an empty first page means
    // there is no such account (in this read model, at this position).
    if (rows.empty() && page.after.empty()) return AccountNotFound(id);
    return http::JsonResponse(
        200, PageBody(rows, page.limit, 0, [](Writer& w, const pqxx::row& row) {
          w.StartObject();
          w.Key("type");
          String(w, row[1].c_str());
          w.Key("amount");
          w.Int64(row[2].as<int64_t>());
          w.Key("balance_after");
          w.Int64(row[3].as<int64_t>());
          if (!row[4].is_null()) {
            w.Key("transfer_id");
            String(w, row[4].c_str());
          }
          w.Key("version");
          w.Int64(row[0].as<int64_t>());
          w.Key("at");
          String(w, row[5].c_str());
          w.EndObject();
        }));
  };
  return route;
}

queries::QueryRoute ListAccounts(const std::string& schema) {
  queries::QueryRoute route;
  route.pattern = "/accounts";
  route.projections = {"account_balances"};
  const std::string columns =
      "SELECT account_id, owner, currency, balance, status, version FROM ";
  route.prepared = {
      {"bank_list_accounts_by_owner",
       absl::StrCat(columns, schema,
                    ".account_balances WHERE owner = $1 AND account_id > $2 "
                    "ORDER BY account_id LIMIT $3")},
      {"bank_list_accounts",
       absl::StrCat(columns, schema,
                    ".account_balances WHERE account_id > $1 "
                    "ORDER BY account_id LIMIT $2")}};
  route.handler =
      [](const http::Request& request,
         pqxx::transaction_base& tx) -> absl::StatusOr<http::Response> {
    ASSIGN_OR_RETURN(queries::PageRequest page, PageOf(request));
    // Ids are never empty, so "" sorts before every one.
    const std::string after = page.after.empty() ? "" : page.after[0];
    absl::optional<absl::string_view> owner = request.Query("owner");
    pqxx::result rows;
    if (owner.has_value()) {
      if (owner->empty() || owner->size() > kMaxOwnerLength) {
        return http::WithErrorCode(
            absl::InvalidArgumentError("owner must be 1 to 200 characters"),
            "invalid_request");
      }
      rows = tx.exec_prepared("bank_list_accounts_by_owner",
                              std::string(*owner), after, page.limit + 1);
    } else {
      rows = tx.exec_prepared("bank_list_accounts", after, page.limit + 1);
    }
    return http::JsonResponse(200, PageBody(rows, page.limit, 0, WriteAccount));
  };
  return route;
}

queries::QueryRoute GetStats(const std::string& schema) {
  queries::QueryRoute route;
  route.pattern = "/stats";
  route.projections = {"bank_stats"};
  route.prepared = {{"bank_get_stats", absl::StrCat("SELECT key, value FROM ",
                                                    schema, ".bank_stats")}};
  route.handler =
      [](const http::Request&,
         pqxx::transaction_base& tx) -> absl::StatusOr<http::Response> {
    int64_t accounts = 0;
    int64_t open_accounts = 0;
    // Exact decimal integers: a total may exceed 64 bits.
    std::map<std::string, std::string> balances;  // sorted by currency
    std::map<std::string, int64_t> transfers = {
        {"pending", 0}, {"completed", 0}, {"failed", 0}};
    for (const pqxx::row& row : tx.exec_prepared("bank_get_stats")) {
      absl::string_view key = row[0].c_str();
      if (absl::ConsumePrefix(&key, "balance:")) {
        balances[std::string(key)] = row[1].as<std::string>();
        continue;
      }
      const int64_t value = row[1].as<int64_t>();
      if (key == "accounts") {
        accounts = value;
      } else if (key == "open_accounts") {
        open_accounts = value;
      } else if (absl::ConsumePrefix(&key, "transfers:")) {
        transfers[std::string(key)] = value;
      }
    }
    rapidjson::StringBuffer buffer;
    Writer w(buffer);
    w.StartObject();
    w.Key("accounts");
    w.Int64(accounts);
    w.Key("open_accounts");
    w.Int64(open_accounts);
    w.Key("total_balance");
    w.StartObject();
    for (const auto& [currency, amount] : balances) {
      String(w, currency);
      w.RawValue(amount.data(), amount.size(), rapidjson::kNumberType);
    }
    w.EndObject();
    w.Key("transfers");
    w.StartObject();
    for (const auto& [state, count] : transfers) {
      String(w, state);
      w.Int64(count);
    }
    w.EndObject();
    w.EndObject();
    return http::JsonResponse(200, Finish(buffer));
  };
  return route;
}

queries::QueryRoute GetTransfer(const std::string& schema) {
  queries::QueryRoute route;
  route.pattern = "/transfers/{id}";
  route.projections = {"transfers"};
  route.prepared = {
      {"bank_get_transfer",
       absl::StrCat("SELECT transfer_id, from_account, to_account, amount, "
                    "currency, status, reason FROM ",
                    schema, ".transfers WHERE transfer_id = $1")}};
  route.handler =
      [](const http::Request& request,
         pqxx::transaction_base& tx) -> absl::StatusOr<http::Response> {
    const absl::string_view id = request.PathParam("id");
    RETURN_IF_ERROR(ValidateTransferId(id));
    const pqxx::result rows =
        tx.exec_prepared("bank_get_transfer", std::string(id));
    if (rows.empty()) {
      return http::WithErrorCode(absl::NotFoundError(absl::StrCat(
                                     "transfer '", id, "' does not exist")),
                                 "transfer_not_found");
    }
    const pqxx::row row = rows[0];
    rapidjson::StringBuffer buffer;
    Writer w(buffer);
    w.StartObject();
    w.Key("transfer_id");
    String(w, row[0].c_str());
    w.Key("from");
    String(w, row[1].c_str());
    w.Key("to");
    String(w, row[2].c_str());
    w.Key("amount");
    w.Int64(row[3].as<int64_t>());
    w.Key("currency");
    String(w, row[4].c_str());
    w.Key("status");
    String(w, row[5].c_str());
    if (!row[6].is_null()) {
      w.Key("reason");
      String(w, row[6].c_str());
    }
    w.EndObject();
    return http::JsonResponse(200, Finish(buffer));
  };
  return route;
}

}  // namespace

void RegisterBankQueries(cqrs::queries::QueryService& queries,
                         http::Router& router, absl::string_view schema) {
  const std::string s(schema);
  queries.Add(router, GetAccount(s));
  queries.Add(router, ListTransactions(s));
  queries.Add(router, ListAccounts(s));
  queries.Add(router, GetStats(s));
  queries.Add(router, GetTransfer(s));
}

}  // namespace bank

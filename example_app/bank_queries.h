// The bank's read side: the query routes of ../shared/specs/bank-api.md,
// answered from the bank's projections (example_app/bank_projections.h).
//
//   GET /accounts/{id}                account_balances
//   GET /accounts/{id}/transactions   account_transactions (cursor pages)
//   GET /accounts?owner=              account_balances (cursor pages)
//   GET /stats                        bank_stats
//
//   bank::RegisterBankQueries(*query_service, router, "bank");
//
// Thread-safety: the handlers are thread-safe.
#ifndef EXAMPLE_APP_BANK_QUERIES_H_
#define EXAMPLE_APP_BANK_QUERIES_H_

#include <string>

#include "absl/strings/string_view.h"
#include "framework/http/router.h"
#include "queries/query_service.h"

namespace bank {

// Registers the routes above in `router`, reading the views in `schema`,
// which must be the one `queries` expands `{table}` placeholders with
// (QueryServiceOptions::schema); otherwise records kInvalidArgument in
// router.status() and registers nothing.
void RegisterBankQueries(cqrs::queries::QueryService& queries,
                         cqrs::http::Router& router, absl::string_view schema);

}  // namespace bank

#endif  // EXAMPLE_APP_BANK_QUERIES_H_

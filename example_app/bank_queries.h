// The bank's read side: the query routes of ../shared/specs/bank-api.md,
// answered from the bank's projections (example_app/bank_projections.h).
//
//   GET /accounts/{id}                account_balances
//   GET /accounts/{id}/transactions   account_transactions (cursor pages;
//                                     with actor and on_behalf_of for
//                                     callers with the admin scope)
//   GET /accounts?owner=              account_balances (cursor pages)
//   GET /stats                        bank_stats
//
//   for (auto& route : bank::BankQueries()) app.AddQuery(std::move(route));
//
// Thread-safety: the handlers are thread-safe.
#ifndef EXAMPLE_APP_BANK_QUERIES_H_
#define EXAMPLE_APP_BANK_QUERIES_H_

#include <vector>

#include "queries/query_service.h"

namespace bank {

// The routes above, `{table}` placeholders in their SQL.
std::vector<cqrs::queries::QueryRoute> BankQueries();

}  // namespace bank

#endif  // EXAMPLE_APP_BANK_QUERIES_H_

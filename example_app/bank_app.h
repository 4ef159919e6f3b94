// The example bank (../shared/specs/bank-api.md) as one cqrs::App: its
// events and those it publishes to other systems (version 1 of
// bank.account.* and bank.transfer.*, docs/integration.md), the account and
// transfer commands, the read models, the transfer process manager, the
// query routes and its OpenAPI document. The app object does the wiring
// (app/app.h) and gives `bank` its command line.
//
//   cqrs::App app("bank", bank::BankOptions());
//   bank::DeclareBank(app);
//   return app.Main(argc, argv);       // or cqrs::AppServer::Start(app, ...)
//
// Thread-safety: declare from one thread; the declared routes and
// handlers are thread-safe.
#ifndef EXAMPLE_APP_BANK_APP_H_
#define EXAMPLE_APP_BANK_APP_H_

#include "absl/strings/string_view.h"
#include "app/app.h"

namespace bank {

// The CloudEvents source of the bank's published events. A relative
// reference: it names the bank wherever it runs, and consumers
// de-duplicate on source + id, so it must not change with the host.
inline constexpr char kEventSource[] = "/bank";

// The app's options: schema "bank", data dir ./bank-data, kEventSource.
cqrs::AppOptions BankOptions();

// Declares the whole bank on `app`.
void DeclareBank(cqrs::App& app);

// The bank's OpenAPI 3 document (example_app/openapi.json), served at
// GET /openapi.json.
absl::string_view OpenApiDocument();

}  // namespace bank

#endif  // EXAMPLE_APP_BANK_APP_H_

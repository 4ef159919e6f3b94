// The example bank (../shared/specs/bank-api.md) as one cqrs::App: its
// events, the account and transfer commands, the read models, the transfer
// process manager, the query routes and its OpenAPI document. The app
// object does the wiring (app/app.h) and gives `bank` its command line.
//
//   cqrs::App app("bank");
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

// Declares the whole bank on `app`.
void DeclareBank(cqrs::App& app);

// The bank's OpenAPI 3 document (example_app/openapi.json), served at
// GET /openapi.json.
absl::string_view OpenApiDocument();

}  // namespace bank

#endif  // EXAMPLE_APP_BANK_APP_H_

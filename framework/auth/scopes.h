// The scopes an API key can hold, and what each lets its holder call.
//
//   router.Add("POST", "/accounts", OpenAccount,
//              {.access = http::RouteAccess::Scope(auth::kCommandsScope)});
//   keys->CreateKey("ci", {std::string(auth::kQueriesScope)}, {});
//
// Thread-safety: constants.
#ifndef FRAMEWORK_AUTH_SCOPES_H_
#define FRAMEWORK_AUTH_SCOPES_H_

#include <array>

#include "absl/strings/string_view.h"

namespace cqrs::auth {

// Every command route of an app (its POSTs).
inline constexpr absl::string_view kCommandsScope = "commands";
// Every query route of an app (its GETs on read models).
inline constexpr absl::string_view kQueriesScope = "queries";
// The published event feed.
inline constexpr absl::string_view kEventsScope = "events";
// Operating the app: projection status and operations, keys, webhooks.
inline constexpr absl::string_view kAdminScope = "admin";
// GET /metrics.
inline constexpr absl::string_view kMetricsScope = "metrics";

inline constexpr std::array<absl::string_view, 5> kAllScopes = {
    kCommandsScope, kQueriesScope, kEventsScope, kAdminScope, kMetricsScope};

}  // namespace cqrs::auth

#endif  // FRAMEWORK_AUTH_SCOPES_H_

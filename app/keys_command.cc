// `APP keys create | list | revoke`: the app's API keys
// (framework/auth/api_keys.h).
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "app/internal/commands.h"
#include "app/internal/parts.h"
#include "framework/auth/api_keys.h"
#include "framework/auth/scopes.h"

namespace cqrs::app_internal {
namespace {

std::string Iso(const std::optional<absl::Time>& t) {
  if (!t.has_value()) return "";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", *t, absl::UTCTimeZone());
}

}  // namespace

absl::StatusOr<absl::Duration> ParseExpiry(absl::string_view text) {
  absl::string_view days = text;
  int64_t n = 0;
  if (absl::ConsumeSuffix(&days, "d") && absl::SimpleAtoi(days, &n) && n > 0 &&
      n <= 36500) {
    return absl::Hours(24 * n);
  }
  absl::Duration d;
  if (absl::ParseDuration(text, &d) && d > absl::ZeroDuration()) return d;
  return absl::InvalidArgumentError(absl::StrCat(
      "--expires-in must be a positive duration such as 30d, 12h or 90m, not '",
      text, "'"));
}

int Keys(App& app, const DatabaseFlags& db, const KeysFlags& flags) {
  const std::vector<std::string> scopes =
      absl::StrSplit(flags.scopes, ',', absl::SkipEmpty());
  if (flags.command == "create") {
    const std::set<std::string> known = KnownScopes(app);
    for (const std::string& scope : scopes) {
      if (known.count(scope) == 0) {
        std::cerr << app.name() << ": unknown scope '" << scope
                  << "'; this app's scopes are " << absl::StrJoin(known, ", ")
                  << " (see `" << app.name() << " keys create --help`)"
                  << std::endl;
        return kUsage;
      }
    }
  }
  auto database = OpenDatabase(app.name(), db, 2);
  if (!database.ok()) return Fail(app, database.status());
  if (absl::Status s = MigrateAll(*database->pool, db.schema); !s.ok()) {
    return Fail(app, s);
  }
  auto keys = auth::ApiKeyStore::Create(database->pool.get(), db.schema);
  if (!keys.ok()) return Fail(app, keys.status());
  if (flags.command == "create") {
    std::optional<absl::Duration> expires;
    if (!flags.expires_in.empty()) {
      absl::StatusOr<absl::Duration> d = ParseExpiry(flags.expires_in);
      if (!d.ok()) {
        std::cerr << app.name() << ": " << d.status().message() << " (see `"
                  << app.name() << " keys create --help`)" << std::endl;
        return kUsage;
      }
      expires = *d;
    }
    auto k = (*keys)->CreateKey(flags.name, scopes, expires);
    if (!k.ok()) {
      if (absl::IsInvalidArgument(k.status())) {
        std::cerr << app.name() << ": " << k.status().message() << " (see `"
                  << app.name() << " keys create --help`)" << std::endl;
        return kUsage;
      }
      return Fail(app, k.status());
    }
    std::cout << "key " << k->key.id << " (" << k->key.name << "), scopes "
              << absl::StrJoin(k->key.scopes, ",")
              << (k->key.expires_at.has_value()
                      ? absl::StrCat(", expires ", Iso(k->key.expires_at))
                      : std::string())
              << "\nthe token is shown once; keep it secret:\n"
              << k->token << std::endl;
    return kOk;
  }
  if (flags.command == "list") {
    auto all = (*keys)->List();
    if (!all.ok()) return Fail(app, all.status());
    if (flags.json) {
      std::cout << auth::ApiKeyListJson(*all) << std::endl;
      return kOk;
    }
    std::cout << absl::StrFormat("%-12s %-20s %-24s %-20s %-20s %s\n", "ID",
                                 "NAME", "SCOPES", "CREATED", "EXPIRES",
                                 "REVOKED");
    for (const auth::ApiKey& k : *all) {
      std::cout << absl::StrFormat("%-12s %-20s %-24s %-20s %-20s %s\n", k.id,
                                   k.name, absl::StrJoin(k.scopes, ","),
                                   Iso(k.created_at),
                                   k.expires_at ? Iso(k.expires_at) : "-",
                                   k.revoked_at ? Iso(k.revoked_at) : "-");
    }
    return kOk;
  }
  // revoke
  absl::Status s = (*keys)->Revoke(flags.id);
  if (absl::IsNotFound(s)) {
    std::cerr << app.name() << ": " << s.message() << std::endl;
    return kFailure;
  }
  if (!s.ok()) return Fail(app, s);
  std::cout << "key " << flags.id
            << " revoked (refused everywhere within a second)" << std::endl;
  return kOk;
}

}  // namespace cqrs::app_internal

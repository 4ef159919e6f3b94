// The account aggregate's rules, without a database.
#include "example_app/account.h"

#include <limits>

#include <catch2/catch.hpp>

#include "eventstore/in_memory_event_store.h"
#include "framework/http/status_mapping.h"

namespace bank {
namespace {

std::string CodeOf(const Decision& d) {
  return cqrs::http::ErrorCodeOf(d.status());
}

TEST_CASE("account decisions follow the contract's rules", "[bank]") {
  Account none;
  CHECK(CodeOf(DecideDeposit(1)(none, 0)) == "account_not_found");
  CHECK(CodeOf(DecideWithdraw(1)(none, 0)) == "account_not_found");
  CHECK(CodeOf(DecideClose()(none, 0)) == "account_not_found");
  REQUIRE(DecideOpen("Ann", "EUR")(none, 0).ok());

  Account open{true, "Ann", "EUR", 100, false};
  CHECK(CodeOf(DecideOpen("Ann", "EUR")(open, 1)) == "account_exists");
  CHECK(CodeOf(DecideWithdraw(101)(open, 1)) == "insufficient_funds");
  REQUIRE(DecideWithdraw(100)(open, 1).ok());
  CHECK(CodeOf(DecideClose()(open, 1)) == "account_not_empty");

  Account closed{true, "Ann", "EUR", 0, true};
  CHECK(CodeOf(DecideDeposit(1)(closed, 3)) == "account_closed");
  CHECK(CodeOf(DecideWithdraw(1)(closed, 3)) == "account_closed");
  CHECK(CodeOf(DecideClose()(closed, 3)) == "account_closed");
}

TEST_CASE("a balance can never overflow", "[bank]") {
  const int64_t max = std::numeric_limits<int64_t>::max();
  Account rich{true, "Ann", "EUR", max - kMaxAmount + 1, false};
  Decision d = DecideDeposit(kMaxAmount)(rich, 9);
  CHECK(CodeOf(d) == "balance_limit_exceeded");
  CHECK(d.status().code() == absl::StatusCode::kFailedPrecondition);
  REQUIRE(DecideDeposit(kMaxAmount - 1)(rich, 9).ok());
}

TEST_CASE("account events round-trip through the registry and snapshots",
          "[bank]") {
  cqrs::eventstore::InMemoryEventStore store;
  AccountType& accounts = AccountAggregate();
  auto meta = cqrs::commands::CommandMetadata::ForCommand("");
  REQUIRE(
      accounts.Execute(store, "rt", meta, {}, DecideOpen("Zoë \"Z\"", "CHF"))
          .ok());
  for (int i = 0; i < 120; ++i) {
    REQUIRE(accounts.Execute(store, "rt", meta, {}, DecideDeposit(3)).ok());
  }
  REQUIRE(accounts.Execute(store, "rt", meta, {}, DecideWithdraw(60)).ok());
  auto snapshot = store.LoadSnapshot("account-rt");
  REQUIRE(snapshot.ok());
  CHECK(snapshot->stream_version == 100);
  accounts.ClearCache();
  auto loaded = accounts.Load(store, "rt");
  REQUIRE(loaded.ok());
  CHECK(loaded->second == 122);
  CHECK(loaded->first.owner == "Zoë \"Z\"");
  CHECK(loaded->first.currency == "CHF");
  CHECK(loaded->first.balance == 300);
  CHECK(!loaded->first.closed);
}

}  // namespace
}  // namespace bank

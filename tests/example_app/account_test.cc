// The account aggregate's rules and the bank's stored JSON, without a
// database.
#include "example_app/account.h"

#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "eventstore/in_memory_event_store.h"
#include "example_app/transfer.h"
#include "framework/http/message.h"
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
  auto meta = cqrs::commands::CommandMetadata::ForCommand(
      "", cqrs::http::kAnonymousActor);
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
  // The snapshot's JSON as stored before Account had a JSON shape.
  CHECK(snapshot->state ==
        R"({"owner":"Zoë \"Z\"","currency":"CHF","balance":297,)"
        R"("closed":false})");
  accounts.ClearCache();
  auto loaded = accounts.Load(store, "rt");
  REQUIRE(loaded.ok());
  CHECK(loaded->second == 122);
  CHECK(loaded->first.exists);
  CHECK(loaded->first.owner == "Zoë \"Z\"");
  CHECK(loaded->first.currency == "CHF");
  CHECK(loaded->first.balance == 300);
  CHECK(!loaded->first.closed);
}

// The JSON stored before the events had JSON shapes: what the shapes must
// still write, and read.
TEST_CASE("events keep their stored JSON", "[bank]") {
  struct Stored {
    AccountEvent event;
    std::string type;
    std::string data;
  };
  const std::vector<Stored> account = {
      {AccountOpened{"Ann \"A\"", "EUR"}, "AccountOpened",
       R"({"owner":"Ann \"A\"","currency":"EUR"})"},
      {MoneyDeposited{5}, "MoneyDeposited", R"({"amount":5})"},
      {MoneyWithdrawn{3}, "MoneyWithdrawn", R"({"amount":3})"},
      {AccountClosed{}, "AccountClosed", "{}"},
      {TransferDebit{"t1", 2}, "AccountDebitedForTransfer",
       R"({"transfer_id":"t1","amount":2})"},
      {TransferCredit{"t1", 2}, "AccountCreditedForTransfer",
       R"({"transfer_id":"t1","amount":2})"},
      {TransferRefund{"t1", 2}, "AccountRefundedForTransfer",
       R"({"transfer_id":"t1","amount":2})"},
  };
  for (const Stored& s : account) {
    INFO(s.type);
    auto encoded = AccountEvents().Encode(s.event);
    REQUIRE(encoded.ok());
    CHECK(encoded->type == s.type);
    CHECK(encoded->schema_version == 1);
    CHECK(encoded->data == s.data);
    auto decoded = AccountEvents().Decode(s.type, 1, s.data);
    REQUIRE(decoded.ok());
    CHECK(decoded->index() == s.event.index());
    CHECK(BalanceDelta(*decoded) == BalanceDelta(s.event));
  }
  CHECK(AccountEventTypes().size() == account.size());

  const std::vector<std::pair<std::string, std::string>> transfer = {
      {"TransferRequested",
       R"({"from":"a","to":"b","amount":7,"currency":"EUR"})"},
      {"TransferDebited", "{}"},
      {"TransferCredited", "{}"},
      {"TransferCompleted", "{}"},
      {"TransferRefunded", "{}"},
      {"TransferFailed", R"({"reason":"insufficient_funds"})"},
  };
  CHECK(TransferEventTypes().size() == transfer.size());
  for (const auto& [type, data] : transfer) {
    INFO(type);
    auto decoded = TransferEvents().Decode(type, 1, data);
    REQUIRE(decoded.ok());
    auto encoded = TransferEvents().Encode(*decoded);
    REQUIRE(encoded.ok());
    CHECK(encoded->type == type);
    CHECK(encoded->data == data);
  }
}

}  // namespace
}  // namespace bank

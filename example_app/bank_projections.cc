#include "example_app/bank_projections.h"

#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <variant>

#include <pqxx/pqxx>

#include "absl/numeric/int128.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "example_app/account.h"
#include "example_app/transfer.h"
#include "framework/json_shape.h"
#include "projections/sql_array.h"
#include "rapidjson/document.h"

namespace bank {
namespace {

using cqrs::eventstore::RecordedEvent;
using cqrs::projections::EventBatch;
using cqrs::projections::Projection;
using cqrs::projections::ProjectionContext;
using cqrs::projections::ProjectionTable;
using cqrs::projections::SqlArray;

constexpr absl::string_view kAccountPrefix = "account-";

// The account id of an account stream ("account-<id>").
std::string AccountId(const RecordedEvent& e) {
  absl::string_view s = e.stream_id;
  if (s.substr(0, kAccountPrefix.size()) == kAccountPrefix) {
    s.remove_prefix(kAccountPrefix.size());
  }
  return std::string(s);
}

absl::StatusOr<AccountEvent> Decode(const RecordedEvent& e) {
  absl::StatusOr<AccountEvent> event =
      AccountEvents().Decode(e.event_type, e.schema_version, e.data);
  if (!event.ok()) {
    return absl::Status(event.status().code(),
                        absl::StrCat("event at ", e.position.ToToken(), ": ",
                                     event.status().message()));
  }
  return event;
}

std::string Bools(bool b) { return b ? "t" : "f"; }

bool IsTransferEvent(const RecordedEvent& e) {
  return absl::StartsWith(e.stream_id, "transfer-");
}

// --- account_balances ------------------------------------------------------

absl::Status ApplyBalances(ProjectionContext& ctx, EventBatch events) {
  struct Change {
    bool opened = false;
    std::string owner, currency;
    int64_t delta = 0;
    bool closed = false;
    int64_t version = 0;
  };
  std::map<std::string, Change> changes;
  for (const RecordedEvent& e : events) {
    absl::StatusOr<AccountEvent> event = Decode(e);
    if (!event.ok()) return event.status();
    Change& c = changes[AccountId(e)];
    if (auto* o = std::get_if<AccountOpened>(&*event)) {
      c.opened = true;
      c.owner = o->owner;
      c.currency = o->currency;
    }
    if (std::holds_alternative<AccountClosed>(*event)) c.closed = true;
    c.delta += BalanceDelta(*event);
    c.version = e.stream_version;
  }
  SqlArray new_ids, owners, currencies, balances, statuses, new_versions;
  SqlArray ids, deltas, closed, versions;
  for (const auto& [id, c] : changes) {
    if (c.opened) {
      new_ids.Add(id);
      owners.Add(c.owner);
      currencies.Add(c.currency);
      balances.Add(c.delta);
      statuses.Add(c.closed ? "closed" : "open");
      new_versions.Add(c.version);
    } else {
      ids.Add(id);
      deltas.Add(c.delta);
      closed.Add(Bools(c.closed));
      versions.Add(c.version);
    }
  }
  const std::string& table = ctx.Table("account_balances");
  if (!new_ids.empty()) {
    ctx.tx().exec_params(
        absl::StrCat("INSERT INTO ", table,
                     " (account_id, owner, currency, balance, status, "
                     "version) SELECT * FROM unnest($1::text[], $2::text[], "
                     "$3::text[], $4::bigint[], $5::text[], $6::bigint[])"),
        new_ids.literal(), owners.literal(), currencies.literal(),
        balances.literal(), statuses.literal(), new_versions.literal());
  }
  if (!ids.empty()) {
    ctx.tx().exec_params(
        absl::StrCat(
            "UPDATE ", table,
            " AS t SET balance = t.balance + d.delta, status = CASE WHEN "
            "d.closed THEN 'closed' ELSE t.status END, version = d.version "
            "FROM unnest($1::text[], $2::bigint[], $3::boolean[], "
            "$4::bigint[]) AS d(id, delta, closed, version) "
            "WHERE t.account_id = d.id"),
        ids.literal(), deltas.literal(), closed.literal(), versions.literal());
  }
  return absl::OkStatus();
}

// --- account_transactions --------------------------------------------------

// Who appended an event (commands/command_metadata.h): its metadata's
// actor and on_behalf_of, each empty when absent (events stored before
// actors were recorded, or appended outside any command).
struct Who {
  std::string actor;
  std::string on_behalf_of;
};

Who WhoOf(const RecordedEvent& e) {
  cqrs::json::SmallDocument small;
  rapidjson::Document& doc = small.doc;
  doc.Parse(e.metadata.data(), e.metadata.size());
  Who who;
  if (doc.HasParseError() || !doc.IsObject()) return who;
  auto text = [&doc](const char* name) {
    auto it = doc.FindMember(name);
    if (it == doc.MemberEnd() || !it->value.IsString()) return std::string();
    return std::string(it->value.GetString(), it->value.GetStringLength());
  };
  who.actor = text("actor");
  who.on_behalf_of = text("on_behalf_of");
  return who;
}

void AddOrNull(SqlArray& array, const std::string& text) {
  if (text.empty()) {
    array.AddNull();
  } else {
    array.Add(text);
  }
}

absl::Status ApplyTransactions(ProjectionContext& ctx, EventBatch events) {
  const std::string& table = ctx.Table("account_transactions");
  // The running balance of each account, kept beside the rows so that the
  // rows need no lookup (and their primary key can be built after a
  // rebuild's bulk fill).
  const std::string& balances = ctx.Table("account_transactions_balances");
  // Running balances: from this batch's openings, else from the table.
  std::map<std::string, int64_t> balance;
  // In key order, for the index's sake (here and for the rows below).
  SqlArray unknown;
  {
    std::map<std::string, bool> first_is_opening;
    for (const RecordedEvent& e : events) {
      first_is_opening.emplace(AccountId(e),
                               e.event_type == AccountOpened::kName);
    }
    for (const auto& [id, opening] : first_is_opening) {
      if (!opening) unknown.Add(id);
    }
  }
  if (!unknown.empty()) {
    for (const pqxx::row& r : ctx.tx().exec_params(
             absl::StrCat("SELECT account_id, balance FROM ", balances,
                          " WHERE account_id = ANY($1::text[])"),
             unknown.literal())) {
      if (!r[1].is_null()) balance[r[0].as<std::string>()] = r[1].as<int64_t>();
    }
  }
  struct Row {
    int64_t version;
    const char* type;
    int64_t amount;
    int64_t after;
    int64_t at_us;
    const std::string* transfer_id;  // into the decoded event; or null
    Who who;
  };
  std::vector<AccountEvent> decoded;
  decoded.reserve(events.size());
  std::map<std::string, std::vector<Row>> rows;
  for (const RecordedEvent& e : events) {
    absl::StatusOr<AccountEvent> event = Decode(e);
    if (!event.ok()) return event.status();
    const std::string id = AccountId(e);
    int64_t& b = balance[id];
    const int64_t delta = BalanceDelta(*event);
    b += delta;
    decoded.push_back(*std::move(event));
    const AccountEvent& a = decoded.back();
    const char* type = "opened";
    const std::string* transfer = nullptr;
    if (std::holds_alternative<MoneyDeposited>(a)) type = "deposit";
    if (std::holds_alternative<MoneyWithdrawn>(a)) type = "withdrawal";
    if (std::holds_alternative<AccountClosed>(a)) type = "closed";
    if (auto* t = std::get_if<TransferDebit>(&a)) {
      type = "transfer_out";
      transfer = &t->transfer_id;
    } else if (auto* t = std::get_if<TransferCredit>(&a)) {
      type = "transfer_in";
      transfer = &t->transfer_id;
    } else if (auto* t = std::get_if<TransferRefund>(&a)) {
      type = "refund";
      transfer = &t->transfer_id;
    }
    rows[id].push_back(Row{e.stream_version, type, delta < 0 ? -delta : delta,
                           b, absl::ToUnixMicros(e.recorded_at), transfer,
                           WhoOf(e)});
  }
  SqlArray ids, versions, types, amounts, after, at, transfers, actors,
      on_behalf_of;
  for (const auto& [id, list] : rows) {
    for (const Row& r : list) {
      ids.Add(id);
      versions.Add(r.version);
      types.Add(r.type);
      amounts.Add(r.amount);
      after.Add(r.after);
      at.Add(r.at_us);
      if (r.transfer_id != nullptr) {
        transfers.Add(*r.transfer_id);
      } else {
        transfers.AddNull();
      }
      AddOrNull(actors, r.who.actor);
      AddOrNull(on_behalf_of, r.who.on_behalf_of);
    }
  }
  ctx.tx().exec_params(
      absl::StrCat(
          "INSERT INTO ", table,
          " (account_id, version, type, amount, balance_after, at, "
          "transfer_id, actor, on_behalf_of) SELECT d.id, d.v, d.type, "
          "d.amount, d.after, to_timestamp(d.us::float8 / 1000000), "
          "d.transfer, d.actor, d.on_behalf_of FROM "
          "unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], "
          "$5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::text[]) "
          "AS d(id, v, type, amount, after, us, transfer, actor, "
          "on_behalf_of)"),
      ids.literal(), versions.literal(), types.literal(), amounts.literal(),
      after.literal(), at.literal(), transfers.literal(), actors.literal(),
      on_behalf_of.literal());
  SqlArray balance_ids, balance_values;
  for (const auto& [id, b] : balance) {
    balance_ids.Add(id);
    balance_values.Add(b);
  }
  ctx.tx().exec_params(
      absl::StrCat("INSERT INTO ", balances,
                   " AS b (account_id, balance) SELECT * FROM "
                   "unnest($1::text[], $2::bigint[]) ON CONFLICT (account_id) "
                   "DO UPDATE SET balance = EXCLUDED.balance"),
      balance_ids.literal(), balance_values.literal());
  return absl::OkStatus();
}

// --- bank_stats --------------------------------------------------------------

absl::Status ApplyStats(ProjectionContext& ctx, EventBatch events) {
  const std::string& stats = ctx.Table("bank_stats");
  const std::string& accounts = ctx.Table("bank_stats_accounts");
  std::map<std::string, std::string> currency;  // account id -> currency
  SqlArray unknown;
  for (const RecordedEvent& e : events) {
    if (e.event_type == AccountOpened::kName || IsTransferEvent(e)) continue;
    unknown.Add(AccountId(e));
  }
  if (!unknown.empty()) {
    for (const pqxx::row& r : ctx.tx().exec_params(
             absl::StrCat("SELECT account_id, currency FROM ", accounts,
                          " WHERE account_id = ANY($1::text[])"),
             unknown.literal())) {
      currency[r[0].as<std::string>()] = r[1].as<std::string>();
    }
  }
  // Wide enough for any batch: each event moves at most 2^63 - 1, and the
  // stored totals are numeric, so no reachable state overflows.
  std::map<std::string, absl::int128> delta;
  SqlArray new_ids, new_currencies;
  for (const RecordedEvent& e : events) {
    if (IsTransferEvent(e)) {
      // Every transfer is pending from its request until it completes or
      // fails.
      if (e.event_type == TransferRequested::kName) {
        delta["transfers:pending"] += 1;
      } else if (e.event_type == TransferCompleted::kName) {
        delta["transfers:pending"] -= 1;
        delta["transfers:completed"] += 1;
      } else if (e.event_type == TransferFailed::kName) {
        delta["transfers:pending"] -= 1;
        delta["transfers:failed"] += 1;
      }
      continue;
    }
    absl::StatusOr<AccountEvent> event = Decode(e);
    if (!event.ok()) return event.status();
    const std::string id = AccountId(e);
    if (auto* o = std::get_if<AccountOpened>(&*event)) {
      currency[id] = o->currency;
      new_ids.Add(id);
      new_currencies.Add(o->currency);
      delta["accounts"] += 1;
      delta["open_accounts"] += 1;
      delta[absl::StrCat("balance:", o->currency)] += 0;
    } else if (std::holds_alternative<AccountClosed>(*event)) {
      delta["open_accounts"] -= 1;
    } else {
      auto it = currency.find(id);
      if (it == currency.end()) {
        return absl::FailedPreconditionError(
            absl::StrCat("event at ", e.position.ToToken(), ": account '", id,
                         "' was never opened"));
      }
      delta[absl::StrCat("balance:", it->second)] += BalanceDelta(*event);
    }
  }
  if (!new_ids.empty()) {
    ctx.tx().exec_params(absl::StrCat("INSERT INTO ", accounts,
                                      " (account_id, currency) SELECT * FROM "
                                      "unnest($1::text[], $2::text[])"),
                         new_ids.literal(), new_currencies.literal());
  }
  SqlArray keys, values;
  for (const auto& [key, value] : delta) {
    keys.Add(key);
    std::ostringstream text;
    text << value;
    values.Add(text.str());
  }
  ctx.tx().exec_params(
      absl::StrCat("INSERT INTO ", stats,
                   " AS s (key, value) SELECT * FROM unnest($1::text[], "
                   "$2::numeric[]) ON CONFLICT (key) DO UPDATE SET "
                   "value = s.value + EXCLUDED.value"),
      keys.literal(), values.literal());
  return absl::OkStatus();
}

}  // namespace

Projection AccountBalancesProjection() {
  Projection p;
  p.name = "account_balances";
  p.version = 1;
  p.event_types = AccountEventTypes();
  p.tables = {
      {"account_balances",
       "CREATE TABLE {table} ("
       "  account_id text PRIMARY KEY,"
       "  owner      text NOT NULL,"
       "  currency   text NOT NULL,"
       "  balance    bigint NOT NULL,"
       "  status     text NOT NULL,"
       "  version    bigint NOT NULL) WITH (fillfactor = 50);"
       "CREATE INDEX {table_name}_owner_idx ON {table} (owner, account_id)"}};
  p.apply = ApplyBalances;
  return p;
}

Projection AccountTransactionsProjection() {
  Projection p;
  p.name = "account_transactions";
  // 2: each row records who appended its event (actor, on_behalf_of).
  p.version = 2;
  p.event_types = AccountEventTypes();
  ProjectionTable rows;
  rows.name = "account_transactions";
  rows.ddl =
      "CREATE TABLE {table} ("
      "  account_id    text NOT NULL,"
      "  version       bigint NOT NULL,"
      "  type          text NOT NULL,"
      "  amount        bigint NOT NULL,"
      "  balance_after bigint NOT NULL,"
      "  transfer_id   text,"
      "  at            timestamptz NOT NULL,"
      "  actor         text,"
      "  on_behalf_of  text)";
  rows.deferred_indexes = {
      "ALTER TABLE {table} ADD PRIMARY KEY (account_id, version)"};
  ProjectionTable balances;
  balances.name = "account_transactions_balances";
  balances.ddl =
      "CREATE TABLE {table} ("
      "  account_id text PRIMARY KEY,"
      "  balance    bigint NOT NULL) WITH (fillfactor = 50)";
  p.tables = {rows, balances};
  p.apply = ApplyTransactions;
  return p;
}

Projection BankStatsProjection() {
  Projection p;
  p.name = "bank_stats";
  // 2: totals are numeric (version 1's bigint overflowed for legal
  // balances: two accounts near 2^62 each).
  p.version = 2;
  p.event_types = AccountEventTypes();
  for (const char* type : {TransferRequested::kName, TransferCompleted::kName,
                           TransferFailed::kName}) {
    p.event_types.push_back(type);
  }
  p.tables = {{"bank_stats",
               "CREATE TABLE {table} ("
               "  key   text PRIMARY KEY,"
               "  value numeric NOT NULL)"},
              {"bank_stats_accounts",
               "CREATE TABLE {table} ("
               "  account_id text PRIMARY KEY,"
               "  currency   text NOT NULL)"}};
  p.apply = ApplyStats;
  return p;
}

// --- transfers ---------------------------------------------------------------

namespace {

absl::Status ApplyTransfers(ProjectionContext& ctx, EventBatch events) {
  const std::string& table = ctx.Table("transfers");
  // In order: a batch may request and settle one transfer.
  for (const RecordedEvent& e : events) {
    absl::string_view id = e.stream_id;
    if (!absl::ConsumePrefix(&id, "transfer-")) continue;
    absl::StatusOr<TransferEvent> event =
        TransferEvents().Decode(e.event_type, e.schema_version, e.data);
    if (!event.ok()) {
      return absl::Status(event.status().code(),
                          absl::StrCat("event at ", e.position.ToToken(), ": ",
                                       event.status().message()));
    }
    if (auto* r = std::get_if<TransferRequested>(&*event)) {
      ctx.tx().exec_params(
          absl::StrCat("INSERT INTO ", table,
                       " (transfer_id, from_account, to_account, amount, "
                       "currency, status) VALUES ($1, $2, $3, $4, $5, "
                       "'pending')"),
          std::string(id), r->from, r->to, r->amount, r->currency);
    } else if (std::holds_alternative<TransferCompleted>(*event)) {
      ctx.tx().exec_params(absl::StrCat("UPDATE ", table,
                                        " SET status = 'completed' WHERE "
                                        "transfer_id = $1"),
                           std::string(id));
    } else if (auto* f = std::get_if<TransferFailed>(&*event)) {
      ctx.tx().exec_params(absl::StrCat("UPDATE ", table,
                                        " SET status = 'failed', reason = $2 "
                                        "WHERE transfer_id = $1"),
                           std::string(id), f->reason);
    } else if (std::holds_alternative<TransferRefunded>(*event)) {
      ctx.tx().exec_params(absl::StrCat("UPDATE ", table,
                                        " SET refunded = true WHERE "
                                        "transfer_id = $1"),
                           std::string(id));
    }
  }
  return absl::OkStatus();
}

}  // namespace

Projection TransfersProjection() {
  Projection p;
  p.name = "transfers";
  p.version = 1;
  p.event_types = {TransferRequested::kName, TransferCompleted::kName,
                   TransferRefunded::kName, TransferFailed::kName};
  p.tables = {{"transfers",
               "CREATE TABLE {table} ("
               "  transfer_id  text PRIMARY KEY,"
               "  from_account text NOT NULL,"
               "  to_account   text NOT NULL,"
               "  amount       bigint NOT NULL,"
               "  currency     text NOT NULL,"
               "  status       text NOT NULL,"
               "  refunded     boolean NOT NULL DEFAULT false,"
               "  reason       text) WITH (fillfactor = 70)"}};
  p.apply = ApplyTransfers;
  return p;
}

std::vector<Projection> BankProjections() {
  std::vector<Projection> all;
  all.push_back(AccountBalancesProjection());
  all.push_back(AccountTransactionsProjection());
  all.push_back(BankStatsProjection());
  all.push_back(TransfersProjection());
  return all;
}

}  // namespace bank

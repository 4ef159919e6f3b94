// Transfers end to end inside one process: POST /transfers, the transfer
// process manager (commands/process_manager.h) moving the money, the read
// models, GET /transfers/{id} and GET /stats; the failure paths; command
// metadata; re-delivery; a close of the source racing its transfer;
// transfers an older build debited; and the money invariant under
// concurrent traffic.
#include <atomic>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "example_app/account.h"
#include "rapidjson/document.h"
#include "tests/example_app/service_fixture.h"
#include "tests/support/wait.h"

namespace bank {
namespace {

namespace http = cqrs::http;
using cqrs::http_test::ClientResponse;

std::string Transfer(ServiceFixture& f, const std::string& from,
                     const std::string& to, int64_t amount,
                     const std::string& id) {
  auto r =
      f.Post("/transfers", absl::StrCat(R"({"from":")", from, R"(","to":")", to,
                                        R"(","amount":)", amount,
                                        R"(,"transfer_id":")", id, R"("})"));
  REQUIRE(r.status == 202);
  rapidjson::Document doc = Parse(r.body);
  CHECK(std::string(doc["transfer_id"].GetString()) == id);
  return doc["position"].GetString();
}

// Waits until the transfer is settled; returns its final JSON.
rapidjson::Document Settled(ServiceFixture& f, const std::string& id,
                            const std::string& requested_at) {
  rapidjson::Document doc;
  REQUIRE(cqrs::testing::Eventually(
      [&] {
        auto r = f.Get(absl::StrCat("/transfers/", id), AtLeast(requested_at));
        REQUIRE(r.status == 200);
        doc = Parse(r.body);
        return std::string(doc["status"].GetString()) != "pending";
      },
      absl::Seconds(30)));
  return doc;
}

// The account as the read model shows it once it has caught up with
// everything committed so far (the transfer's own events included).
rapidjson::Document ReadAccount(ServiceFixture& f, const std::string& id) {
  // A fresh deposit of 1 on a scratch account gives a position after
  // everything before it.
  static std::atomic<int> n{0};
  const std::string scratch = absl::StrCat("scratch-", n++);
  const std::string at = Open(f, scratch);
  auto r = f.Get(absl::StrCat("/accounts/", id), AtLeast(at));
  REQUIRE(r.status == 200);
  return Parse(r.body);
}

// The account's transactions (type, transfer id), once the read model has
// reached `at` when given.
std::vector<std::pair<std::string, std::string>> Movements(
    ServiceFixture& f, const std::string& id, const std::string& at = "") {
  auto r = f.Get(absl::StrCat("/accounts/", id, "/transactions?limit=500"),
                 at.empty() ? http::HeaderList{} : AtLeast(at));
  REQUIRE(r.status == 200);
  std::vector<std::pair<std::string, std::string>> out;
  rapidjson::Document doc = Parse(r.body);
  for (const auto& item : doc["items"].GetArray()) {
    out.emplace_back(
        item["type"].GetString(),
        item.HasMember("transfer_id") ? item["transfer_id"].GetString() : "");
  }
  return out;
}

// Waits until the transfer process manager's checkpoint has passed the
// newest transfer event: it has handled (and committed) all of them.
void WaitProcessCaughtUp(ServiceFixture& f) {
  const std::string schema = f.schema().name();
  REQUIRE(cqrs::testing::Eventually(
      [&] {
        return f.schema().QueryInt(absl::StrCat(
                   "SELECT count(*) FROM ", schema,
                   ".projections p WHERE name = "
                   "'transfer_process' AND (p.position_xid, p.position_gp) "
                   ">= (SELECT transaction_id, global_position FROM ",
                   schema,
                   ".events WHERE stream_id LIKE 'transfer-%' ORDER BY "
                   "transaction_id DESC, global_position DESC LIMIT 1)")) != 0;
      },
      absl::Seconds(30)));
}

// Moves the process manager's checkpoint back to the start, so that it
// reads every transfer event again, and waits until it has.
void ReplayTransferProcess(ServiceFixture& f) {
  f.schema().Exec(absl::StrCat(
      "UPDATE ", f.schema().name(),
      ".projections SET position_xid = '0'::xid8, position_gp = 0 WHERE "
      "name = 'transfer_process'"));
  // The runner notices the moved checkpoint at its next batch: give it one
  // (an event, which the caller sees in the event count).
  static std::atomic<int> n{0};
  Open(f, absl::StrCat("poke-", n++));
  WaitProcessCaughtUp(f);
}

long long CountEvents(ServiceFixture& f, const std::string& where) {
  return f.schema().QueryInt(absl::StrCat(
      "SELECT count(*) FROM ", f.schema().name(), ".events WHERE ", where));
}

// Every account as its events fold (the aggregate's own Load), by id.
std::map<std::string, bank::Account> FoldAccounts(ServiceFixture& f) {
  cqrs::eventstore::EventStore& store = f.server().store();
  std::map<std::string, bank::Account> accounts;
  cqrs::eventstore::Position after = cqrs::eventstore::Position::Start();
  while (true) {
    auto page = store.ReadCategory("account", after, 1000);
    REQUIRE(page.ok());
    if (page->events.empty()) break;
    for (const auto& e : page->events) {
      accounts.emplace(e.stream_id.substr(std::string("account-").size()),
                       bank::Account{});
    }
    after = page->next;
  }
  for (auto& [id, account] : accounts) {
    auto loaded = AccountAggregateForProcesses().Load(store, id);
    REQUIRE(loaded.ok());
    account = loaded->first;
  }
  return accounts;
}

// Accounts whose events fold to closed with money in them: money no one
// can ever take out.
std::vector<std::string> ClosedWithMoney(ServiceFixture& f) {
  std::vector<std::string> trapped;
  for (const auto& [id, account] : FoldAccounts(f)) {
    if (account.closed && account.balance != 0) trapped.push_back(id);
  }
  return trapped;
}

// Holds the transfer process manager at the commit of a batch: once armed
// with HoldNext(), its next batch waits in the runner's before-commit hook,
// its commands run and uncommitted, until Release().
class CommitGate {
 public:
  ServiceFixture::BeforeCommit Hook() {
    return [this](absl::string_view projection, cqrs::eventstore::Position) {
      if (projection != "transfer_process") return absl::OkStatus();
      absl::MutexLock lock(&mu_);
      if (!armed_) return absl::OkStatus();
      armed_ = false;
      held_ = true;
      // Bounded, so that a failed test cannot hang the runner's Stop().
      mu_.AwaitWithTimeout(absl::Condition(
                               +[](bool* held) { return !*held; }, &held_),
                           absl::Seconds(60));
      held_ = false;
      return absl::OkStatus();
    };
  }

  void HoldNext() {
    absl::MutexLock lock(&mu_);
    armed_ = true;
  }
  // True once a batch waits, false after `timeout`.
  bool WaitHeld(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&held_), timeout);
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    armed_ = false;
    held_ = false;
  }

 private:
  absl::Mutex mu_;
  bool armed_ ABSL_GUARDED_BY(mu_) = false;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
};

// Releases the gate when the test leaves, also on a failed REQUIRE. Declare
// it after the fixture, so that it runs before the fixture stops the runner.
class ReleaseOnExit {
 public:
  explicit ReleaseOnExit(CommitGate& gate) : gate_(gate) {}
  ~ReleaseOnExit() { gate_.Release(); }

 private:
  CommitGate& gate_;
};

// Keeps the process manager from starting its next step. Every step
// (ctx.Once) first writes its record into <schema>.process_commands, so a
// SHARE lock on that table, taken from a session of its own, makes the next
// step wait; a step already running keeps the table until its batch
// commits, and the lock is granted only then. PostgreSQL queues table locks
// in order: a step that asks after this lock waits behind it.
class StepBarrier {
 public:
  explicit StepBarrier(ServiceFixture& f) {
    const std::string url = f.schema().url();
    const std::string sql = absl::StrCat("LOCK TABLE ", f.schema().name(),
                                         ".process_commands IN SHARE MODE");
    thread_ = std::thread([this, url, sql] {
      try {
        pqxx::connection conn(url);
        pqxx::work tx(conn);
        const int pid = tx.exec1("SELECT pg_backend_pid()")[0].as<int>();
        {
          absl::MutexLock lock(&mu_);
          pid_ = pid;
        }
        tx.exec0(sql);
        absl::MutexLock lock(&mu_);
        granted_ = true;
        mu_.Await(absl::Condition(&lifted_));
      } catch (const std::exception& e) {
        absl::MutexLock lock(&mu_);
        error_ = e.what();
      }
    });
  }
  ~StepBarrier() {
    Lift();
    thread_.join();
  }

  // Waits until the lock is requested (granted, or queued behind the
  // sessions that hold the table); an empty string, or what went wrong.
  std::string WaitRequested(ServiceFixture& f) {
    std::string error;
    const bool requested = cqrs::testing::Eventually(
        [&] {
          int pid = 0;
          {
            absl::MutexLock lock(&mu_);
            error = error_;
            if (!error.empty() || granted_) return true;
            pid = pid_;
          }
          return pid != 0 &&
                 f.schema().QueryInt(absl::StrCat(
                     "SELECT count(*) FROM pg_locks WHERE NOT granted AND "
                     "pid = ",
                     pid)) > 0;
        },
        absl::Seconds(30));
    if (!requested) return "the lock was never requested";
    return error;
  }
  // Waits until the lock is held; an empty string, or what went wrong.
  std::string WaitGranted() {
    absl::MutexLock lock(&mu_);
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return granted_ || !error_.empty();
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(30))) {
      return "the lock was not granted within 30 s";
    }
    return error_;
  }
  void Lift() {
    absl::MutexLock lock(&mu_);
    lifted_ = true;
  }

 private:
  absl::Mutex mu_;
  int pid_ ABSL_GUARDED_BY(mu_) = 0;
  bool granted_ ABSL_GUARDED_BY(mu_) = false;
  bool lifted_ ABSL_GUARDED_BY(mu_) = false;
  std::string error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// Appends what the process manager of an older build committed on a
// TransferRequested, which debited the source in a transaction of its own:
// the request, the source's debit and TransferDebited, without the credit.
// Returns the position token of the transfer's events.
std::string AppendDebitedByOlderBuild(ServiceFixture& f,
                                      const std::string& from,
                                      const std::string& to, int64_t amount,
                                      const std::string& currency,
                                      const std::string& id) {
  cqrs::eventstore::EventStore& store = f.server().store();
  cqrs::eventstore::NewEvent debit;
  debit.event_type = "AccountDebitedForTransfer";
  debit.data =
      absl::StrCat(R"({"transfer_id":")", id, R"(","amount":)", amount, "}");
  REQUIRE(store
              .Append(absl::StrCat("account-", from),
                      cqrs::eventstore::ExpectedVersion::StreamExists(),
                      {debit})
              .ok());
  cqrs::eventstore::NewEvent requested;
  requested.event_type = "TransferRequested";
  requested.data =
      absl::StrCat(R"({"from":")", from, R"(","to":")", to, R"(","amount":)",
                   amount, R"(,"currency":")", currency, R"("})");
  cqrs::eventstore::NewEvent debited;
  debited.event_type = "TransferDebited";
  // One commit: the process manager never sees the request alone.
  auto appended = store.Append(absl::StrCat("transfer-", id),
                               cqrs::eventstore::ExpectedVersion::NoStream(),
                               {requested, debited});
  REQUIRE(appended.ok());
  return appended->position.ToToken();
}

TEST_CASE("a transfer moves money from one account to another",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  Open(f, "a");
  Open(f, "b");
  Deposit(f, "a", 1000);
  const std::string at = Transfer(f, "a", "b", 300, "t-1");
  rapidjson::Document t = Settled(f, "t-1", at);
  CHECK(std::string(t["status"].GetString()) == "completed");
  CHECK(std::string(t["from"].GetString()) == "a");
  CHECK(std::string(t["to"].GetString()) == "b");
  CHECK(t["amount"].GetInt64() == 300);
  CHECK(std::string(t["currency"].GetString()) == "EUR");
  CHECK(!t.HasMember("reason"));
  CHECK(ReadAccount(f, "a")["balance"].GetInt64() == 700);
  CHECK(ReadAccount(f, "b")["balance"].GetInt64() == 300);
  auto a = Movements(f, "a");
  REQUIRE(a.size() == 3);
  CHECK(a[2] ==
        std::make_pair(std::string("transfer_out"), std::string("t-1")));
  auto b = Movements(f, "b");
  REQUIRE(b.size() == 2);
  CHECK(b[1] == std::make_pair(std::string("transfer_in"), std::string("t-1")));

  auto stats = f.Get("/stats");
  REQUIRE(stats.status == 200);
  rapidjson::Document s = Parse(stats.body);
  CHECK(s["transfers"]["completed"].GetInt64() == 1);
  CHECK(s["transfers"]["pending"].GetInt64() == 0);
  CHECK(s["total_balance"]["EUR"].GetInt64() == 1000);

  // The commands the process manager ran carry the request's correlation
  // id, the triggering event as causation, a command id derived from it,
  // and the process as actor on behalf of the request's (the fixture's
  // key).
  const std::string schema = f.schema().name();
  CHECK(f.schema().QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", schema, ".events d JOIN ", schema,
            ".events r ON r.stream_id = 'transfer-t-1' AND r.event_type = "
            "'TransferRequested' WHERE d.stream_id = 'account-a' AND "
            "d.event_type = 'AccountDebitedForTransfer' AND "
            "d.metadata->>'causation_id' = r.event_id::text AND "
            "d.metadata->>'correlation_id' = r.metadata->>'correlation_id' "
            "AND d.metadata->>'command_id' = 'transfer_process:' || "
            "r.event_id::text || ':debit' AND "
            "r.metadata->>'actor' = '",
            f.token().substr(5, 12),
            "' AND "
            "d.metadata->>'actor' = 'process:transfer_process' AND "
            "d.metadata->>'on_behalf_of' = '",
            f.token().substr(5, 12), "'")) == 1);
}

TEST_CASE("a transfer the source cannot pay fails and moves nothing",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  Open(f, "poor");
  Open(f, "rich");
  Open(f, "shut");
  Deposit(f, "poor", 50);
  REQUIRE(f.Post("/accounts/shut/close", "{}").status == 200);

  rapidjson::Document t =
      Settled(f, "t-poor", Transfer(f, "poor", "rich", 51, "t-poor"));
  CHECK(std::string(t["status"].GetString()) == "failed");
  CHECK(std::string(t["reason"].GetString()) == "insufficient_funds");
  rapidjson::Document c =
      Settled(f, "t-shut", Transfer(f, "shut", "rich", 1, "t-shut"));
  CHECK(std::string(c["reason"].GetString()) == "account_closed");
  CHECK(ReadAccount(f, "poor")["balance"].GetInt64() == 50);
  CHECK(ReadAccount(f, "rich")["balance"].GetInt64() == 0);
  CHECK(Movements(f, "poor").size() == 2);
  auto stats = Parse(f.Get("/stats").body);
  CHECK(stats["transfers"]["failed"].GetInt64() == 2);
}

TEST_CASE("a transfer the target cannot take is refunded, then fails",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  Open(f, "src");
  Open(f, "closed-dst");
  Open(f, "usd-dst", "Bob", "USD");
  REQUIRE(f.Post("/accounts/closed-dst/close", "{}").status == 200);
  Deposit(f, "src", 900);
  struct Case {
    std::string to, id, reason;
  };
  for (const Case& c : {Case{"nobody", "t-missing", "account_not_found"},
                        Case{"closed-dst", "t-closed", "account_closed"},
                        Case{"usd-dst", "t-usd", "currency_mismatch"}}) {
    INFO(c.id);
    rapidjson::Document t =
        Settled(f, c.id, Transfer(f, "src", c.to, 100, c.id));
    CHECK(std::string(t["status"].GetString()) == "failed");
    CHECK(std::string(t["reason"].GetString()) == c.reason);
  }
  CHECK(ReadAccount(f, "src")["balance"].GetInt64() == 900);
  CHECK(ReadAccount(f, "usd-dst")["balance"].GetInt64() == 0);
  auto moves = Movements(f, "src");
  REQUIRE(moves.size() == 8);  // opened, deposit, 3 x (transfer_out, refund)
  CHECK(moves[2].first == "transfer_out");
  CHECK(moves[3] ==
        std::make_pair(std::string("refund"), std::string("t-missing")));
  // No transfer both completed and refunded.
  const std::string schema = f.schema().name();
  CHECK(f.schema().QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", schema,
            ".transfers WHERE refunded AND status <> 'failed'")) == 0);
}

TEST_CASE("POST /transfers refuses bad requests and appends nothing",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  Open(f, "x");
  Open(f, "y");
  const std::string schema = f.schema().name();
  const long long before = f.schema().QueryInt(
      absl::StrCat("SELECT count(*) FROM ", schema, ".events"));
  struct Bad {
    std::string body;
    int status;
    std::string code;
  };
  for (const Bad& b :
       {Bad{R"({"from":"x","to":"x","amount":1})", 400, "invalid_request"},
        Bad{R"({"from":"ghost","to":"y","amount":1})", 404,
            "account_not_found"},
        Bad{R"({"from":"x","to":"y","amount":0})", 400, "invalid_request"},
        Bad{R"({"from":"x","to":"y","amount":1000000000000001})", 400,
            "invalid_request"},
        Bad{R"({"from":"x","to":"y"})", 400, "invalid_request"},
        Bad{R"({"from":"x","to":"y","amount":1,"extra":1})", 400,
            "invalid_request"},
        Bad{R"({"from":"x","to":"bad id","amount":1})", 400, "invalid_request"},
        Bad{R"({"from":"x","to":"y","amount":1,"transfer_id":"no/slash"})", 400,
            "invalid_request"},
        Bad{R"({"from":"x",)", 400, "invalid_json"}}) {
    INFO(b.body);
    auto r = f.Post("/transfers", b.body);
    CHECK(r.status == b.status);
    CHECK(ErrorCode(r) == b.code);
  }
  CHECK(f.schema().QueryInt(absl::StrCat("SELECT count(*) FROM ", schema,
                                         ".events")) == before);
  Transfer(f, "x", "y", 1, "dup");
  auto again = f.Post(
      "/transfers", R"({"from":"x","to":"y","amount":1,"transfer_id":"dup"})");
  CHECK(again.status == 409);
  CHECK(ErrorCode(again) == "transfer_exists");
  auto missing = f.Get("/transfers/none");
  CHECK(missing.status == 404);
  CHECK(ErrorCode(missing) == "transfer_not_found");
}

TEST_CASE("re-delivered transfer events never move money twice",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  Open(f, "r1");
  Open(f, "r2");
  Deposit(f, "r1", 500);
  for (int i = 0; i < 5; ++i) {
    const std::string id = absl::StrCat("rt-", i);
    Settled(f, id, Transfer(f, "r1", "r2", 10, id));
  }
  const std::string events =
      absl::StrCat("SELECT count(*) FROM ", f.schema().name(), ".events");
  WaitProcessCaughtUp(f);
  const long long before = f.schema().QueryInt(events);
  ReplayTransferProcess(f);
  CHECK(f.schema().QueryInt(events) == before + 1);  // the poke only
  CHECK(ReadAccount(f, "r1")["balance"].GetInt64() == 450);
  CHECK(ReadAccount(f, "r2")["balance"].GetInt64() == 50);
}

// The race of a source that a transfer's debit leaves at 0: closing it is
// allowed then, and if the target refuses the credit, the refund would land
// in a closed account. The source is closed (1) while the process manager's
// batch is held at its commit and (2) after that batch committed, before
// the process manager starts its next step (an older build credited or
// refunded in that next step).
TEST_CASE("a close racing a transfer never traps the refund",
          "[bank][transfers][pg]") {
  struct Case {
    std::string target_currency;
    bool close_target;
    std::string outcome;  // "completed", or the failure's reason
  };
  Case c;
  SECTION("target in another currency") {
    c = {"USD", false, "currency_mismatch"};
  }
  SECTION("target closed") { c = {"EUR", true, "account_closed"}; }
  SECTION("target takes it") { c = {"EUR", false, "completed"}; }
  CommitGate gate;
  ServiceFixture f(Projections::kHere, gate.Hook());
  ReleaseOnExit release(gate);
  Open(f, "src");
  Open(f, "dst", "Bob", c.target_currency);
  if (c.close_target)
    REQUIRE(f.Post("/accounts/dst/close", "{}").status == 200);
  Deposit(f, "src", 100);  // exactly the transfer's amount

  gate.HoldNext();
  const std::string at = Transfer(f, "src", "dst", 100, "t-race");
  REQUIRE(gate.WaitHeld(absl::Seconds(30)));
  // (1) The debit is made but not committed: the source's balance is 100.
  auto not_empty = [](const ClientResponse& r) {
    return r.status == 422 && ErrorCode(r) == "account_not_empty";
  };
  CHECK(not_empty(f.Post("/accounts/src/close", "{}")));
  {
    StepBarrier barrier(f);
    REQUIRE(barrier.WaitRequested(f).empty());
    gate.Release();
    REQUIRE(barrier.WaitGranted().empty());
    // (2) The batch committed; no further step has started.
    auto between = f.Post("/accounts/src/close", "{}");
    if (c.outcome == "completed") {
      CHECK(between.status == 200);  // the money has left for good
    } else {
      CHECK(not_empty(between));
    }
  }

  rapidjson::Document t = Settled(f, "t-race", at);
  WaitProcessCaughtUp(f);
  const std::vector<std::string> trapped = ClosedWithMoney(f);
  CHECK(trapped.empty());
  const std::map<std::string, bank::Account> folded = FoldAccounts(f);
  if (c.outcome == "completed") {
    CHECK(std::string(t["status"].GetString()) == "completed");
    CHECK(folded.at("src").balance == 0);
    CHECK(folded.at("src").closed);
    CHECK(folded.at("dst").balance == 100);
    CHECK(ReadAccount(f, "src")["status"].GetString() == std::string("closed"));
  } else {
    CHECK(std::string(t["status"].GetString()) == "failed");
    CHECK(std::string(t["reason"].GetString()) == c.outcome);
    CHECK(folded.at("src").balance == 100);
    CHECK(!folded.at("src").closed);
    CHECK(folded.at("dst").balance == 0);
    rapidjson::Document src = ReadAccount(f, "src");
    CHECK(src["status"].GetString() == std::string("open"));
    CHECK(src["balance"].GetInt64() == 100);
    // The money is usable: it can leave again.
    auto r = f.Post("/accounts/src/withdraw", R"({"amount":100})");
    REQUIRE(r.status == 200);
    auto moves = Movements(f, "src", Parse(r.body)["position"].GetString());
    REQUIRE(moves.size() == 5);  // opened, deposit, out, refund, withdrawal
    CHECK(moves[2] ==
          std::make_pair(std::string("transfer_out"), std::string("t-race")));
    CHECK(moves[3] ==
          std::make_pair(std::string("refund"), std::string("t-race")));
  }
}

TEST_CASE(
    "a transfer an older build debited is finished once; this build's "
    "TransferDebited never credits again",
    "[bank][transfers][pg]") {
  ServiceFixture f;
  Open(f, "old-src");
  Open(f, "old-dst");
  Open(f, "old-usd", "Bob", "USD");
  Deposit(f, "old-src", 300);
  const std::string done_at =
      AppendDebitedByOlderBuild(f, "old-src", "old-dst", 100, "EUR", "lt-done");
  const std::string back_at =
      AppendDebitedByOlderBuild(f, "old-src", "old-usd", 100, "EUR", "lt-back");
  rapidjson::Document done = Settled(f, "lt-done", done_at);
  rapidjson::Document back = Settled(f, "lt-back", back_at);
  CHECK(std::string(done["status"].GetString()) == "completed");
  CHECK(std::string(back["status"].GetString()) == "failed");
  CHECK(std::string(back["reason"].GetString()) == "currency_mismatch");

  // And one transfer of this build, whose TransferDebited the process
  // manager also receives.
  Settled(f, "nt", Transfer(f, "old-src", "old-dst", 50, "nt"));
  WaitProcessCaughtUp(f);

  auto check = [&] {
    const std::vector<std::string> transfers = {"lt-done", "lt-back", "nt"};
    for (const std::string& id : transfers) {
      INFO(id);
      const std::string of =
          absl::StrCat("data->>'transfer_id' = '", id, "' AND event_type = ");
      CHECK(CountEvents(f, of + "'AccountDebitedForTransfer'") == 1);
      CHECK(CountEvents(f, of + "'AccountCreditedForTransfer'") ==
            (id == "lt-back" ? 0 : 1));
      CHECK(CountEvents(f, of + "'AccountRefundedForTransfer'") ==
            (id == "lt-back" ? 1 : 0));
      CHECK(CountEvents(f, absl::StrCat("stream_id = 'transfer-", id, "'")) ==
            4);
      CHECK(CountEvents(f, absl::StrCat("stream_id = 'transfer-", id,
                                        "' AND event_type IN "
                                        "('TransferCompleted', "
                                        "'TransferFailed')")) == 1);
    }
    const std::map<std::string, bank::Account> folded = FoldAccounts(f);
    CHECK(folded.at("old-src").balance == 150);
    CHECK(folded.at("old-dst").balance == 150);
    CHECK(folded.at("old-usd").balance == 0);
    CHECK(ReadAccount(f, "old-src")["balance"].GetInt64() == 150);
    CHECK(ReadAccount(f, "old-dst")["balance"].GetInt64() == 150);
  };
  check();
  // Every transfer event again, the older build's included: nothing moves.
  const long long before = CountEvents(f, "true");
  ReplayTransferProcess(f);
  CHECK(CountEvents(f, "true") == before + 1);  // the poke only
  check();
}

TEST_CASE("money is neither created nor lost under concurrent transfers",
          "[bank][transfers][pg]") {
  ServiceFixture f;
  constexpr int kAccounts = 8;
  for (int i = 0; i < kAccounts; ++i) {
    Open(f, absl::StrCat("m-", i), "M", i == 7 ? "USD" : "EUR");
  }
  REQUIRE(f.Post("/accounts/m-6/close", "{}").status == 200);
  std::atomic<int64_t> deposited{0};
  std::atomic<int64_t> withdrawn{0};
  std::atomic<int> transfers{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      auto client = f.Client();
      std::mt19937 rng(c);
      for (int n = 0; n < 60; ++n) {
        const int a = static_cast<int>(rng() % kAccounts);
        const int b = static_cast<int>(rng() % (kAccounts + 1));  // 8: none
        const int64_t amount = 1 + static_cast<int64_t>(rng() % 100);
        const int kind = static_cast<int>(rng() % 3);
        const http::HeaderList json = {{"Content-Type", "application/json"}};
        if (kind == 0) {
          auto r =
              client->Send("POST", absl::StrCat("/accounts/m-", a, "/deposit"),
                           absl::StrCat(R"({"amount":)", amount, "}"), json);
          REQUIRE(r.ok());
          if (r->status == 200) deposited += amount;
        } else if (kind == 1) {
          auto r =
              client->Send("POST", absl::StrCat("/accounts/m-", a, "/withdraw"),
                           absl::StrCat(R"({"amount":)", amount, "}"), json);
          REQUIRE(r.ok());
          if (r->status == 200) withdrawn += amount;
        } else if (a != b) {
          auto r =
              client->Send("POST", "/transfers",
                           absl::StrCat(R"({"from":"m-)", a, R"(","to":"m-)", b,
                                        R"(","amount":)", amount, "}"),
                           json);
          REQUIRE(r.ok());
          REQUIRE(r->status == 202);
          ++transfers;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  const std::string schema = f.schema().name();
  // Quiet: every transfer settles.
  REQUIRE(cqrs::testing::Eventually([&] {
    return f.schema().QueryInt(absl::StrCat(
               "SELECT count(*) FROM ", schema,
               ".events WHERE event_type = 'TransferRequested'")) ==
           f.schema().QueryInt(
               absl::StrCat("SELECT count(*) FROM ", schema,
                            ".events WHERE event_type IN "
                            "('TransferCompleted', 'TransferFailed')"));
  }));
  auto stats = [&] {
    // Read with a position after everything.
    const std::string at = Open(f, "last-scratch");
    auto r = f.Get("/stats", AtLeast(at));
    REQUIRE(r.status == 200);
    return Parse(r.body);
  }();
  const int64_t total = stats["total_balance"]["EUR"].GetInt64() +
                        stats["total_balance"]["USD"].GetInt64();
  CHECK(total == deposited - withdrawn);
  CHECK(stats["transfers"]["pending"].GetInt64() == 0);
  CHECK(stats["transfers"]["completed"].GetInt64() +
            stats["transfers"]["failed"].GetInt64() ==
        transfers);
  CHECK(f.schema().QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", schema,
            ".transfers WHERE refunded AND status = 'completed'")) == 0);
  // The read model agrees with the event store about every balance.
  CHECK(f.schema().QueryInt(
            absl::StrCat("SELECT coalesce(sum(balance), 0) FROM ", schema,
                         ".account_balances")) == deposited - withdrawn);
}

}  // namespace
}  // namespace bank

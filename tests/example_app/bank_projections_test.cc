// The bank's read models against a fold of the events: in-process, after a
// rebuild, and with `bank project` worker processes that are killed with
// SIGKILL (mid catch-up, and as the owner with a standby waiting); the
// `bank projections` CLI, and resuming a failed projection from the CLI
// and over HTTP (`bank serve`).
#include "example_app/bank_projections.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <csignal>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "app/app_server.h"
#include "example_app/account.h"
#include "example_app/bank_app.h"
#include "framework/http/message.h"
#include "framework/uuid.h"
#include "projections/rebuild.h"
#include "projections/runner.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/child_process.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace bank {
namespace {

using cqrs::eventstore::ExpectedVersion;
using cqrs::eventstore::NewEvent;
using cqrs::testing::TestSchema;

struct Row {
  std::string owner, currency, status;
  int64_t balance = 0, version = 0;
  bool operator==(const Row& o) const {
    return owner == o.owner && currency == o.currency && status == o.status &&
           balance == o.balance && version == o.version;
  }
};
using Balances = std::map<std::string, Row>;

// Empty until a runner has created the read model.
Balances ReadBalances(TestSchema& schema) {
  Balances out;
  pqxx::connection conn(schema.url());
  pqxx::nontransaction tx(conn);
  if (schema.QueryInt(absl::StrCat(
          "SELECT count(*) FROM pg_views WHERE schemaname = '", schema.name(),
          "' AND viewname = 'account_balances'")) == 0) {
    return out;
  }
  for (const pqxx::row& r : tx.exec(
           absl::StrCat("SELECT account_id, owner, currency, status, balance, "
                        "version FROM ",
                        schema.name(), ".account_balances"))) {
    out[r[0].as<std::string>()] =
        Row{r[1].as<std::string>(), r[2].as<std::string>(),
            r[3].as<std::string>(), r[4].as<int64_t>(), r[5].as<int64_t>()};
  }
  return out;
}

using ::cqrs::testing::Eventually;

std::unique_ptr<cqrs::eventstore::PostgresEventStore> Store(
    TestSchema& schema) {
  REQUIRE(cqrs::MigrateApp(schema.pool(), schema.name()).ok());
  cqrs::eventstore::PostgresEventStoreOptions options;
  options.schema = schema.name();
  auto store =
      cqrs::eventstore::PostgresEventStore::Create(&schema.pool(), options);
  REQUIRE(store.ok());
  return *std::move(store);
}

void CheckOtherModelsNow(TestSchema& schema, const Balances& want);

// Checks account_transactions and bank_stats against `want` (the balances),
// once they have caught up: each projection follows the events on its own,
// so they may still be behind account_balances.
void CheckOtherModels(TestSchema& schema, const Balances& want) {
  Eventually([&] {
    int64_t events = 0, total = 0;
    for (const auto& [id, row] : want) {
      events += row.version;
      total += row.balance;
    }
    auto stat = [&](const char* key) {
      return schema.QueryInt(
          absl::StrCat("SELECT coalesce(sum(value), 0) FROM ", schema.name(),
                       ".bank_stats WHERE key = '", key, "'"));
    };
    return schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                        ".account_transactions")) == events &&
           stat("accounts") == static_cast<int64_t>(want.size()) &&
           stat("balance:EUR") == total;
  });
  CheckOtherModelsNow(schema, want);
}

void CheckOtherModelsNow(TestSchema& schema, const Balances& want) {
  int64_t open = 0, total = 0;
  // Per account: rows and the last balance_after, in one query.
  std::map<std::string, std::pair<int64_t, int64_t>> got;
  {
    pqxx::connection conn(schema.url());
    pqxx::nontransaction tx(conn);
    for (const pqxx::row& r : tx.exec(absl::StrCat(
             "SELECT account_id, count(*), (array_agg(balance_after ORDER BY "
             "version DESC))[1] FROM ",
             schema.name(), ".account_transactions GROUP BY account_id"))) {
      got[r[0].as<std::string>()] = {r[1].as<int64_t>(), r[2].as<int64_t>()};
    }
  }
  CHECK(got.size() == want.size());
  for (const auto& [id, row] : want) {
    open += row.status == "open" ? 1 : 0;
    total += row.balance;
    INFO(id);
    CHECK(got[id].first == row.version);
    CHECK(got[id].second == row.balance);
  }
  auto stat = [&](const std::string& key) {
    return schema.QueryInt(absl::StrCat("SELECT coalesce(sum(value), 0) FROM ",
                                        schema.name(),
                                        ".bank_stats WHERE key = '", key, "'"));
  };
  CHECK(stat("accounts") == static_cast<int64_t>(want.size()));
  CHECK(stat("open_accounts") == open);
  CHECK(stat("balance:EUR") == total);
  // Each row names who appended its event, as the event's metadata does
  // (NULL where it names no one).
  CHECK(schema.QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", schema.name(),
            ".account_transactions t JOIN ", schema.name(),
            ".events e ON e.stream_id = 'account-' || t.account_id AND "
            "e.stream_version = t.version WHERE t.actor IS DISTINCT FROM "
            "e.metadata->>'actor' OR t.on_behalf_of IS DISTINCT FROM "
            "e.metadata->>'on_behalf_of'")) == 0);
}

TEST_CASE("bank read models equal a fold of the events, also after a rebuild",
          "[bank][projections][pg]") {
  TestSchema schema;
  auto store = Store(schema);
  const std::string prefix = cqrs::NewUuid().substr(0, 8);
  absl::BitGen gen;
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    ids.push_back(absl::StrCat(prefix, "-", i));
    REQUIRE(AccountAggregate()
                .Execute(*store, ids.back(),
                         cqrs::commands::CommandMetadata::ForCommand(
                             "", cqrs::http::kAnonymousActor),
                         {}, DecideOpen(absl::StrCat("owner", i % 3), "EUR"))
                .ok());
  }
  auto random_commands = [&](int n) {
    for (int i = 0; i < n; ++i) {
      const std::string& id = ids[absl::Uniform(gen, 0u, ids.size())];
      const int what = absl::Uniform(gen, 0, 10);
      const int64_t amount = absl::Uniform<int64_t>(gen, 1, 1000);
      auto decide = what < 6   ? DecideDeposit(amount)
                    : what < 9 ? DecideWithdraw(amount)
                               : DecideClose();
      // Sent by one of two keys, anonymously, or by a process for a key.
      const int who = absl::Uniform(gen, 0, 4);
      auto meta = cqrs::commands::CommandMetadata::ForCommand(
          "", who == 0   ? "0123456789ab"
              : who == 1 ? "ba9876543210"
              : who == 2 ? cqrs::http::kAnonymousActor
                         : "process:transfer_process");
      if (who == 3) meta.on_behalf_of = "0123456789ab";
      // Business-rule refusals are part of the game.
      (void)AccountAggregate().Execute(*store, id, meta, {}, decide);
    }
  };
  random_commands(400);
  auto expected = [&] {
    Balances want;
    for (const std::string& id : ids) {
      auto loaded = AccountAggregate().Load(*store, id);
      REQUIRE(loaded.ok());
      const Account& a = loaded->first;
      want[id] = Row{a.owner, a.currency, a.closed ? "closed" : "open",
                     a.balance, loaded->second};
    }
    return want;
  };

  cqrs::projections::ProjectionRunnerOptions options;
  options.schema = schema.name();
  auto runner = cqrs::projections::ProjectionRunner::Create(
      &schema.pool(), store.get(), BankProjections(), options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  Balances want = expected();
  REQUIRE(Eventually([&] { return ReadBalances(schema) == want; }));
  CheckOtherModels(schema, want);

  // Rebuild everything while commands keep coming.
  std::thread more([&] { random_commands(200); });
  for (const auto& p : BankProjections()) {
    absl::Status s = cqrs::projections::RebuildProjection(
        &schema.pool(), store.get(), p, schema.name(), {});
    INFO(s.ToString());
    CHECK(s.ok());
  }
  more.join();
  want = expected();
  REQUIRE(Eventually([&] { return ReadBalances(schema) == want; }));
  CheckOtherModels(schema, want);
  CHECK(schema.QueryInt(absl::StrCat("SELECT min(generation) FROM ",
                                     schema.name(), ".projections")) == 2);
  // Every actor the commands had (CheckOtherModels compared each row).
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(DISTINCT actor) FROM ",
                                     schema.name(), ".account_transactions")) ==
        4);
  CHECK(schema.QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", schema.name(),
            ".account_transactions WHERE on_behalf_of = '0123456789ab' AND "
            "actor = 'process:transfer_process'")) > 0);
}

// A `bank <args> --database-url <test db> --schema <test schema>` child
// process, its output captured; killed with SIGKILL if still running at
// the end.
class BankProcess : public cqrs::testing::ChildProcess {
 public:
  BankProcess(TestSchema& schema, std::vector<std::string> args)
      : ChildProcess(BANK_BINARY, WithDatabase(schema, std::move(args)),
                     Output::kCapture) {}

 private:
  static std::vector<std::string> WithDatabase(TestSchema& schema,
                                               std::vector<std::string> args) {
    for (const std::string& a : {std::string("--database-url"), schema.url(),
                                 std::string("--schema"), schema.name()}) {
      args.push_back(a);
    }
    return args;
  }
};

// A `bank project` worker.
struct Projector : BankProcess {
  explicit Projector(TestSchema& schema) : BankProcess(schema, {"project"}) {}
};

// A `bank projections rebuild <name>` process.
struct Rebuilder : BankProcess {
  Rebuilder(TestSchema& schema, const std::string& name)
      : BankProcess(schema, {"projections", "rebuild", name}) {}
};

// Appends `accounts` accounts of 1 opening and `deposits` deposits of
// 1..deposits each, 100 events per append; returns the expected balances.
Balances Fill(cqrs::eventstore::EventStore& store, const std::string& prefix,
              int accounts, int deposits) {
  Balances want;
  for (int a = 0; a < accounts; ++a) {
    const std::string id = absl::StrCat(prefix, a);
    std::vector<NewEvent> events;
    NewEvent open;
    open.event_type = "AccountOpened";
    open.data = R"({"owner":"o","currency":"EUR"})";
    events.push_back(open);
    int64_t balance = 0;
    for (int d = 1; d <= deposits; ++d) {
      NewEvent e;
      e.event_type = "MoneyDeposited";
      e.data = absl::StrCat(R"({"amount":)", d, "}");
      events.push_back(e);
      balance += d;
    }
    for (size_t from = 0; from < events.size(); from += 100) {
      std::vector<NewEvent> chunk(
          events.begin() + from,
          events.begin() + std::min(events.size(), from + 100));
      REQUIRE(store
                  .Append(absl::StrCat("account-", id),
                          ExpectedVersion::Exactly(static_cast<int64_t>(from)),
                          std::move(chunk))
                  .ok());
    }
    want[id] = Row{"o", "EUR", "open", balance, deposits + 1};
  }
  return want;
}

int64_t Checkpoint(TestSchema& schema, const std::string& projection) {
  return schema.QueryInt(
      absl::StrCat("SELECT coalesce(max(position_gp), 0) FROM ", schema.name(),
                   ".projections WHERE name = '", projection, "'"));
}

TEST_CASE("a projector killed with SIGKILL mid catch-up resumes exactly",
          "[bank][projections][pg]") {
  TestSchema schema;
  auto store = Store(schema);
  Balances want = Fill(*store, "k", 200, 149);  // 30,000 events
  const int64_t total = 200 * 150;
  {
    Projector first(schema);
    REQUIRE(Eventually(
        [&] { return Checkpoint(schema, "account_transactions") >= 2000; }));
    first.Kill(SIGKILL);
  }
  const int64_t at_kill = Checkpoint(schema, "account_transactions");
  INFO("account_transactions checkpoint at the kill: " << at_kill);
  CHECK(at_kill < total);  // the kill came in the middle of the catch-up
  Projector second(schema);
  REQUIRE(Eventually([&] { return ReadBalances(schema) == want; }));
  REQUIRE(Eventually([&] {
    return Checkpoint(schema, "account_transactions") == total &&
           Checkpoint(schema, "bank_stats") == total;
  }));
  CheckOtherModels(schema, want);
  CHECK(second.Kill(SIGTERM) == 0);
}

TEST_CASE("a standby projector takes over from a killed owner",
          "[bank][projections][pg]") {
  TestSchema schema;
  auto store = Store(schema);
  Balances want = Fill(*store, "s", 20, 9);
  Projector owner(schema);
  REQUIRE(Eventually([&] { return ReadBalances(schema) == want; }));
  Projector standby(schema);
  // Its runner runs (and competes for the projections the owner holds)
  // before the owner dies.
  REQUIRE(standby.WaitForOutput("projector running"));
  owner.Kill(SIGKILL);
  Balances more = Fill(*store, "t", 5, 9);
  want.insert(more.begin(), more.end());
  REQUIRE(Eventually([&] { return ReadBalances(schema) == want; }));
  REQUIRE(Eventually([&] {
    return Checkpoint(schema, "bank_stats") ==
           Checkpoint(schema, "account_balances");
  }));
  CheckOtherModels(schema, want);
}

int64_t RebuildCheckpoint(TestSchema& schema) {
  return schema.QueryInt(
      absl::StrCat("SELECT coalesce(max(position_gp), 0) FROM ", schema.name(),
                   ".projection_rebuilds"));
}

TEST_CASE("a CLI rebuild stopped by Ctrl-C or kill -9 leaves the live model",
          "[bank][projections][pg]") {
  TestSchema schema;
  auto store = Store(schema);
  Balances want = Fill(*store, "r", 400, 149);  // 60,000 events
  Projector projector(schema);
  REQUIRE(Eventually([&] { return ReadBalances(schema) == want; }));
  for (int signal : {SIGINT, SIGKILL}) {
    INFO("signal " << signal);
    Rebuilder rebuild(schema, "account_transactions");
    const int64_t before = RebuildCheckpoint(schema);
    REQUIRE(Eventually([&] { return RebuildCheckpoint(schema) > before; }));
    const int code = rebuild.Kill(signal);
    CHECK(code == (signal == SIGINT ? 1 : 128 + SIGKILL));
    // Interrupted mid-way: the live model is untouched.
    CHECK(schema.QueryInt(absl::StrCat("SELECT generation FROM ", schema.name(),
                                       ".projections WHERE name = "
                                       "'account_transactions'")) == 1);
    CHECK(RebuildCheckpoint(schema) < 60000);
    CheckOtherModels(schema, want);
  }
  Rebuilder again(schema, "account_transactions");
  CHECK(again.Wait() == 0);
  CHECK(schema.QueryInt(absl::StrCat("SELECT generation FROM ", schema.name(),
                                     ".projections WHERE name = "
                                     "'account_transactions'")) == 2);
  CheckOtherModels(schema, want);
}

using Run = cqrs::testing::ShellResult;

// `bank <args>` on the test schema; stdout and stderr together.
Run BankCli(TestSchema& schema, const std::string& args) {
  return cqrs::testing::RunShell(
      absl::StrCat(BANK_BINARY, " ", args, " --database-url '", schema.url(),
                   "' --schema ", schema.name(), " 2>&1 </dev/null"));
}

TEST_CASE("bank projections: status, rebuild, parked from the CLI",
          "[bank][projections][pg]") {
  TestSchema schema;
  auto store = Store(schema);
  Balances want = Fill(*store, "c", 10, 9);
  {
    Projector projector(schema);
    REQUIRE(Eventually([&] { return ReadBalances(schema) == want; }));
    Run status = BankCli(schema, "projections status --json");
    INFO(status.output);
    CHECK(status.exit_code == 0);
    for (const char* name :
         {"account_balances", "account_transactions", "bank_stats"}) {
      CHECK(absl::StrContains(status.output,
                              absl::StrCat("\"name\":\"", name, "\"")));
    }
    CHECK(absl::StrContains(status.output, "\"owner\":\"cqrs projection"));

    // Rebuilt while the projector runs: plain progress lines (no terminal).
    Run rebuild = BankCli(schema, "projections rebuild --all");
    INFO(rebuild.output);
    CHECK(rebuild.exit_code == 0);
    size_t swapped = 0;
    for (size_t at = 0;
         (at = rebuild.output.find("swapped", at)) != std::string::npos; ++at) {
      ++swapped;
    }
    CHECK(swapped == BankProjections().size());  // not the process manager
    CHECK(ReadBalances(schema) == want);
    CheckOtherModels(schema, want);
    // Whole pages without pauses: the same result.
    Run fast = BankCli(schema, "projections rebuild account_balances --fast");
    INFO(fast.output);
    CHECK(fast.exit_code == 0);
    CHECK(absl::StrContains(fast.output, "swapped"));
    CHECK(ReadBalances(schema) == want);
  }
  Run fast_status = BankCli(schema, "projections status --fast");
  CHECK(fast_status.exit_code == 2);
  CHECK(absl::StrContains(fast_status.output, "--fast"));
  Run parked = BankCli(schema, "projections parked");
  CHECK(parked.exit_code == 0);
  CHECK(absl::StrContains(parked.output, "0 parked event(s)"));
  Run replay = BankCli(schema, "projections replay-parked account_balances");
  CHECK(replay.exit_code == 0);
  CHECK(absl::StrContains(replay.output, "replayed 0, still parked 0"));
  Run unknown = BankCli(schema, "projections rebuild nope");
  CHECK(unknown.exit_code == 2);
  CHECK(absl::StrContains(unknown.output, "unknown projection 'nope'"));
  for (const char* bad : {"soon", "-1s", "5"}) {
    Run retry = BankCli(
        schema, absl::StrCat("projections rebuild --all --retry-for=", bad));
    INFO(retry.output);
    CHECK(retry.exit_code == 2);
    CHECK(absl::StrContains(retry.output, "--retry-for: '"));
  }
  Run list = BankCli(schema, "projections list");
  CHECK(list.exit_code == 0);
  CHECK(absl::StrContains(list.output, "account_transactions"));
}

// One request on a fresh connection to the server on `port`.
cqrs::http_test::ClientResponse Http(int port, const std::string& token,
                                     const std::string& method,
                                     const std::string& target,
                                     const std::string& body = "") {
  auto client = cqrs::http_test::TestClient::Connect(port);
  REQUIRE(client.ok());
  cqrs::http::HeaderList headers = cqrs::testing::BearerHeader(token);
  if (!body.empty()) headers.push_back({"Content-Type", "application/json"});
  auto r = (*client)->Send(method, target, body, headers);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *std::move(r);
}

// `bank serve` (with the projections and the transfer process) on the port
// it picked,
// once it answers /readyz, and a key with every scope for it.
struct Server : BankProcess {
  explicit Server(TestSchema& schema)
      : BankProcess(schema, {"serve", "--listen", "127.0.0.1:0"}),
        port(WaitForListeningPort()),
        token(cqrs::testing::CreateToken(schema.pool(), schema.name())) {
    REQUIRE(Eventually([&] {
      auto client =
          cqrs::http_test::TestClient::Connect(port, absl::Seconds(2));
      if (!client.ok()) return false;
      auto r = (*client)->Send("GET", "/readyz");
      return r.ok() && r->status == 200;
    }));
  }

  const int port;
  const std::string token;
};

bool Failed(TestSchema& schema, const std::string& projection) {
  return schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                      ".projections WHERE name = '", projection,
                                      "' AND state = 'failed'")) == 1;
}

TEST_CASE(
    "an operator resumes a failed read model (CLI) and the failed transfer "
    "process (HTTP) without a rebuild",
    "[bank][projections][pg]") {
  TestSchema schema;
  auto store = Store(schema);
  Balances want = Fill(*store, "u", 2, 3);
  Server server(schema);
  const int port = server.port;
  REQUIRE(Eventually([&] { return ReadBalances(schema) == want; }));

  // A read model that refuses the row of one event, every time (as a bug in
  // its handler would): account_balances stops on it.
  schema.Exec(absl::StrCat("ALTER TABLE ", schema.name(),
                           ".account_balances_g1 ADD CONSTRAINT test_cap "
                           "CHECK (balance < 1000000)"));
  NewEvent big;
  big.event_type = "MoneyDeposited";
  big.data = R"({"amount":2000000})";
  REQUIRE(store->Append("account-u0", ExpectedVersion::Exactly(4), {big}).ok());
  want["u0"].balance += 2000000;
  want["u0"].version += 1;
  REQUIRE(Eventually([&] { return Failed(schema, "account_balances"); }));
  Run status = BankCli(schema, "projections status");
  INFO(status.output);
  CHECK(status.exit_code == 0);
  CHECK(absl::StrContains(status.output, "last error ("));

  Run not_failed = BankCli(schema, "projections resume account_transactions");
  CHECK(not_failed.exit_code == 1);
  CHECK(absl::StrContains(not_failed.output, "has not failed"));
  Run unknown = BankCli(schema, "projections resume nope");
  CHECK(unknown.exit_code == 2);
  CHECK(absl::StrContains(unknown.output, "unknown projection 'nope'"));
  Run two = BankCli(schema, "projections resume account_balances bank_stats");
  CHECK(two.exit_code == 2);
  CHECK(Failed(schema, "account_balances"));

  // Fixed: resumed from its checkpoint, it applies the event once.
  schema.Exec(absl::StrCat("ALTER TABLE ", schema.name(),
                           ".account_balances_g1 DROP CONSTRAINT test_cap"));
  Run resumed = BankCli(schema, "projections resume account_balances");
  INFO(resumed.output);
  CHECK(resumed.exit_code == 0);
  CHECK(!Failed(schema, "account_balances"));
  REQUIRE(Eventually([&] { return ReadBalances(schema) == want; }));
  CHECK(schema.QueryInt(
            absl::StrCat("SELECT generation FROM ", schema.name(),
                         ".projections WHERE name = 'account_balances'")) == 1);
  CheckOtherModels(schema, want);

  // The transfer process stopped by an error of its own transaction (the
  // issue's "every later transfer stays pending").
  schema.Exec(absl::StrCat(
      "CREATE FUNCTION ", schema.name(),
      ".test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE "
      "EXCEPTION 'refused by the test'; END $$; CREATE TRIGGER test_refuse "
      "BEFORE INSERT ON ",
      schema.name(), ".process_commands FOR EACH ROW EXECUTE FUNCTION ",
      schema.name(), ".test_refuse()"));
  auto accepted = Http(port, server.token, "POST", "/transfers",
                       R"({"from":"u0","to":"u1","amount":5,)"
                       R"("transfer_id":"t-resume"})");
  REQUIRE(accepted.status == 202);
  REQUIRE(Eventually([&] { return Failed(schema, "transfer_process"); }));
  auto listed = Http(port, server.token, "GET", "/projections");
  CHECK(listed.status == 200);
  CHECK(absl::StrContains(listed.body, "refused by the test"));

  auto conflict =
      Http(port, server.token, "POST", "/projections/account_balances/resume");
  CHECK(conflict.status == 409);
  CHECK(absl::StrContains(conflict.body, "projection_not_failed"));
  auto missing = Http(port, server.token, "POST", "/projections/nope/resume");
  CHECK(missing.status == 404);
  CHECK(absl::StrContains(missing.body, "projection_not_found"));
  CHECK(Failed(schema, "transfer_process"));

  schema.Exec(absl::StrCat("DROP TRIGGER test_refuse ON ", schema.name(),
                           ".process_commands"));
  auto resume =
      Http(port, server.token, "POST", "/projections/transfer_process/resume");
  INFO(resume.body);
  REQUIRE(resume.status == 200);
  rapidjson::Document doc;
  doc.Parse(resume.body.c_str());
  REQUIRE(doc.IsObject());
  CHECK(std::string(doc["name"].GetString()) == "transfer_process");
  CHECK(std::string(doc["state"].GetString()) != "failed");
  CHECK(!doc.HasMember("last_error"));
  REQUIRE(Eventually([&] {
    auto r = Http(port, server.token, "GET", "/transfers/t-resume");
    return r.status == 200 && absl::StrContains(r.body, "\"completed\"");
  }));
  // The money moved once.
  want["u0"].balance -= 5;
  want["u1"].balance += 5;
  REQUIRE(Eventually([&] {
    Balances got = ReadBalances(schema);
    return got["u0"].balance == want["u0"].balance &&
           got["u1"].balance == want["u1"].balance;
  }));
  CHECK(!Failed(schema, "transfer_process"));
  CHECK(server.Kill(SIGTERM) == 0);
}

}  // namespace
}  // namespace bank

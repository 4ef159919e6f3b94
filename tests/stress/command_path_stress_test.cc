// A seeded stress test of the command path (issue 11), through the real
// interfaces only, with the faults that break such systems:
//
//   - two `bank serve` processes on one schema (both run the projections:
//     one owns the transfer process manager, the other stands by and takes
//     over when the owner's session is killed);
//   - 8 clients sending random commands to both (opens, deposits,
//     withdrawals, closes, transfers to existing, late-opened, missing and
//     foreign-currency accounts), half of them with an Idempotency-Key and
//     retried with it until their outcome is known;
//   - a fault injector that cancels running statements and open
//     transactions of the bank's sessions (a forced rollback, the same error
//     as a statement timeout), terminates sessions, and holds accounts'
//     stream locks, while a statement_timeout makes statements that wait
//     too long fail for real;
//   - writers that append to and delete scratch streams through the
//     framework's store at the same time;
//   - all on a database created with an ICU collation.
//
// Afterwards: no stream's versions are out of order in the global order,
// every account's balance is non-negative after every one of its events,
// no money sits in a closed account, every acknowledged command is in the
// log exactly once (and no refused one), every transfer is completed or
// failed with its money accounted for, no process stopped, no delete and
// append of one stream both succeeded, and the read model agrees with the
// log.
//
// CQRS_STRESS_SEED and CQRS_STRESS_SECONDS override the fixed seed and the
// traffic time; scripts/stress-commands runs it for longer with random seeds.
// STRESS_DEBUG=1 prints the banks' logs at the end.
#include <signal.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "eventstore/postgres_event_store.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/child_process.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace bank {
namespace {

namespace http = cqrs::http;
using cqrs::eventstore::ExpectedVersion;
using cqrs::http_test::ClientResponse;
using cqrs::http_test::TestClient;

constexpr int kAccounts = 24;  // the last four hold USD
constexpr int kClients = 8;

struct Config {
  uint64_t seed = 20261206;
  absl::Duration traffic = absl::Seconds(12);
};

Config FromEnvironment() {
  Config config;
  if (const char* s = std::getenv("CQRS_STRESS_SEED")) {
    REQUIRE(absl::SimpleAtoi(s, &config.seed));
  }
  if (const char* s = std::getenv("CQRS_STRESS_SECONDS")) {
    int seconds = 0;
    REQUIRE(absl::SimpleAtoi(s, &seconds));
    config.traffic = absl::Seconds(seconds);
  }
  return config;
}

std::string Account(int i) { return absl::StrCat("a", i); }

// `bank serve` with the test database and schema on a port it picks, its
// output captured (STRESS_DEBUG=1 prints it when the test ends).
class ServedBank {
 public:
  ServedBank(const std::string& url, const std::string& schema,
             std::vector<std::string> extra)
      : process_(BANK_BINARY, Args(url, schema, std::move(extra)),
                 cqrs::testing::ChildProcess::Output::kCapture),
        port_(process_.WaitForListeningPort()) {}
  ~ServedBank() {
    if (std::getenv("STRESS_DEBUG")) std::cerr << process_.CapturedOutput();
  }

  int port() const { return port_; }
  int Kill(int signal) { return process_.Kill(signal); }
  // The last `n` lines it wrote (what it said before it stopped answering).
  std::string Tail(size_t n) const {
    const std::string output = process_.CapturedOutput();
    std::vector<absl::string_view> lines = absl::StrSplit(output, '\n');
    if (lines.size() > n) lines.erase(lines.begin(), lines.end() - n);
    return absl::StrJoin(lines, "\n");
  }
  // Whether the process still runs (not ended, not a zombie).
  bool Running() const {
    std::string stat;
    std::getline(std::ifstream(absl::StrCat("/proc/", process_.pid(), "/stat")),
                 stat);
    const size_t paren = stat.rfind(')');
    return paren != std::string::npos && paren + 2 < stat.size() &&
           stat[paren + 2] != 'Z';
  }
  // Its ERROR lines and the access lines of its 500s (with their cause).
  std::string Errors() const {
    std::string out;
    for (absl::string_view line :
         absl::StrSplit(process_.CapturedOutput(), '\n')) {
      if (absl::StrContains(line, " ERROR ") ||
          absl::StrContains(line, "status=500")) {
        absl::StrAppend(&out, line, "\n");
      }
    }
    return out;
  }

 private:
  static std::vector<std::string> Args(const std::string& url,
                                       const std::string& schema,
                                       std::vector<std::string> extra) {
    std::vector<std::string> args = {
        "serve", "--listen", "127.0.0.1:0", "--database-url",
        url,     "--schema", schema};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  cqrs::testing::ChildProcess process_;
  const int port_;
};

// The bearer token every request sends: a key with every scope in the
// schema under test, set once before the banks start.
std::string& Token() {
  static std::string token;
  return token;
}

// One request on a fresh connection; nullopt when it got no answer.
std::optional<ClientResponse> Request(int port, const std::string& method,
                                      const std::string& target,
                                      const std::string& body = "",
                                      const http::HeaderList& headers = {}) {
  auto client = TestClient::Connect(port, absl::Seconds(10));
  if (!client.ok()) return std::nullopt;
  (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(Token()));
  auto r = (*client)->Send(method, target, body, headers);
  if (!r.ok()) return std::nullopt;
  return *std::move(r);
}

void WaitReady(int port) {
  REQUIRE(cqrs::testing::Eventually(
      [&] {
        auto r = Request(port, "GET", "/readyz");
        return r.has_value() && r->status == 200;
      },
      absl::Seconds(60), absl::Milliseconds(50)));
}

// A command a client sent, and what it was told.
struct Sent {
  enum class Kind { kOpen, kDeposit, kWithdraw, kClose, kTransfer };
  Kind kind;
  std::string stream;  // "account-<id>" or "transfer-<id>"
  std::string correlation_id;
  bool keyed = false;
  int status = 0;       // the final answer; 0: none (outcome unknown)
  int64_t version = 0;  // from a 2xx account command's body
};

const char* EventTypeOf(Sent::Kind kind) {
  switch (kind) {
    case Sent::Kind::kOpen:
      return "AccountOpened";
    case Sent::Kind::kDeposit:
      return "MoneyDeposited";
    case Sent::Kind::kWithdraw:
      return "MoneyWithdrawn";
    case Sent::Kind::kClose:
      return "AccountClosed";
    case Sent::Kind::kTransfer:
      return "TransferRequested";
  }
  return "";
}

struct Journal {
  absl::Mutex mu;
  std::vector<Sent> sent ABSL_GUARDED_BY(mu);
  std::map<int, int> by_status ABSL_GUARDED_BY(mu);
  int retries ABSL_GUARDED_BY(mu) = 0;
};

// Sends one command until its outcome is known: a keyed request is retried
// with its key after a 5xx or a lost connection; an unkeyed one is not
// (its outcome stays unknown).
void SendCommand(int port, std::mt19937_64& rng, Journal& journal, Sent sent,
                 const std::string& target, const std::string& body) {
  http::HeaderList headers = {{"Content-Type", "application/json"},
                              {"X-Correlation-Id", sent.correlation_id}};
  if (sent.keyed) headers.emplace_back("Idempotency-Key", sent.correlation_id);
  for (int attempt = 0;; ++attempt) {
    std::optional<ClientResponse> r =
        Request(port, "POST", target, body, headers);
    {
      absl::MutexLock lock(&journal.mu);
      ++journal.by_status[r.has_value() ? r->status : 0];
      if (attempt > 0) ++journal.retries;
    }
    if (r.has_value() && r->status < 500) {
      sent.status = r->status;
      if (r->status == 200 || r->status == 201) {
        rapidjson::Document doc;
        doc.Parse(r->body.c_str());
        // -1: an answer the contract does not allow (checked later).
        sent.version = !doc.HasParseError() && doc.IsObject() &&
                               doc.HasMember("version") &&
                               doc["version"].IsInt64()
                           ? doc["version"].GetInt64()
                           : -1;
      }
      break;
    }
    if (!sent.keyed || attempt >= 40) break;
    // A client's back-off before it retries (random, as real clients'), not
    // a wait for a condition.
    absl::SleepFor(absl::Milliseconds(5 + static_cast<int>(rng() % 40)));
  }
  absl::MutexLock lock(&journal.mu);
  journal.sent.push_back(std::move(sent));
}

void Client(int c, const std::vector<int>& ports, uint64_t seed,
            absl::Time until, Journal& journal) {
  std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(c));
  std::vector<std::string> late;  // accounts this client opened
  for (int n = 0; absl::Now() < until; ++n) {
    const int port = ports[rng() % ports.size()];
    Sent sent;
    sent.correlation_id = absl::StrCat("s", seed, "-", c, "-", n);
    sent.keyed = rng() % 2 == 0;
    const int a = static_cast<int>(rng() % kAccounts);
    const int roll = static_cast<int>(rng() % 100);
    std::string target, body;
    if (roll < 3) {
      const std::string id = absl::StrCat("late-", c, "-", late.size());
      late.push_back(id);
      sent.kind = Sent::Kind::kOpen;
      sent.stream = "account-" + id;
      target = "/accounts";
      body = absl::StrCat(R"({"owner":"Late","currency":"EUR","account_id":")",
                          id, R"("})");
    } else if (roll < 40) {
      sent.kind = Sent::Kind::kDeposit;
      sent.stream = "account-" + Account(a);
      target = absl::StrCat("/accounts/", Account(a), "/deposit");
      body = absl::StrCat(R"({"amount":)", 1 + rng() % 500, "}");
    } else if (roll < 65) {
      sent.kind = Sent::Kind::kWithdraw;
      sent.stream = "account-" + Account(a);
      target = absl::StrCat("/accounts/", Account(a), "/withdraw");
      body = absl::StrCat(R"({"amount":)", 1 + rng() % 400, "}");
    } else if (roll < 96) {
      // To an account of the base set, one opened during the run (maybe
      // by another client, maybe not yet), or one that never exists.
      const int pick = static_cast<int>(rng() % 10);
      std::string to = Account(static_cast<int>(rng() % kAccounts));
      if (pick == 0) to = "missing";
      if (pick == 1) {
        to = absl::StrCat("late-", rng() % kClients, "-", rng() % 4);
      }
      if (to == Account(a)) to = Account((a + 1) % kAccounts);
      const std::string id = sent.correlation_id;
      sent.kind = Sent::Kind::kTransfer;
      sent.stream = "transfer-" + id;
      target = "/transfers";
      body = absl::StrCat(R"({"from":")", Account(a), R"(","to":")", to,
                          R"(","amount":)", 1 + rng() % 300,
                          R"(,"transfer_id":")", id, R"("})");
    } else {
      sent.kind = Sent::Kind::kClose;
      sent.stream = "account-" + Account(a);
      target = absl::StrCat("/accounts/", Account(a), "/close");
      body = "{}";
    }
    SendCommand(port, rng, journal, std::move(sent), target, body);
  }
}

// Cancels statements and transactions of the bank's sessions, terminates
// sessions, and holds accounts' stream locks, until `stop`.
struct FaultCounts {
  int cancels = 0, terminations = 0, locks = 0;
  std::string error;  // the injector's own session failed
};

void SetApplicationName(pqxx::connection& conn, const std::string& name) {
  pqxx::nontransaction tx(conn);
  tx.exec_params("SELECT set_config('application_name', $1, false)", name);
}

FaultCounts InjectFaults(const std::string& url, const std::string& schema,
                         uint64_t seed, const std::atomic<bool>& stop) {
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  FaultCounts counts;
  pqxx::connection conn(url);
  SetApplicationName(conn, "stress-faults");
  {
    // The injector is not under test: the database's statement_timeout
    // (250 ms) is for the banks' sessions, and a busy machine may keep its
    // look at pg_stat_activity waiting longer than that.
    pqxx::nontransaction tx(conn);
    tx.exec("SET statement_timeout = 0");
  }
  while (!stop) {
    // The random gap between faults: part of the load, not a wait.
    absl::SleepFor(absl::Milliseconds(5 + static_cast<int>(rng() % 35)));
    try {
      pqxx::nontransaction tx(conn);
      const int roll = static_cast<int>(rng() % 100);
      if (roll < 25) {
        const std::string stream =
            "account-" + Account(static_cast<int>(rng() % kAccounts));
        tx.exec("BEGIN");
        tx.exec_params(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, hashtext($2)))",
            stream, schema);
        tx.exec_params("SELECT pg_sleep($1)",
                       0.02 + static_cast<double>(rng() % 60) / 1000);
        tx.exec("COMMIT");
        ++counts.locks;
        continue;
      }
      const bool terminate = roll >= 85;
      pqxx::result pids = tx.exec(
          absl::StrCat("SELECT pid FROM pg_stat_activity WHERE datname = "
                       "current_database() AND backend_type = 'client "
                       "backend' AND pid <> pg_backend_pid() AND "
                       "application_name NOT LIKE 'stress%'",
                       terminate ? "" : " AND state <> 'idle'"));
      if (pids.empty()) continue;
      const int pid = pids[rng() % pids.size()][0].as<int>();
      tx.exec_params(terminate ? "SELECT pg_terminate_backend($1)"
                               : "SELECT pg_cancel_backend($1)",
                     pid);
      ++(terminate ? counts.terminations : counts.cancels);
    } catch (const std::exception& e) {
      counts.error = e.what();
      return counts;
    }
  }
  return counts;
}

// Races a delete against an append on fresh scratch streams, until `stop`;
// both must never succeed.
struct Races {
  int trials = 0;
  int deletes_won = 0;
  std::vector<std::string> both_succeeded;
};

Races RaceDeletes(cqrs::eventstore::PostgresEventStore& store, int writer,
                  const std::atomic<bool>& stop) {
  Races races;
  for (int i = 0; !stop; ++i) {
    const std::string stream = absl::StrCat("scratch-", writer, "-", i);
    cqrs::eventstore::NewEvent e;
    e.event_type = "Scratched";
    if (!store.Append(stream, ExpectedVersion::NoStream(), {e}).ok()) continue;
    absl::Status deleted;
    std::thread deleter([&] {
      deleted = store.DeleteStream(stream, ExpectedVersion::Exactly(1));
    });
    auto appended = store.Append(stream, ExpectedVersion::Exactly(1), {e});
    deleter.join();
    ++races.trials;
    if (deleted.ok()) ++races.deletes_won;
    if (deleted.ok() && appended.ok()) races.both_succeeded.push_back(stream);
  }
  return races;
}

// Every stored event, by the correlation id of its command.
struct Stored {
  std::string stream, type;
  int64_t version;
};

std::multimap<std::string, Stored> EventsByCorrelation(pqxx::connection& conn,
                                                       const std::string& s) {
  pqxx::nontransaction tx(conn);
  std::multimap<std::string, Stored> out;
  for (const pqxx::row& row :
       tx.exec(absl::StrCat("SELECT coalesce(metadata->>'correlation_id', ''), "
                            "stream_id, event_type, stream_version FROM ",
                            s, ".events"))) {
    out.emplace(row[0].as<std::string>(),
                Stored{row[1].as<std::string>(), row[2].as<std::string>(),
                       row[3].as<int64_t>()});
  }
  return out;
}

long long Count(pqxx::connection& conn, const std::string& sql) {
  pqxx::nontransaction tx(conn);
  return tx.exec1(sql)[0].as<long long>();
}

// The signed amount an account event moves, as SQL over `events e`.
constexpr char kDelta[] =
    "CASE e.event_type "
    "WHEN 'MoneyDeposited' THEN (e.data->>'amount')::numeric "
    "WHEN 'MoneyWithdrawn' THEN -(e.data->>'amount')::numeric "
    "WHEN 'AccountDebitedForTransfer' THEN -(e.data->>'amount')::numeric "
    "WHEN 'AccountCreditedForTransfer' THEN (e.data->>'amount')::numeric "
    "WHEN 'AccountRefundedForTransfer' THEN (e.data->>'amount')::numeric "
    "ELSE 0 END";

TEST_CASE("the command path under faults keeps every guarantee",
          "[stress][pg][.slow]") {
  const Config config = FromEnvironment();
  std::cout << "stress: seed " << config.seed << ", "
            << absl::FormatDuration(config.traffic) << " of traffic\n";
  cqrs::testing::TestDatabase icu(
      "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'");
  cqrs::testing::TestSchema schema(icu.url(), 8);
  const std::string& s = schema.name();
  pqxx::connection conn(icu.url());
  SetApplicationName(conn, "stress-checks");

  REQUIRE(cqrs::testing::RunShell(
              absl::StrCat(BANK_BINARY, " migrate --database-url '", icu.url(),
                           "' --schema ", s, " >/dev/null 2>&1"))
              .exit_code == 0);
  Token() = cqrs::testing::CreateToken(schema.pool(), s);
  // Statements that wait too long (behind a held lock, on a busy machine)
  // fail for real, in every session the banks open from here on.
  schema.Exec(absl::StrCat("ALTER DATABASE ", icu.name(),
                           " SET statement_timeout = '250ms'"));
  std::vector<std::unique_ptr<ServedBank>> banks;
  std::vector<int> ports;
  for (int i = 0; i < 2; ++i) {
    banks.push_back(std::make_unique<ServedBank>(
        icu.url(), s,
        std::vector<std::string>{"--workers", "8", "--pool-size", "12"}));
    ports.push_back(banks.back()->port());
  }
  for (int port : ports) WaitReady(port);

  for (int i = 0; i < kAccounts; ++i) {
    const std::string body = absl::StrCat(
        R"({"owner":"Stress","currency":")", i >= kAccounts - 4 ? "USD" : "EUR",
        R"(","account_id":")", Account(i), R"("})");
    const http::HeaderList headers = {{"Content-Type", "application/json"},
                                      {"Idempotency-Key", Account(i)}};
    for (const char* step : {"open", "fund"}) {
      const std::string target =
          std::string(step) == "open"
              ? "/accounts"
              : absl::StrCat("/accounts/", Account(i), "/deposit");
      const std::string payload =
          std::string(step) == "open" ? body : R"({"amount":2000})";
      http::HeaderList h = headers;
      h[1].second = absl::StrCat(Account(i), "-", step);
      REQUIRE(cqrs::testing::Eventually(
          [&] {
            auto r = Request(ports[0], "POST", target, payload, h);
            if (!r.has_value() || r->status >= 500) return false;
            REQUIRE(r->status / 100 == 2);
            return true;
          },
          absl::Seconds(30), absl::Milliseconds(1)));
    }
  }

  // Traffic, faults and delete races, all at once.
  Journal journal;
  std::atomic<bool> stop{false};
  cqrs::PgPoolOptions scratch_pool_options;
  scratch_pool_options.conninfo = icu.url();
  scratch_pool_options.on_connect = [](pqxx::connection& c) {
    SetApplicationName(c, "stress-scratch");
  };
  auto scratch_pool = cqrs::PgPool::Create(scratch_pool_options);
  REQUIRE(scratch_pool.ok());
  cqrs::eventstore::PostgresEventStoreOptions scratch_options;
  scratch_options.schema = s;
  auto scratch = cqrs::eventstore::PostgresEventStore::Create(
      scratch_pool->get(), scratch_options);
  REQUIRE(scratch.ok());
  FaultCounts faults;
  std::thread injector(
      [&] { faults = InjectFaults(icu.url(), s, config.seed, stop); });
  std::vector<Races> races(2);
  std::vector<std::thread> racers;
  for (int w = 0; w < 2; ++w) {
    racers.emplace_back([&, w] { races[w] = RaceDeletes(**scratch, w, stop); });
  }
  const absl::Time until = absl::Now() + config.traffic;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back(
        [&, c] { Client(c, ports, config.seed, until, journal); });
  }
  for (auto& t : clients) t.join();
  stop = true;
  injector.join();
  for (auto& t : racers) t.join();
  schema.Exec(
      absl::StrCat("ALTER DATABASE ", icu.name(), " RESET statement_timeout"));

  // Quiet: every transfer settles, without an operator.
  const std::string unsettled = absl::StrCat(
      "SELECT count(*) FROM (SELECT stream_id FROM ", s,
      ".events WHERE stream_id LIKE 'transfer-%' GROUP BY stream_id HAVING "
      "NOT bool_or(event_type IN ('TransferCompleted', 'TransferFailed'))) u");
  const bool settled =
      cqrs::testing::Eventually([&] { return Count(conn, unsettled) == 0; },
                                absl::Seconds(120), absl::Milliseconds(100));
  INFO("transfers still pending: " << Count(conn, unsettled));
  REQUIRE(settled);

  absl::MutexLock lock(&journal.mu);
  std::cout << "stress: " << journal.sent.size() << " commands, "
            << journal.retries << " retries;";
  for (const auto& [status, n] : journal.by_status) {
    std::cout << " " << status << ":" << n;
  }
  std::cout << "; faults: " << faults.cancels << " cancels, "
            << faults.terminations << " terminations, " << faults.locks
            << " held locks; delete races: "
            << races[0].trials + races[1].trials << " ("
            << races[0].deletes_won + races[1].deletes_won << " deletes won)\n";
  CHECK(faults.error == "");  // shows the injector's error
  CHECK(journal.sent.size() > 100);
  // Only the faults' 503s and business answers; never a 500 or a 409 (no
  // command here sends If-Match).
  {
    std::string errors;
    for (const auto& bank : banks) absl::StrAppend(&errors, bank->Errors());
    INFO("the banks' ERROR lines:\n" << errors);
    CHECK(journal.by_status.count(500) == 0);
  }
  CHECK(journal.by_status.count(409) == 0);

  // 1. Every stream in version order in the global order.
  CHECK(schema.StreamOrderInversions() == 0);

  // 2. No balance ever negative; no money in a closed account.
  CHECK(Count(conn,
              absl::StrCat("SELECT count(*) FROM (SELECT sum(", kDelta,
                           ") OVER (PARTITION BY e.stream_id ORDER BY "
                           "e.stream_version) AS balance FROM ",
                           s,
                           ".events e WHERE e.stream_id LIKE 'account-%') b "
                           "WHERE balance < 0")) == 0);
  CHECK(
      Count(conn, absl::StrCat("SELECT count(*) FROM (SELECT e.stream_id, sum(",
                               kDelta,
                               ") AS balance, bool_or(e.event_type = "
                               "'AccountClosed') AS closed FROM ",
                               s,
                               ".events e GROUP BY e.stream_id) b WHERE closed "
                               "AND balance <> 0")) == 0);

  // 3. Every acknowledged command exactly once, at the version it was told;
  //    a refused one not at all; one without an answer at most once.
  const std::multimap<std::string, Stored> stored =
      EventsByCorrelation(conn, s);
  int acknowledged = 0;
  for (const Sent& sent : journal.sent) {
    const std::string type = EventTypeOf(sent.kind);
    std::vector<Stored> matches;
    auto range = stored.equal_range(sent.correlation_id);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second.type == type && it->second.stream == sent.stream) {
        matches.push_back(it->second);
      }
    }
    INFO(sent.correlation_id << " " << type << " on " << sent.stream
                             << ": status " << sent.status << ", stored "
                             << matches.size());
    if (sent.status / 100 == 2) {
      ++acknowledged;
      REQUIRE(matches.size() == 1);
      CHECK(sent.version != -1);
      if (sent.version > 0) CHECK(matches[0].version == sent.version);
    } else if (sent.status != 0) {
      CHECK(matches.empty());
    } else {
      CHECK(matches.size() <= 1);
    }
  }
  CHECK(acknowledged > 50);

  // 4. Every transfer completed or failed, once, with its money accounted
  //    for: what left the source came back or reached the target.
  CHECK(Count(conn,
              absl::StrCat("SELECT count(*) FROM (SELECT stream_id FROM ", s,
                           ".events WHERE event_type IN ('TransferCompleted', "
                           "'TransferFailed') GROUP BY stream_id HAVING "
                           "count(*) > 1) d")) == 0);
  CHECK(Count(conn, absl::StrCat(
                        "SELECT count(*) FROM (SELECT e.data->>'transfer_id' "
                        "AS t, sum(",
                        kDelta, ") AS net FROM ", s,
                        ".events e WHERE e.stream_id LIKE 'account-%' AND "
                        "e.data->>'transfer_id' IS NOT NULL GROUP BY 1) m "
                        "WHERE net <> 0")) == 0);

  // 5. No process stopped: both serve, no projection or process manager
  //    failed or stopped.
  for (size_t i = 0; i < banks.size(); ++i) {
    const int port = ports[i];
    absl::StatusOr<ClientResponse> health =
        absl::UnavailableError("no connection");
    if (auto client = TestClient::Connect(port); !client.ok()) {
      health = client.status();
    } else {
      (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(Token()));
      health = (*client)->Send("GET", "/healthz");
    }
    INFO("bank " << i << " running: " << banks[i]->Running()
                 << "; GET /healthz: " << health.status()
                 << "; its last lines:\n"
                 << banks[i]->Tail(40));
    REQUIRE(health.ok());
    CHECK(health->status == 200);
    auto projections = Request(port, "GET", "/projections");
    REQUIRE(projections.has_value());
    REQUIRE(projections->status == 200);
    INFO(projections->body);
    CHECK(!absl::StrContains(projections->body, R"("state":"failed")"));
    CHECK(!absl::StrContains(projections->body, R"("state":"stopped")"));
  }

  // 6. A delete and an append of one stream never both succeeded (checked
  //    per race above), and no event sits behind a delete.
  CHECK(races[0].trials + races[1].trials > 0);
  for (const Races& r : races) {
    for (const std::string& stream : r.both_succeeded) {
      FAIL_CHECK(stream << ": the delete and the append both succeeded");
    }
  }
  CHECK(Count(conn, absl::StrCat(
                        "SELECT count(*) FROM ", s,
                        ".deleted_streams d WHERE "
                        "d.version <> (SELECT max(stream_version) FROM ",
                        s, ".events e WHERE e.stream_id = d.stream_id)")) == 0);

  // 7. The read model agrees with the log once it has caught up.
  const std::string fold = absl::StrCat(
      "SELECT coalesce(sum(", kDelta, "), 0)::bigint FROM ", s,
      ".events e WHERE e.stream_id LIKE 'account-%' AND e.stream_id IN "
      "(SELECT stream_id FROM ",
      s,
      ".events WHERE event_type = 'AccountOpened' AND data->>'currency' = "
      "'EUR')");
  const long long eur = Count(conn, fold);
  std::string last_stats;
  const bool agrees = cqrs::testing::Eventually(
      [&] {
        auto stats = Request(ports[0], "GET", "/stats");
        REQUIRE(stats.has_value());
        last_stats = stats->body;
        rapidjson::Document doc;
        doc.Parse(stats->body.c_str());
        return stats->status == 200 && !doc.HasParseError() &&
               doc["total_balance"].HasMember("EUR") &&
               doc["total_balance"]["EUR"].GetInt64() == eur;
      },
      absl::Seconds(60), absl::Milliseconds(100));
  INFO("GET /stats " << last_stats << ", log says EUR " << eur);
  REQUIRE(agrees);
  for (auto& bank : banks) bank->Kill(SIGTERM);
}

}  // namespace
}  // namespace bank

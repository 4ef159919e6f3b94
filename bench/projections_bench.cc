// Projection benchmarks (issue: projections), in one run on one database:
//
// 1. rebuild: the bank's three projections rebuilt over --events events
//    (--accounts accounts opened, then deposits spread over them), next to
//    the rate of only reading the same events through the store's ReadAll
//    in pages of the rebuild's batch size;
// 2. lag: deposits at a steady --rate per second while the bank's
//    projections run in-process; for each deposit, the time from its
//    append returning until account_balances' checkpoint covers it
//    (sampled every millisecond).
//
//   projections_bench --database-url=URL [--events=1000000] [--accounts=10000]
//                     [--rate=1000] [--seconds=10] [--phases=rebuild,lag]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "eventstore/postgres_event_store.h"
#include "example_app/bank_app.h"
#include "example_app/bank_projections.h"
#include "framework/pg_pool.h"
#include "projections/rebuild.h"
#include "projections/runner.h"

namespace {

using cqrs::eventstore::ExpectedVersion;
using cqrs::eventstore::NewEvent;
using cqrs::eventstore::Position;

struct Flags {
  std::string database_url;
  int64_t events = 1000000;
  int64_t accounts = 10000;
  int rate = 1000;
  int seconds = 10;
  int batch = 10000;
  bool rebuild = true;
  bool lag = true;
};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "projections_bench: %s\n", message.c_str());
  std::exit(1);
}

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) Die(absl::StrCat(what, ": ", s.ToString()));
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  if (const char* url = std::getenv("DATABASE_URL")) f.database_url = url;
  for (int i = 1; i < argc; ++i) {
    std::pair<std::string, std::string> kv =
        absl::StrSplit(absl::string_view(argv[i]), absl::MaxSplits('=', 1));
    const std::string& k = kv.first;
    const std::string& v = kv.second;
    int64_t n = 0;
    const bool number = absl::SimpleAtoi(v, &n) && n > 0;
    if (k == "--database-url") {
      f.database_url = v;
    } else if (k == "--events" && number) {
      f.events = n;
    } else if (k == "--accounts" && number) {
      f.accounts = n;
    } else if (k == "--rate" && number) {
      f.rate = static_cast<int>(n);
    } else if (k == "--seconds" && number) {
      f.seconds = static_cast<int>(n);
    } else if (k == "--batch" && number) {
      f.batch = static_cast<int>(n);
    } else if (k == "--phases") {
      f.rebuild = absl::StrContains(v, "rebuild");
      f.lag = absl::StrContains(v, "lag");
    } else {
      Die(absl::StrCat("bad argument '", argv[i], "' (see the file comment)"));
    }
  }
  if (f.database_url.empty()) Die("--database-url or DATABASE_URL needed");
  if (f.accounts > f.events) Die("--accounts must not exceed --events");
  return f;
}

// Fills the store server-side: account openings, then deposits round robin,
// 100,000 events per transaction (each its own transaction id).
void Fill(const Flags& f, const std::string& schema) {
  pqxx::connection conn(f.database_url);
  const absl::Time start = absl::Now();
  constexpr int64_t kChunk = 100000;
  for (int64_t from = 0; from < f.events; from += kChunk) {
    const int64_t to = std::min(f.events, from + kChunk) - 1;
    pqxx::work tx(conn);
    tx.exec_params(
        absl::StrCat(
            "INSERT INTO ", schema,
            ".events (stream_id, stream_version, event_id, event_type, "
            "schema_version, data, metadata) "
            "SELECT 'account-acc' || (i % $1), 1 + i / $1, "
            "gen_random_uuid(), "
            "CASE WHEN i < $1 THEN 'AccountOpened' ELSE 'MoneyDeposited' END,"
            " 1, CASE WHEN i < $1 THEN json_build_object('owner', 'owner' || "
            "(i % 977), 'currency', 'EUR') ELSE json_build_object('amount', "
            "1 + i % 100) END, '{}'::json "
            "FROM generate_series($2::int8, $3::int8) AS i ORDER BY i"),
        f.accounts, from, to);
    tx.commit();
  }
  pqxx::nontransaction admin(conn);
  admin.exec(absl::StrCat("ANALYZE ", schema, ".events"));
  admin.exec("CHECKPOINT");
  std::printf("fill: %lld events over %lld accounts in %.1f s\n",
              static_cast<long long>(f.events),
              static_cast<long long>(f.accounts),
              absl::ToDoubleSeconds(absl::Now() - start));
}

double ReadRate(cqrs::eventstore::PostgresEventStore& store, int page,
                int64_t* count) {
  const absl::Time start = absl::Now();
  Position at = Position::Start();
  *count = 0;
  while (true) {
    auto r = store.ReadAll(at, page);
    Check(r.status(), "ReadAll");
    if (r->events.empty()) break;
    *count += static_cast<int64_t>(r->events.size());
    at = r->next;
  }
  return *count / absl::ToDoubleSeconds(absl::Now() - start);
}

void RebuildPhase(const Flags& f, cqrs::PgPool& pool,
                  cqrs::eventstore::PostgresEventStore& store,
                  const std::string& schema) {
  Fill(f, schema);
  int64_t read = 0;
  // Twice: the first pass also warms the cache for everyone after it.
  ReadRate(store, f.batch, &read);
  const double read_rate = ReadRate(store, f.batch, &read);
  std::printf("read only: ReadAll pages of %d: %lld events, %.0f events/s\n",
              f.batch, static_cast<long long>(read), read_rate);
  bool all_met = true;
  for (const cqrs::projections::Projection& p : bank::BankProjections()) {
    cqrs::projections::RebuildOptions options;
    options.batch_size = f.batch;
    const absl::Time start = absl::Now();
    Check(
        cqrs::projections::RebuildProjection(&pool, &store, p, schema, options),
        "rebuild");
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    const double rate = read / seconds;
    all_met = all_met && rate >= 100000;
    std::printf(
        "rebuild %-22s %lld events in %6.2f s = %8.0f events/s  %.2fx of "
        "read only  target >= 100000 events/s %s\n",
        p.name.c_str(), static_cast<long long>(read), seconds, rate,
        rate / read_rate, rate >= 100000 ? "met" : "MISSED");
  }
  std::printf("rebuild targets: %s\n", all_met ? "met" : "MISSED");
}

void LagPhase(const Flags& f, cqrs::PgPool& pool,
              cqrs::eventstore::PostgresEventStore& store,
              const std::string& schema) {
  constexpr int kAccounts = 1000;
  for (int i = 0; i < kAccounts; ++i) {
    NewEvent e;
    e.event_type = "AccountOpened";
    e.data = absl::StrCat(R"({"owner":"lag","currency":"EUR"})");
    Check(
        store
            .Append(absl::StrCat("account-lag", i), ExpectedVersion::Any(), {e})
            .status(),
        "open");
  }
  cqrs::projections::ProjectionRunnerOptions options;
  options.schema = schema;
  auto runner = cqrs::projections::ProjectionRunner::Create(
      &pool, &store, bank::BankProjections(), options);
  Check(runner.status(), "runner");
  (*runner)->Start();
  // Wait until caught up with the fill (if any).
  pqxx::connection conn(f.database_url);
  auto checkpoint = [&] {
    pqxx::nontransaction tx(conn);
    pqxx::row r = tx.exec1(
        absl::StrCat("SELECT position_xid::text, position_gp FROM ", schema,
                     ".projections WHERE name = 'account_balances'"));
    uint64_t xid = 0;
    absl::SimpleAtoi(r[0].c_str(), &xid);
    return Position{xid, r[1].as<int64_t>()};
  };
  auto head = store.HeadPosition();
  Check(head.status(), "head");
  while (checkpoint() < *head) absl::SleepFor(absl::Milliseconds(50));

  struct Sample {
    Position position;
    absl::Time appended;
  };
  const int64_t total = static_cast<int64_t>(f.rate) * f.seconds;
  absl::Mutex mu;
  std::vector<Sample> appended;  // guarded by mu
  // Writers: four threads share the pace, so that a slow append does not
  // hold the others back.
  constexpr int kWriters = 4;
  std::vector<std::thread> writers;
  const absl::Time start = absl::Now();
  std::atomic<int64_t> next{0};
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&] {
      absl::BitGen gen;
      while (true) {
        const int64_t i = next++;
        if (i >= total) return;
        absl::SleepFor(start + absl::Seconds(static_cast<double>(i) / f.rate) -
                       absl::Now());
        NewEvent e;
        e.event_type = "MoneyDeposited";
        e.data = R"({"amount":1})";
        auto r = store.Append(
            absl::StrCat("account-lag", absl::Uniform(gen, 0, kAccounts)),
            ExpectedVersion::Any(), {e});
        Check(r.status(), "deposit");
        absl::MutexLock lock(&mu);
        appended.push_back(Sample{r->position, absl::Now()});
      }
    });
  }
  // The poller: when does the checkpoint cover each sample?
  std::vector<double> lags_ms;
  lags_ms.reserve(total);
  std::vector<Sample> pending;
  int64_t taken = 0;
  while (static_cast<int64_t>(lags_ms.size()) < total &&
         absl::Now() - start < absl::Seconds(f.seconds + 60)) {
    {
      absl::MutexLock lock(&mu);
      pending.insert(pending.end(), appended.begin() + taken, appended.end());
      taken = static_cast<int64_t>(appended.size());
    }
    const Position cp = checkpoint();
    const absl::Time now = absl::Now();
    std::vector<Sample> still;
    for (const Sample& s : pending) {
      if (cp < s.position) {
        still.push_back(s);
      } else {
        lags_ms.push_back(
            std::max(0.0, absl::ToDoubleMilliseconds(now - s.appended)));
      }
    }
    pending.swap(still);
    absl::SleepFor(absl::Milliseconds(1));
  }
  for (auto& t : writers) t.join();
  (*runner)->Stop();
  std::sort(lags_ms.begin(), lags_ms.end());
  auto pct = [&](double q) {
    return lags_ms.empty()
               ? 0.0
               : lags_ms[static_cast<size_t>(q * (lags_ms.size() - 1))];
  };
  const double achieved = total / absl::ToDoubleSeconds(absl::Now() - start);
  std::printf(
      "lag: %lld deposits at %d/s (achieved %.0f/s over the run), commit to "
      "visible in account_balances: p50 %.1f ms, p99 %.1f ms, max %.1f ms  "
      "target p99 <= 50 ms %s\n",
      static_cast<long long>(lags_ms.size()), f.rate, achieved, pct(0.5),
      pct(0.99), lags_ms.empty() ? 0.0 : lags_ms.back(),
      pct(0.99) <= 50 ? "met" : "MISSED");
}

}  // namespace

int main(int argc, char** argv) {
  const Flags f = ParseFlags(argc, argv);
  absl::BitGen gen;
  const std::string schema =
      absl::StrCat("projbench_", absl::Uniform<uint32_t>(gen));
  cqrs::PgPoolOptions pool_options;
  pool_options.conninfo = f.database_url;
  pool_options.max_connections = 16;
  auto pool = cqrs::PgPool::Create(pool_options);
  Check(pool.status(), "pool");
  Check(bank::BankApp::Migrate(**pool, schema), "migrate");
  cqrs::eventstore::PostgresEventStoreOptions store_options;
  store_options.schema = schema;
  auto store =
      cqrs::eventstore::PostgresEventStore::Create(pool->get(), store_options);
  Check(store.status(), "store");
  std::printf("projections_bench: schema %s; %d CPUs\n", schema.c_str(),
              static_cast<int>(std::thread::hardware_concurrency()));
  if (f.rebuild) RebuildPhase(f, **pool, **store, schema);
  if (f.lag) LagPhase(f, **pool, **store, schema);
  {
    pqxx::connection conn(f.database_url);
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat("DROP SCHEMA ", schema, " CASCADE"));
  }
  return 0;
}

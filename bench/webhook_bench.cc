// Webhook delivery figures (issue 16), in one process on a PostgreSQL
// cluster of scripts/bench-webhooks:
//
//   webhook_bench --database-url URL [--endpoints 10] [--events 5000]
//                 [--rate 500] [--seconds 10] [--latency-endpoints 1]
//
// 1. Throughput: `events` events are in the log before `endpoints`
//    endpoints (every event each) are added with their cursors at the
//    start; the deliverer then delivers all of them to receivers on the
//    framework's HTTP server that answer 204 at once. Prints deliveries/s
//    and the HTTP client thread's share of the process's CPU.
// 2. Latency: a writer appends `rate` events/s for `seconds` s to an
//    app whose `latency-endpoints` endpoints are caught up; each event
//    carries the time just before its Append() (so the commit is
//    included), and the receiver takes the difference when the request
//    arrives. The first second is warm-up. Prints p50, p99 and max.
//
// A benchmark tool, not a test.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "eventstore/postgres_event_store.h"
#include "framework/http/router.h"
#include "framework/http/server.h"
#include "framework/migrations.h"
#include "framework/pg_pool.h"
#include "integration/webhook_deliverer.h"
#include "integration/webhook_store.h"
#include "rapidjson/document.h"

namespace {

using cqrs::eventstore::ExpectedVersion;
using cqrs::eventstore::NewEvent;

struct Flags {
  std::string database_url;
  std::string schema = "bench_webhooks";
  int endpoints = 10;
  int events = 5000;
  int rate = 500;
  int seconds = 10;
  int latency_endpoints = 1;
};

bool ParseFlags(int argc, char** argv, Flags& f) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const absl::string_view name = argv[i];
    const std::string value = argv[i + 1];
    bool ok = true;
    if (name == "--database-url") {
      f.database_url = value;
    } else if (name == "--schema") {
      f.schema = value;
    } else if (name == "--endpoints") {
      ok = absl::SimpleAtoi(value, &f.endpoints) && f.endpoints > 0;
    } else if (name == "--events") {
      ok = absl::SimpleAtoi(value, &f.events) && f.events > 0;
    } else if (name == "--rate") {
      ok = absl::SimpleAtoi(value, &f.rate) && f.rate > 0;
    } else if (name == "--seconds") {
      ok = absl::SimpleAtoi(value, &f.seconds) && f.seconds > 1;
    } else if (name == "--latency-endpoints") {
      ok = absl::SimpleAtoi(value, &f.latency_endpoints) &&
           f.latency_endpoints > 0;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "webhook_bench: bad flag %s %s\n", argv[i],
                   value.c_str());
      return false;
    }
  }
  return !f.database_url.empty();
}

absl::Duration ProcessCpu() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return absl::DurationFromTimeval(u.ru_utime) +
         absl::DurationFromTimeval(u.ru_stime);
}

// Receivers at POST /hook/{n}, answering 204 on the network thread.
class Receivers {
 public:
  Receivers() {
    cqrs::http::RouteOptions inline_route;
    inline_route.execution = cqrs::http::Execution::kNetworkThread;
    router_.Add(
        "POST", "/hook/{n}",
        [this](const cqrs::http::Request& request) {
          const absl::Time now = absl::Now();
          received_.fetch_add(1);
          if (measure_.load()) {
            rapidjson::Document doc;
            doc.Parse(request.body().data(), request.body().size());
            if (doc.IsObject() && doc.HasMember("data")) {
              const int64_t sent = doc["data"]["sent_us"].GetInt64();
              absl::MutexLock lock(&mu_);
              latencies_.push_back(absl::ToUnixMicros(now) - sent);
            }
          }
          cqrs::http::Response r;
          r.status = 204;
          r.content_type.clear();
          return r;
        },
        inline_route);
    cqrs::http::ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.network_threads = 1;
    options.worker_threads = 1;
    auto server = cqrs::http::Server::Create(options, &router_);
    if (!server.ok() || !(*server)->Start().ok()) std::abort();
    server_ = *std::move(server);
  }
  std::string Url(int n) const {
    return absl::StrCat("http://127.0.0.1:", server_->port(), "/hook/", n);
  }
  int64_t received() const { return received_.load(); }
  void Measure(bool on) { measure_ = on; }
  std::vector<int64_t> TakeLatencies() {
    absl::MutexLock lock(&mu_);
    return std::move(latencies_);
  }

 private:
  cqrs::http::Router router_;
  std::unique_ptr<cqrs::http::Server> server_;
  std::atomic<int64_t> received_{0};
  std::atomic<bool> measure_{false};
  absl::Mutex mu_;
  std::vector<int64_t> latencies_ ABSL_GUARDED_BY(mu_);
};

NewEvent Ticked(int64_t sent_us) {
  NewEvent e;
  e.event_type = "Ticked";
  e.data = absl::StrCat("{\"sent_us\":", sent_us, "}");
  e.metadata = "{}";
  return e;
}

void AddEndpoints(const std::string& url, const std::string& schema,
                  const std::string& cursor,
                  const std::vector<std::string>& urls) {
  pqxx::connection conn(url);
  pqxx::work tx(conn);
  for (size_t i = 0; i < urls.size(); ++i) {
    tx.exec_params(absl::StrCat("INSERT INTO ", schema,
                                ".webhook_endpoints (id, url, secret, cursor) "
                                "VALUES ($1, $2, $3, $4)"),
                   absl::StrCat("wh_bench_", cursor, "_", i), urls[i],
                   "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", cursor);
  }
  tx.commit();
}

int Run(const Flags& flags) {
  cqrs::PgPoolOptions pool_options;
  pool_options.conninfo = flags.database_url;
  pool_options.max_connections = 24;
  auto pool = cqrs::PgPool::Create(pool_options);
  if (!pool.ok()) return 1;
  {
    pqxx::connection conn(flags.database_url);
    pqxx::work tx(conn);
    tx.exec(absl::StrCat("DROP SCHEMA IF EXISTS ", flags.schema, " CASCADE"));
    tx.commit();
  }
  if (!cqrs::eventstore::PostgresEventStore::Migrate(**pool, flags.schema)
           .ok() ||
      !cqrs::integration::WebhookStore::Migrate(**pool, flags.schema).ok()) {
    std::fprintf(stderr, "webhook_bench: migration failed\n");
    return 1;
  }
  cqrs::eventstore::PostgresEventStoreOptions store_options;
  store_options.schema = flags.schema;
  auto store =
      cqrs::eventstore::PostgresEventStore::Create(pool->get(), store_options);
  if (!store.ok()) return 1;
  cqrs::integration::Publication publication("/bench");
  if (!publication.Add({"Ticked", "bench.ticked", 1, nullptr, ""}).ok()) {
    return 1;
  }
  Receivers receivers;

  // 1. Throughput.
  for (int i = 0; i < flags.events; i += 100) {
    std::vector<NewEvent> batch;
    for (int j = i; j < std::min(flags.events, i + 100); ++j) {
      batch.push_back(Ticked(0));
    }
    if (!(*store)
             ->Append(absl::StrCat("tick-", i / 100), ExpectedVersion::Any(),
                      batch)
             .ok()) {
      return 1;
    }
  }
  {
    pqxx::connection conn(flags.database_url);
    pqxx::work tx(conn);
    tx.exec(absl::StrCat("ANALYZE ", flags.schema, ".events"));
    tx.commit();
  }
  std::vector<std::string> urls;
  for (int i = 0; i < flags.endpoints; ++i) urls.push_back(receivers.Url(i));
  AddEndpoints(flags.database_url, flags.schema, "0.0", urls);
  cqrs::integration::WebhookDelivererOptions options;
  options.schema = flags.schema;
  options.allow_networks = {"127.0.0.0/8"};
  auto deliverer = cqrs::integration::WebhookDeliverer::Create(
      pool->get(), store->get(), &publication, options);
  if (!deliverer.ok()) {
    std::fprintf(stderr, "webhook_bench: %s\n",
                 deliverer.status().ToString().c_str());
    return 1;
  }
  const int64_t total = int64_t{flags.events} * flags.endpoints;
  const absl::Duration cpu0 = ProcessCpu();
  const absl::Duration client0 = (*deliverer)->client_cpu_time();
  const absl::Time t0 = absl::Now();
  (*deliverer)->Start();
  while (receivers.received() < total) absl::SleepFor(absl::Milliseconds(2));
  const absl::Duration took = absl::Now() - t0;
  const absl::Duration cpu = ProcessCpu() - cpu0;
  const absl::Duration client = (*deliverer)->client_cpu_time() - client0;
  std::printf(
      "throughput: %lld deliveries (%d events x %d endpoints) in %.2f s = "
      "%.0f deliveries/s; process CPU %.2f s (%.0f%% of one core), HTTP "
      "client thread %.2f s = %.0f%% of the process's CPU\n",
      static_cast<long long>(total), flags.events, flags.endpoints,
      absl::ToDoubleSeconds(took), total / absl::ToDoubleSeconds(took),
      absl::ToDoubleSeconds(cpu),
      100 * absl::ToDoubleSeconds(cpu) / absl::ToDoubleSeconds(took),
      absl::ToDoubleSeconds(client),
      100 * absl::ToDoubleSeconds(client) / absl::ToDoubleSeconds(cpu));
  std::fflush(stdout);
  // Wait until every outcome is written, then leave only the latency
  // endpoints.
  {
    pqxx::connection conn(flags.database_url);
    pqxx::work tx(conn);
    tx.exec(absl::StrCat("DELETE FROM ", flags.schema, ".webhook_endpoints"));
    tx.commit();
  }

  // 2. Latency.
  auto head = (*store)->HeadPosition();
  if (!head.ok()) return 1;
  std::vector<std::string> latency_urls;
  for (int i = 0; i < flags.latency_endpoints; ++i) {
    latency_urls.push_back(receivers.Url(100 + i));
  }
  AddEndpoints(flags.database_url, flags.schema, head->ToToken(), latency_urls);
  const absl::Duration interval = absl::Seconds(1) / flags.rate;
  absl::Time next = absl::Now();
  const absl::Time start = next;
  const absl::Time end = start + absl::Seconds(flags.seconds);
  int64_t sent = 0;
  bool measuring = false;
  while (absl::Now() < end) {
    if (!measuring && absl::Now() >= start + absl::Seconds(1)) {
      receivers.Measure(true);
      measuring = true;
    }
    const int64_t sent_us = absl::ToUnixMicros(absl::Now());
    if (!(*store)
             ->Append(absl::StrCat("live-", sent % 500), ExpectedVersion::Any(),
                      {Ticked(sent_us)})
             .ok()) {
      return 1;
    }
    ++sent;
    next += interval;
    const absl::Time now = absl::Now();
    if (next > now) absl::SleepFor(next - now);
  }
  absl::SleepFor(absl::Seconds(1));  // the last deliveries arrive
  receivers.Measure(false);
  std::vector<int64_t> l = receivers.TakeLatencies();
  std::sort(l.begin(), l.end());
  if (l.empty()) {
    std::printf("latency: nothing measured\n");
    return 1;
  }
  auto at = [&](double q) {
    return l[std::min(l.size() - 1, static_cast<size_t>(q * l.size()))] /
           1000.0;
  };
  std::printf(
      "latency at %d events/s for %d s to %d endpoint(s), commit included: "
      "%zu deliveries measured, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
      flags.rate, flags.seconds, flags.latency_endpoints, l.size(), at(0.5),
      at(0.99), l.back() / 1000.0);
  (*deliverer)->Stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, flags)) {
    std::fprintf(stderr,
                 "usage: webhook_bench --database-url URL [--endpoints N] "
                 "[--events N] [--rate N] [--seconds N] "
                 "[--latency-endpoints N]\n");
    return 2;
  }
  return Run(flags);
}

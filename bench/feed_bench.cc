// Catch-up over HTTP (issue 15 item 7): one client reading every published
// event page by page through GET /events of a running app, next to the
// store's own ReadAll of the same events in the same run.
//
// A small app (two published event types, command-like metadata on every
// event) is served in-process by cqrs::AppServer with authentication on. It
// loads --events events through the app's store (appends of --append-batch
// events each from --loaders threads), waits until all are readable, then
// runs --rounds rounds, each one ReadAll pass (pages of --limit through the
// app's store, the events read and dropped) followed by one HTTP pass (one
// keep-alive connection with a bearer token, GET /events?limit=--limit
// &after=<next>, each page parsed in full with RapidJSON as a consumer
// would, until an empty page). Per round the ratio HTTP / ReadAll; then
// their median against the target (>= 0.5x). Both passes run on the same
// machine as PostgreSQL; the HTTP pass also carries the client, whose own
// CPU time (its thread's) is printed next to the process's.
//
//   feed_bench --database-url=URL [--events=1000000] [--rounds=3]
//              [--limit=1000] [--append-batch=1000] [--loaders=2]
//              [--network-threads=2]
//
// A benchmark, not a test: exit 0 whatever the figures, 1 when something
// fails, 2 for bad flags.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <pqxx/pqxx>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "app/app.h"
#include "app/app_server.h"
#include "commands/command_metadata.h"
#include "eventstore/postgres_event_store.h"
#include "framework/auth/api_keys.h"
#include "framework/json_shape.h"
#include "framework/pg_pool.h"
#include "rapidjson/document.h"

namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
namespace json = cqrs::json;
using tcp = net::ip::tcp;
using cqrs::eventstore::ExpectedVersion;
using cqrs::eventstore::NewEvent;
using cqrs::eventstore::Position;

struct Opened {
  std::string owner;
  std::string currency;
  static auto Json() {
    return json::Shape<Opened>()
        .Field("owner", &Opened::owner)
        .Field("currency", &Opened::currency);
  }
};
struct Deposited {
  int64_t amount = 0;
  static auto Json() {
    return json::Shape<Deposited>().Field("amount", &Deposited::amount);
  }
};

struct Flags {
  std::string database_url;
  int64_t events = 1000000;
  int rounds = 3;
  int limit = 1000;
  int append_batch = 1000;
  int loaders = 2;
  int network_threads = 2;
};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "feed_bench: %s\n", message.c_str());
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
    int64_t n = 0;
    const bool number = absl::SimpleAtoi(kv.second, &n) && n > 0;
    if (k == "--database-url") {
      f.database_url = kv.second;
    } else if (k == "--events" && number) {
      f.events = n;
    } else if (k == "--rounds" && number) {
      f.rounds = static_cast<int>(n);
    } else if (k == "--limit" && number && n <= 1000) {
      f.limit = static_cast<int>(n);
    } else if (k == "--append-batch" && number &&
               n <= static_cast<int64_t>(
                        cqrs::eventstore::kMaxEventsPerAppend)) {
      f.append_batch = static_cast<int>(n);
    } else if (k == "--loaders" && number && n <= 64) {
      f.loaders = static_cast<int>(n);
    } else if (k == "--network-threads" && number && n <= 64) {
      f.network_threads = static_cast<int>(n);
    } else {
      std::fprintf(stderr,
                   "feed_bench: bad argument '%s' (see the file "
                   "comment)\n",
                   argv[i]);
      std::exit(2);
    }
  }
  if (f.database_url.empty()) Die("--database-url or DATABASE_URL needed");
  return f;
}

// CPU seconds of this process (the app server and the client or reader),
// or with RUSAGE_THREAD of the calling thread (the client alone).
double CpuSeconds(int who = RUSAGE_SELF) {
  rusage u{};
  getrusage(who, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Append number `a`: stream account-<a>, one Opened then Deposited events,
// with the metadata a command writes.
void Append(const Flags& f, cqrs::eventstore::PostgresEventStore& store,
            int64_t a) {
  const int64_t size =
      std::min<int64_t>(f.append_batch, f.events - a * f.append_batch);
  const std::string metadata =
      cqrs::commands::CommandMetadata::ForCommand("", "bench-loader").ToJson();
  std::vector<NewEvent> events(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i) {
    NewEvent& e = events[static_cast<size_t>(i)];
    if (i == 0) {
      e.event_type = "Opened";
      e.data = json::Encode(Opened{absl::StrCat("owner ", a), "EUR"});
    } else {
      e.event_type = "Deposited";
      e.data = json::Encode(Deposited{1 + i % 100});
    }
    e.metadata = metadata;
  }
  Check(store
            .Append(absl::StrCat("account-", a), ExpectedVersion::Any(),
                    std::move(events))
            .status(),
        "append");
}

// Appends f.events events: streams of f.append_batch events, one Append
// each, shared out among the loader threads.
void Load(const Flags& f, cqrs::eventstore::PostgresEventStore& store,
          const std::string& schema) {
  const absl::Time start = absl::Now();
  const int64_t appends = (f.events + f.append_batch - 1) / f.append_batch;
  // Appends number next..to-1 from the loader threads.
  std::atomic<int64_t> next{0};
  const auto load = [&](int64_t to) {
    std::vector<std::thread> loaders;
    for (int l = 0; l < f.loaders; ++l) {
      loaders.emplace_back([&] {
        for (int64_t a = next++; a < to; a = next++) Append(f, store, a);
      });
    }
    for (std::thread& t : loaders) t.join();
    next = std::min(next.load(), to);
  };
  // The first appends of each session run while the table is empty, and
  // PostgreSQL can then cache a sequential scan for append_v3's event-id
  // check of a group (a plan kept while the table grows: each later append
  // would scan the whole table). Statistics taken after the first 10,000
  // events invalidate those plans; the next ones use the index.
  load(std::min<int64_t>(appends,
                         (10000 + f.append_batch - 1) / f.append_batch));
  {
    pqxx::connection conn(f.database_url);
    pqxx::nontransaction admin(conn);
    admin.exec(absl::StrCat("ANALYZE ", schema, ".events"));
  }
  load(appends);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf(
      "load: %lld events in %.1f s = %.0f events/s (%d per Append, %d "
      "loaders)\n",
      static_cast<long long>(f.events), seconds, f.events / seconds,
      f.append_batch, f.loaders);
}

struct Pass {
  int64_t events = 0;
  double seconds = 0;
  double cpu_seconds = 0;     // of this process
  double client_seconds = 0;  // of the HTTP client's thread
  double rate() const { return events / seconds; }
};

Pass ReadAllPass(cqrs::eventstore::PostgresEventStore& store, int limit) {
  const double cpu = CpuSeconds();
  const absl::Time start = absl::Now();
  Pass pass;
  Position at = Position::Start();
  while (true) {
    auto r = store.ReadAll(at, limit);
    Check(r.status(), "ReadAll");
    if (r->events.empty()) break;
    pass.events += static_cast<int64_t>(r->events.size());
    at = r->next;
  }
  pass.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  pass.cpu_seconds = CpuSeconds() - cpu;
  return pass;
}

// One keep-alive connection following GET /events to its end.
Pass HttpPass(int port, const std::string& token, int limit) {
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"),
                               static_cast<unsigned short>(port)));
  stream.socket().set_option(tcp::no_delay(true));
  const std::string authorization = absl::StrCat("Bearer ", token);
  const double cpu = CpuSeconds();
  const double client_cpu = CpuSeconds(RUSAGE_THREAD);
  const absl::Time start = absl::Now();
  Pass pass;
  std::string after;
  beast::flat_buffer buffer;
  while (true) {
    std::string target = absl::StrCat("/events?limit=", limit);
    if (!after.empty()) absl::StrAppend(&target, "&after=", after);
    bhttp::request<bhttp::empty_body> request(bhttp::verb::get, target, 11);
    request.set(bhttp::field::host, "127.0.0.1");
    request.set(bhttp::field::authorization, authorization);
    bhttp::write(stream, request);
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    bhttp::read(stream, buffer, parser);
    std::string body = parser.release().body();
    if (parser.get().result_int() != 200 && body.empty()) {
      Die(absl::StrCat("GET ", target, ": no body"));
    }
    rapidjson::Document doc;
    doc.ParseInsitu(body.data());
    if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("items")) {
      Die(absl::StrCat("GET ", target, ": ", body.substr(0, 200)));
    }
    const auto& items = doc["items"];
    if (items.Empty()) break;
    pass.events += static_cast<int64_t>(items.Size());
    after = doc["next"].GetString();
  }
  pass.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  pass.cpu_seconds = CpuSeconds() - cpu;
  pass.client_seconds = CpuSeconds(RUSAGE_THREAD) - client_cpu;
  return pass;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  const Flags f = ParseFlags(argc, argv);
  absl::BitGen gen;
  const std::string schema =
      absl::StrCat("feedbench_", absl::Uniform<uint32_t>(gen));
  cqrs::PgPoolOptions pool_options;
  pool_options.conninfo = f.database_url;
  pool_options.max_connections = 24;
  auto pool = cqrs::PgPool::Create(pool_options);
  Check(pool.status(), "pool");
  Check(cqrs::MigrateApp(**pool, schema), "migrate");

  cqrs::App app("feedbench");
  app.Event<Opened>("Opened").Publish<Opened>("bench.account.opened");
  app.Event<Deposited>("Deposited")
      .Publish<Deposited>("bench.account.deposited");
  cqrs::ServeOptions options;
  options.schema = schema;
  options.network_threads = f.network_threads;
  auto server = cqrs::AppServer::Start(app, pool->get(), options);
  Check(server.status(), "start");
  auto keys = cqrs::auth::ApiKeyStore::Create(pool->get(), schema);
  Check(keys.status(), "keys");
  auto key = (*keys)->CreateKey("feed_bench", {"events"}, {});
  Check(key.status(), "key");
  cqrs::eventstore::PostgresEventStore& store = (*server)->store();
  std::printf("feed_bench: schema %s; %d CPUs; --limit %d\n", schema.c_str(),
              static_cast<int>(std::thread::hardware_concurrency()), f.limit);

  Load(f, store, schema);
  {
    pqxx::connection conn(f.database_url);
    pqxx::nontransaction admin(conn);
    admin.exec(absl::StrCat("VACUUM ANALYZE ", schema, ".events"));
    admin.exec("CHECKPOINT");
  }
  // Every event readable (nothing else writes) and both paths warm.
  const Pass warm = ReadAllPass(store, f.limit);
  if (warm.events != f.events) {
    Die(absl::StrCat("ReadAll saw ", warm.events, " events, not ", f.events));
  }
  const Pass warm_http = HttpPass((*server)->port(), key->token, f.limit);
  if (warm_http.events != f.events) {
    Die(absl::StrCat("GET /events saw ", warm_http.events, " events, not ",
                     f.events));
  }

  std::vector<double> read_rates;
  std::vector<double> http_rates;
  std::vector<double> ratios;
  for (int r = 1; r <= f.rounds; ++r) {
    const Pass read = ReadAllPass(store, f.limit);
    std::printf(
        "round %d  ReadAll       %lld events in %6.2f s = %8.0f events/s  "
        "(this process %.2f s CPU)\n",
        r, static_cast<long long>(read.events), read.seconds, read.rate(),
        read.cpu_seconds);
    const Pass http = HttpPass((*server)->port(), key->token, f.limit);
    if (http.events != f.events) {
      Die(absl::StrCat("GET /events saw ", http.events, " events"));
    }
    std::printf(
        "round %d  GET /events   %lld events in %6.2f s = %8.0f events/s  "
        "(this process %.2f s CPU, of which the client %.2f s)  ratio "
        "%.2fx\n",
        r, static_cast<long long>(http.events), http.seconds, http.rate(),
        http.cpu_seconds, http.client_seconds, http.rate() / read.rate());
    std::fflush(stdout);
    read_rates.push_back(read.rate());
    http_rates.push_back(http.rate());
    ratios.push_back(http.rate() / read.rate());
  }
  std::string per_round;
  for (double q : ratios) {
    absl::StrAppend(&per_round, per_round.empty() ? "" : ", ",
                    absl::StrFormat("%.2f", q));
  }
  const double median = Median(ratios);
  std::printf(
      "summary: %lld events, pages of %d; ReadAll median %.0f events/s, GET "
      "/events median %.0f events/s; ratio per round %s; median %.2fx  "
      "target >= 0.50x %s\n",
      static_cast<long long>(f.events), f.limit, Median(read_rates),
      Median(http_rates), per_round.c_str(), median,
      median >= 0.5 ? "met" : "MISSED");

  (*server)->Stop();
  server->reset();
  {
    pqxx::connection conn(f.database_url);
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat("DROP SCHEMA ", schema, " CASCADE"));
  }
  return 0;
}

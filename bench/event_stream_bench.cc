// Live Server-Sent Events latency (issue 15): N subscribers on GET
// /events/stream of a server process while a writer appends events at a
// fixed rate; prints the commit-to-client latency over all deliveries and
// the server's CPU. Run through scripts/bench-event-stream, which starts
// the server (`event_stream_bench serve ...`, an app publishing one event
// type, run by the framework's own CLI) and then the driver:
//
//   event_stream_bench drive --database-url URL --schema S --port P
//       --server-pid PID [--clients 100] [--rate 1000] [--seconds 10]
//
// The latency of one delivery runs from just before the writer's Append()
// (so it includes the commit) to the moment the client's read returned
// the event. The first second is warm-up and not counted. A benchmark
// tool, not a test.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "app/app.h"
#include "eventstore/postgres_event_store.h"
#include "framework/json_shape.h"
#include "framework/pg_pool.h"

namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Ticked {
  static constexpr char kName[] = "Ticked";
  int64_t seq = 0;
  static auto Json() {
    return cqrs::json::Shape<Ticked>().Field("seq", &Ticked::seq);
  }
};

struct Flags {
  std::string database_url;
  std::string schema = "bench_event_stream";
  int port = 0;
  int server_pid = 0;
  int clients = 100;
  int rate = 1000;
  int seconds = 10;
};

bool ParseFlags(int argc, char** argv, Flags& f) {
  for (int i = 2; i + 1 < argc; i += 2) {
    const absl::string_view name = argv[i];
    const std::string value = argv[i + 1];
    bool ok = true;
    if (name == "--database-url") {
      f.database_url = value;
    } else if (name == "--schema") {
      f.schema = value;
    } else if (name == "--port") {
      ok = absl::SimpleAtoi(value, &f.port);
    } else if (name == "--server-pid") {
      ok = absl::SimpleAtoi(value, &f.server_pid);
    } else if (name == "--clients") {
      ok = absl::SimpleAtoi(value, &f.clients);
    } else if (name == "--rate") {
      ok = absl::SimpleAtoi(value, &f.rate);
    } else if (name == "--seconds") {
      ok = absl::SimpleAtoi(value, &f.seconds);
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "bad flag %s %s\n", argv[i], argv[i + 1]);
      return false;
    }
  }
  return !f.database_url.empty() && f.port > 0 && f.server_pid > 0 &&
         f.clients > 0 && f.rate > 0 && f.seconds > 1;
}

// CPU seconds (user + system) process `pid` has used so far.
double CpuSeconds(int pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  std::getline(stat, line);
  const size_t paren = line.rfind(')');
  if (paren == std::string::npos) return -1;
  std::vector<std::string> fields = absl::StrSplit(line.substr(paren + 2), ' ');
  // After "pid (comm) ": state is field 3, utime 14 and stime 15.
  int64_t utime = 0;
  int64_t stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return -1;
  }
  return static_cast<double>(utime + stime) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

// One SSE subscriber: records the id of each event and when its read
// returned. Runs on the driver's io_context thread.
class Subscriber : public std::enable_shared_from_this<Subscriber> {
 public:
  Subscriber(net::io_context& ioc, int port) : stream_(ioc), port_(port) {}

  void Start() {
    stream_.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"),
                                        static_cast<unsigned short>(port_)),
                          [self = shared_from_this()](beast::error_code ec) {
                            if (ec) return self->Fail("connect", ec);
                            self->request_.method(bhttp::verb::get);
                            self->request_.target("/events/stream");
                            self->request_.version(11);
                            self->request_.set(bhttp::field::host, "127.0.0.1");
                            bhttp::async_write(
                                self->stream_, self->request_,
                                [self](beast::error_code wec, std::size_t) {
                                  if (wec) return self->Fail("write", wec);
                                  self->parser_.emplace();
                                  self->parser_->body_limit(boost::none);
                                  self->ReadHeader();
                                });
                          });
  }

  bool ready() const { return ready_.load(); }
  const std::string& error() const { return error_; }
  // (position token, when it arrived); read after the io_context stopped.
  const std::vector<std::pair<std::string, Clock::time_point>>& received()
      const {
    return received_;
  }

 private:
  void ReadHeader() {
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          if (ec) return self->Fail("read header", ec);
          self->ready_ = true;
          self->ReadMore();
        });
  }

  void ReadMore() {
    bhttp::async_read_some(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          if (ec) return self->Fail("read", ec);
          self->Consume(Clock::now());
          self->ReadMore();
        });
  }

  void Consume(Clock::time_point now) {
    std::string& body = parser_->get().body();
    size_t start = 0;
    size_t end;
    while ((end = body.find("\n\n", start)) != std::string::npos) {
      absl::string_view block(body.data() + start, end - start);
      if (absl::ConsumePrefix(&block, "id: ")) {
        received_.emplace_back(std::string(block.substr(0, block.find('\n'))),
                               now);
      }
      start = end + 2;
    }
    body.erase(0, start);
  }

  void Fail(const char* what, beast::error_code ec) {
    if (ec != net::error::operation_aborted && error_.empty()) {
      error_ = absl::StrCat(what, ": ", ec.message());
    }
  }

  beast::tcp_stream stream_;
  const int port_;
  beast::flat_buffer buffer_;
  bhttp::request<bhttp::empty_body> request_;
  std::optional<bhttp::response_parser<bhttp::string_body>> parser_;
  std::atomic<bool> ready_{false};
  std::string error_;
  std::vector<std::pair<std::string, Clock::time_point>> received_;
};

double Percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t i =
      std::min(sorted.size() - 1,
               static_cast<size_t>(p * static_cast<double>(sorted.size() - 1)));
  return sorted[i];
}

int Drive(const Flags& f) {
  cqrs::PgPoolOptions pool_options;
  pool_options.conninfo = f.database_url;
  pool_options.max_connections = 2;
  auto pool = cqrs::PgPool::Create(pool_options);
  if (!pool.ok()) {
    std::fprintf(stderr, "%s\n", pool.status().ToString().c_str());
    return 1;
  }
  cqrs::eventstore::PostgresEventStoreOptions store_options;
  store_options.schema = f.schema;
  auto store =
      cqrs::eventstore::PostgresEventStore::Create(pool->get(), store_options);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }

  net::io_context ioc;
  std::vector<std::shared_ptr<Subscriber>> subscribers;
  for (int i = 0; i < f.clients; ++i) {
    subscribers.push_back(std::make_shared<Subscriber>(ioc, f.port));
    subscribers.back()->Start();
  }
  auto work = net::make_work_guard(ioc);
  std::thread io([&] { ioc.run(); });
  const absl::Time ready_deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < ready_deadline &&
         !std::all_of(subscribers.begin(), subscribers.end(),
                      [](const auto& s) { return s->ready(); })) {
    absl::SleepFor(absl::Milliseconds(10));
  }

  // The writer: one event per Append, at `rate` per second.
  const int total = f.rate * f.seconds;
  const int warmup = f.rate;  // the first second
  std::vector<std::pair<std::string, Clock::time_point>> sent;
  sent.reserve(static_cast<size_t>(total));
  const auto interval = std::chrono::nanoseconds(1000000000LL / f.rate);
  const Clock::time_point begin = Clock::now();
  double cpu_start = 0;
  Clock::time_point measured_start = begin;
  for (int i = 0; i < total; ++i) {
    std::this_thread::sleep_until(begin + i * interval);
    if (i == warmup) {
      cpu_start = CpuSeconds(f.server_pid);
      measured_start = Clock::now();
    }
    cqrs::eventstore::NewEvent event;
    event.event_type = Ticked::kName;
    event.data = cqrs::json::Encode(Ticked{i});
    event.metadata = "{}";
    const Clock::time_point before = Clock::now();
    auto appended = (*store)->Append(absl::StrCat("tick-", i % 50),
                                     cqrs::eventstore::ExpectedVersion::Any(),
                                     {std::move(event)});
    if (!appended.ok()) {
      std::fprintf(stderr, "append: %s\n",
                   appended.status().ToString().c_str());
      return 1;
    }
    sent.emplace_back(appended->position.ToToken(), before);
  }
  const double cpu_end = CpuSeconds(f.server_pid);
  const double wall =
      std::chrono::duration<double>(Clock::now() - measured_start).count();
  // Let the last events arrive.
  absl::SleepFor(absl::Seconds(2));
  work.reset();
  ioc.stop();
  io.join();

  absl::flat_hash_map<std::string, std::pair<int, Clock::time_point>> when;
  for (int i = 0; i < total; ++i) when[sent[i].first] = {i, sent[i].second};
  std::vector<double> latencies_ms;
  int errors = 0;
  for (const auto& s : subscribers) {
    if (!s->error().empty()) {
      ++errors;
      std::fprintf(stderr, "subscriber: %s\n", s->error().c_str());
    }
    for (const auto& [token, at] : s->received()) {
      auto it = when.find(token);
      if (it == when.end() || it->second.first < warmup) continue;
      latencies_ms.push_back(
          std::chrono::duration<double, std::milli>(at - it->second.second)
              .count());
    }
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  const size_t expected =
      static_cast<size_t>(total - warmup) * static_cast<size_t>(f.clients);
  std::printf(
      "live event stream: %d subscribers, %d events/s for %d s (first second "
      "not counted)\n",
      f.clients, f.rate, f.seconds);
  std::printf("  deliveries: %zu of %zu, subscribers failed: %d\n",
              latencies_ms.size(), expected, errors);
  std::printf(
      "  commit-to-client latency: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, "
      "max %.2f ms (target p99 <= 50 ms)\n",
      Percentile(latencies_ms, 0.50), Percentile(latencies_ms, 0.90),
      Percentile(latencies_ms, 0.99),
      latencies_ms.empty() ? 0.0 : latencies_ms.back());
  std::printf("  server CPU: %.1f%% of one core (%.2f s over %.1f s)\n",
              100 * (cpu_end - cpu_start) / wall, cpu_end - cpu_start, wall);
  return latencies_ms.size() == expected && errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && absl::string_view(argv[1]) == "drive") {
    Flags flags;
    if (!ParseFlags(argc, argv, flags)) {
      std::fprintf(stderr,
                   "usage: event_stream_bench drive --database-url URL "
                   "--port P --server-pid PID [--schema S] [--clients N] "
                   "[--rate R] [--seconds S]\n");
      return 2;
    }
    return Drive(flags);
  }
  // The server: an app publishing one event type, with the framework's CLI
  // (migrate, serve, keys, ...).
  cqrs::AppOptions options;
  options.schema = "bench_event_stream";
  cqrs::App app("event_stream_bench", options);
  app.Event<Ticked>(Ticked::kName).Publish<Ticked>("bench.ticked");
  return app.Main(argc, argv);
}

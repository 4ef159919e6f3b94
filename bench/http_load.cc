// Command throughput of `bank serve` over HTTP, and the raw INSERT baseline
// it is compared with (scripts/bench-commands runs both in one session).
//
//   http_load open --port 8080 --accounts 1000
//   http_load load --port 8080 --connections 64 --accounts 1000 --seconds 20
//   http_load baseline --database-url "$URL" --writers 16 --seconds 20
//
// `open` opens accounts bench-0 .. bench-<K-1> (409 account_exists counts as
// done). `load` sends POST /accounts/{id}/deposit {"amount":1} to accounts
// picked uniformly at random, from keep-alive connections that each have one
// request in flight (a closed loop: latencies are those of the requests that
// were sent, not of a fixed arrival rate). `baseline` runs --writers threads
// that each own a connection and do one autocommitted, prepared single-row
// INSERT per transaction into a copy of the event store's events table
// (LIKE ... INCLUDING ALL), exactly like eventstore_bench's raw baseline.
//
// With --database-url, `load` and `baseline` also sample, over the measured
// window, the CPU time of the PostgreSQL server's processes, of this process
// and of --server-pid (the bank), transactions and WAL flushes per operation,
// and what the server's client backends are doing (pg_stat_activity), so
// that a shortfall can be located.
//
// The last line of `load` and `baseline` output is a machine-readable
// summary: "http_load: result key=value ...". A benchmark, not a test: exit
// 0 whatever the figures, 1 on a setup failure (or when nothing succeeded),
// 2 for bad flags.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <pqxx/pqxx>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "eventstore/postgres_event_store.h"
#include "framework/pg_pool.h"
#include "framework/status_macros.h"
#include "framework/uuid.h"

namespace cqrs::bench {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

// A connection that fails this many times in a row gives up.
constexpr int kMaxConsecutiveErrors = 20;
constexpr auto kReconnectDelay = std::chrono::milliseconds(20);
constexpr auto kIoTimeout = std::chrono::seconds(30);
constexpr auto kWaitSampleInterval = std::chrono::milliseconds(100);
constexpr int kBaselineStreamsPerWriter = 100;

constexpr char kUsage[] = R"(usage: http_load <mode> [flags]

modes:
  open      open accounts <prefix>0 .. <prefix><accounts-1> (409 is fine)
  load      deposits into random accounts for --seconds after --warmup
  read      GET --get TARGET for --seconds after --warmup; "{id}" in TARGET
            becomes a random account id <prefix><0..accounts-1>
  baseline  raw single-row INSERTs (autocommit) from --writers connections

flags (open, load):
  --host H             server address (default 127.0.0.1)
  --port P             server port (default 8080)
  --connections N      keep-alive connections (default 64; open: 16)
  --accounts K         number of accounts (default 1000)
  --prefix S           account id prefix (default bench-)
  --client-threads N   threads driving the connections (default 1)
  --server-pid PID     the server's pid, for its CPU time (load, read)
  --get TARGET         read: the request target, e.g. /accounts/{id}
  --token T            send Authorization: Bearer T (open, load, read)
  --idempotency-keys on
                       load: every deposit with its own Idempotency-Key
                       (the path a broker message takes, App::Consume)
flags (load, baseline):
  --seconds S          measured duration (default 20)
  --warmup S           unmeasured warm-up before it (default 3)
  --database-url URL   load: optional, enables server-side sampling;
                       baseline: required
  --writers N          baseline: writer connections (default 16)
)";

struct Flags {
  std::string mode;
  std::string host = "127.0.0.1";
  int port = 8080;
  int connections = 0;  // 0: the mode's default
  int accounts = 1000;
  std::string prefix = "bench-";
  int client_threads = 1;
  int server_pid = 0;
  double seconds = 20;
  double warmup = 3;
  std::string database_url;
  int writers = 16;
  std::string get;    // read: the target template
  std::string token;  // sent as Authorization: Bearer <token> when set
  bool idempotency_keys = false;
};

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags flags;
  if (argc < 2) return absl::InvalidArgumentError("no mode given");
  flags.mode = argv[1];
  if (flags.mode == "--help" || flags.mode == "-h") {
    return absl::CancelledError("help");
  }
  if (flags.mode != "open" && flags.mode != "load" && flags.mode != "read" &&
      flags.mode != "baseline") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown mode '", flags.mode, "'"));
  }
  for (int i = 2; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") return absl::CancelledError("help");
    if (arg.substr(0, 2) != "--") {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "'"));
    }
    arg.remove_prefix(2);
    std::string name, value;
    if (size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
    } else if (i + 1 < argc) {
      name = std::string(arg);
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--", arg, " needs a value"));
    }
    const absl::Status bad = absl::InvalidArgumentError(
        absl::StrCat("bad value '", value, "' for --", name));
    auto positive = [&value](int* out) {
      return absl::SimpleAtoi(value, out) && *out > 0;
    };
    if (name == "host") {
      flags.host = value;
    } else if (name == "port") {
      if (!positive(&flags.port) || flags.port > 65535) return bad;
    } else if (name == "connections") {
      if (!positive(&flags.connections)) return bad;
    } else if (name == "accounts") {
      if (!positive(&flags.accounts)) return bad;
    } else if (name == "prefix") {
      flags.prefix = value;
    } else if (name == "client-threads") {
      if (!positive(&flags.client_threads)) return bad;
    } else if (name == "server-pid") {
      if (!positive(&flags.server_pid)) return bad;
    } else if (name == "seconds") {
      if (!absl::SimpleAtod(value, &flags.seconds) || flags.seconds <= 0) {
        return bad;
      }
    } else if (name == "warmup") {
      if (!absl::SimpleAtod(value, &flags.warmup) || flags.warmup < 0) {
        return bad;
      }
    } else if (name == "database-url") {
      flags.database_url = value;
    } else if (name == "writers") {
      if (!positive(&flags.writers)) return bad;
    } else if (name == "token") {
      flags.token = value;
    } else if (name == "idempotency-keys") {
      if (value != "on" && value != "off") return bad;
      flags.idempotency_keys = value == "on";
    } else if (name == "get") {
      if (value.empty() || value[0] != '/') return bad;
      flags.get = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  if (flags.connections == 0)
    flags.connections = flags.mode == "open" ? 16 : 64;
  if (flags.mode == "read" && flags.get.empty()) {
    return absl::InvalidArgumentError("read needs --get");
  }
  if (flags.mode == "baseline" && flags.database_url.empty()) {
    return absl::InvalidArgumentError("baseline needs --database-url");
  }
  return flags;
}

std::chrono::nanoseconds SecondsToDuration(double seconds) {
  return std::chrono::nanoseconds(static_cast<int64_t>(seconds * 1e9));
}

// Runs `fn` and turns a libpqxx exception into a Status.
template <typename Fn>
absl::Status Guard(Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (...) {
    return StatusFromCurrentPgException();
  }
}

std::string LoadAverage() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "unknown";
  double a = 0, b = 0, c = 0;
  const int n = std::fscanf(f, "%lf %lf %lf", &a, &b, &c);
  std::fclose(f);
  return n == 3 ? absl::StrFormat("%.2f %.2f %.2f", a, b, c) : "unknown";
}

// The fields of /proc/<pid>/stat after the command name: [0] state,
// [1] ppid, [11] utime, [12] stime, [13] cutime, [14] cstime (in clock
// ticks). Empty when unreadable.
std::vector<int64_t> ProcStat(int pid) {
  std::FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/stat").c_str(), "r");
  if (f == nullptr) return {};
  char buffer[1024];
  const size_t n = std::fread(buffer, 1, sizeof(buffer) - 1, f);
  std::fclose(f);
  absl::string_view stat(buffer, n);
  // The command name may itself contain spaces and parentheses.
  const size_t paren = stat.rfind(')');
  if (paren == absl::string_view::npos) return {};
  std::vector<absl::string_view> fields =
      absl::StrSplit(stat.substr(paren + 1), ' ', absl::SkipEmpty());
  if (fields.size() < 15) return {};
  std::vector<int64_t> out(15, 0);
  for (size_t i = 1; i < out.size(); ++i) {
    if (!absl::SimpleAtoi(fields[i], &out[i])) return {};
  }
  return out;
}

// True when `pid` is a PostgreSQL process on this machine (a pid from a
// remote server's pg_backend_pid() names some unrelated local process).
bool IsLocalPostgres(int pid) {
  std::FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/comm").c_str(), "r");
  if (f == nullptr) return false;
  char comm[64] = {};
  const size_t n = std::fread(comm, 1, sizeof(comm) - 1, f);
  std::fclose(f);
  return absl::string_view(comm, n).substr(0, 8) == "postgres";
}

double Ticks(int64_t ticks) {
  return static_cast<double>(ticks) / sysconf(_SC_CLK_TCK);
}

// User plus system CPU seconds of a local process; < 0 when unreadable.
double ProcessCpuSeconds(int pid) {
  const std::vector<int64_t> s = ProcStat(pid);
  return s.empty() ? -1 : Ticks(s[11] + s[12]);
}

// CPU seconds used by a local PostgreSQL server since it started: the
// postmaster's own, that of its children that have exited (the postmaster
// reaps them, so they are in its cutime and cstime) and that of its live
// children. Summing only live backends would lose an autovacuum worker that
// exits inside the window. < 0 when unreadable.
double ServerCpuSeconds(int postmaster) {
  const std::vector<int64_t> pm = ProcStat(postmaster);
  if (pm.empty()) return -1;
  int64_t ticks = pm[11] + pm[12] + pm[13] + pm[14];
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return -1;
  while (const dirent* entry = readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    const std::vector<int64_t> s = ProcStat(pid);
    if (!s.empty() && s[1] == postmaster) ticks += s[11] + s[12];
  }
  closedir(proc);
  return Ticks(ticks);
}

// Nanoseconds the threads of `pid` have spent runnable but waiting for a
// CPU (the second field of /proc/<pid>/task/<tid>/schedstat), summed over
// its live threads; < 0 when unreadable.
int64_t RunQueueWaitNanos(int pid) {
  const std::string tasks = absl::StrCat("/proc/", pid, "/task");
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return -1;
  int64_t total = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::FILE* f = std::fopen(
        absl::StrCat(tasks, "/", entry->d_name, "/schedstat").c_str(), "r");
    if (f == nullptr) continue;
    long long run = 0, wait = 0;
    if (std::fscanf(f, "%lld %lld", &run, &wait) == 2) total += wait;
    std::fclose(f);
  }
  closedir(dir);
  return total;
}

// The same for a server: the postmaster and its live children.
int64_t ServerRunQueueWaitNanos(int postmaster) {
  int64_t total = RunQueueWaitNanos(postmaster);
  if (total < 0) return -1;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return -1;
  while (const dirent* entry = readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    const std::vector<int64_t> s = ProcStat(pid);
    if (!s.empty() && s[1] == postmaster) {
      total += std::max<int64_t>(0, RunQueueWaitNanos(pid));
    }
  }
  closedir(proc);
  return total;
}

double SelfCpuSeconds() {
  rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
         usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

// Latencies in nanoseconds; percentiles in milliseconds.
class Latencies {
 public:
  void Add(std::vector<int64_t> more) {
    ns_.insert(ns_.end(), more.begin(), more.end());
  }
  // `q` in [0, 1]; sorts on first use.
  double Percentile(double q) {
    if (ns_.empty()) return 0;
    if (!sorted_) std::sort(ns_.begin(), ns_.end());
    sorted_ = true;
    const size_t i = static_cast<size_t>(q * (ns_.size() - 1) + 0.5);
    return ns_[i] / 1e6;
  }

 private:
  std::vector<int64_t> ns_;
  bool sorted_ = false;
};

// ---------------------------------------------------------------------------
// Server-side sampling over the measured window.

struct ServerCounters {
  double server_cpu = -1;  // the whole server; < 0 unknown
  double bank_cpu = -1;    // --server-pid; < 0 unknown
  double client_cpu = 0;   // this process
  int64_t xacts = 0;       // commits + rollbacks in this database
  int64_t wal_bytes = 0;
  int64_t wal_syncs = 0;
  // Run-queue waits in nanoseconds; < 0 unknown.
  int64_t server_wait = -1;
  int64_t bank_wait = -1;
  int64_t client_wait = -1;
};

// Samples counters at the start and end of the window and pg_stat_activity
// in between, on a connection of its own (excluded from the activity view).
// Best effort: failures are reported and the run goes on.
class Sampler {
 public:
  Sampler(std::string url, int server_pid)
      : url_(std::move(url)), server_pid_(server_pid) {}

  // Blocks until `end`; call on a thread of its own.
  void Run(Clock::time_point start, Clock::time_point end) {
    absl::Status status = Guard([&] {
      pqxx::connection conn(url_);
      {
        pqxx::nontransaction tx(conn);
        const int backend = tx.exec1("SELECT pg_backend_pid()")[0].as<int>();
        const std::vector<int64_t> s = ProcStat(backend);
        if (IsLocalPostgres(backend) && !s.empty()) {
          postmaster_ = static_cast<int>(s[1]);
        }
      }
      std::this_thread::sleep_until(start);
      before_ = Sample(conn);
      while (Clock::now() + kWaitSampleInterval < end) {
        std::this_thread::sleep_for(kWaitSampleInterval);
        SampleActivity(conn);
      }
      std::this_thread::sleep_until(end);
      after_ = Sample(conn);
    });
    if (!status.ok()) {
      error_ = status.ToString();
      return;
    }
    ok_ = true;
  }

  // Per-operation figures for `ops` operations completed in the window.
  void Print(int64_t ops, double seconds) const {
    if (!ok_) {
      std::printf("server sampling failed: %s\n", error_.c_str());
      return;
    }
    if (ops <= 0) return;
    auto per_op_us = [ops](double cpu_seconds) {
      return cpu_seconds * 1e6 / static_cast<double>(ops);
    };
    const double client = after_.client_cpu - before_.client_cpu;
    std::string server = "n/a (not on this machine)";
    if (before_.server_cpu >= 0 && after_.server_cpu >= 0) {
      const double s = after_.server_cpu - before_.server_cpu;
      server =
          absl::StrFormat("%.0f us/op (%.2f cores)", per_op_us(s), s / seconds);
    }
    std::string bank = "n/a";
    if (before_.bank_cpu >= 0 && after_.bank_cpu >= 0) {
      const double b = after_.bank_cpu - before_.bank_cpu;
      bank =
          absl::StrFormat("%.0f us/op (%.2f cores)", per_op_us(b), b / seconds);
    }
    std::printf(
        "cpu in window: postgres %s, bank %s, load generator %.0f us/op "
        "(%.2f cores)\n",
        server.c_str(), bank.c_str(), per_op_us(client), client / seconds);
    std::printf(
        "postgres per op: %.2f transactions, %.0f WAL bytes; WAL syncs %.0f/s "
        "(%.1f ops per sync)\n",
        static_cast<double>(after_.xacts - before_.xacts) / ops,
        static_cast<double>(after_.wal_bytes - before_.wal_bytes) / ops,
        (after_.wal_syncs - before_.wal_syncs) / seconds,
        after_.wal_syncs > before_.wal_syncs
            ? static_cast<double>(ops) / (after_.wal_syncs - before_.wal_syncs)
            : 0.0);
    auto wait_us = [&](int64_t ServerCounters::*field) -> std::string {
      const int64_t delta = after_.*field - before_.*field;
      // Negative when threads that waited exited inside the window.
      if (before_.*field < 0 || after_.*field < 0 || delta < 0) return "n/a";
      return absl::StrFormat("%.0f us/op", static_cast<double>(delta) / 1e3 /
                                               static_cast<double>(ops));
    };
    std::printf(
        "runnable but waiting for a CPU, summed over threads: postgres %s, "
        "bank %s, load generator %s\n",
        wait_us(&ServerCounters::server_wait).c_str(),
        wait_us(&ServerCounters::bank_wait).c_str(),
        wait_us(&ServerCounters::client_wait).c_str());
    int64_t total = 0;
    for (const auto& [name, count] : activity_) total += count;
    if (total == 0) return;
    std::vector<std::pair<int64_t, std::string>> sorted;
    for (const auto& [name, count] : activity_)
      sorted.emplace_back(count, name);
    std::sort(sorted.rbegin(), sorted.rend());
    std::string line;
    for (const auto& [count, name] : sorted) {
      absl::StrAppendFormat(&line, "%s%s %.0f%%", line.empty() ? "" : ", ",
                            name, 100.0 * count / total);
    }
    std::printf(
        "client backends (%d samples of pg_stat_activity, avg %.1f "
        "backends): %s\n",
        activity_samples_,
        activity_samples_ > 0 ? static_cast<double>(total) / activity_samples_
                              : 0.0,
        line.c_str());
  }

 private:
  ServerCounters Sample(pqxx::connection& conn) {
    ServerCounters c;
    c.client_cpu = SelfCpuSeconds();
    if (server_pid_ > 0) c.bank_cpu = ProcessCpuSeconds(server_pid_);
    if (postmaster_ > 0) {
      c.server_cpu = ServerCpuSeconds(postmaster_);
      c.server_wait = ServerRunQueueWaitNanos(postmaster_);
    }
    if (server_pid_ > 0) c.bank_wait = RunQueueWaitNanos(server_pid_);
    c.client_wait = RunQueueWaitNanos(getpid());
    pqxx::nontransaction tx(conn);
    pqxx::row r = tx.exec1(
        "SELECT xact_commit + xact_rollback,"
        " (SELECT wal_bytes::int8 FROM pg_stat_wal),"
        " (SELECT wal_sync FROM pg_stat_wal)"
        " FROM pg_stat_database WHERE datname = current_database()");
    c.xacts = r[0].as<int64_t>();
    c.wal_bytes = r[1].as<int64_t>();
    c.wal_syncs = r[2].as<int64_t>();
    return c;
  }

  // Each client backend as "state" or "active: <wait event>" ("active: CPU"
  // when it waits for nothing).
  void SampleActivity(pqxx::connection& conn) {
    pqxx::nontransaction tx(conn);
    for (const pqxx::row& r :
         tx.exec("SELECT CASE WHEN state = 'active' THEN 'active: ' ||"
                 " coalesce(wait_event_type || '/' || wait_event, 'CPU')"
                 " ELSE coalesce(state, '?') END"
                 " FROM pg_stat_activity WHERE backend_type = 'client backend'"
                 " AND pid <> pg_backend_pid()")) {
      ++activity_[r[0].c_str()];
    }
    ++activity_samples_;
  }

  const std::string url_;
  const int server_pid_;
  int postmaster_ = 0;  // 0 when the server is not on this machine
  ServerCounters before_, after_;
  std::map<std::string, int64_t> activity_;
  int activity_samples_ = 0;
  bool ok_ = false;
  std::string error_;
};

// ---------------------------------------------------------------------------
// HTTP client.

// What the connections send, and which statuses count as success.
class Workload {
 public:
  virtual ~Workload() = default;
  // Fills the next request's target and body; false when this connection
  // should stop. Called concurrently from several connections.
  virtual bool Next(std::mt19937_64& rng, std::string* target,
                    std::string* body) = 0;
  virtual bool Success(int status) const = 0;
  // GET without a body, else POST with a JSON body.
  virtual bool get() const { return false; }
};

class DepositWorkload : public Workload {
 public:
  DepositWorkload(const Flags& flags, Clock::time_point end) : end_(end) {
    targets_.reserve(flags.accounts);
    for (int i = 0; i < flags.accounts; ++i) {
      targets_.push_back(
          absl::StrCat("/accounts/", flags.prefix, i, "/deposit"));
    }
  }
  bool Next(std::mt19937_64& rng, std::string* target,
            std::string* body) override {
    if (Clock::now() >= end_) return false;
    std::uniform_int_distribution<size_t> pick(0, targets_.size() - 1);
    *target = targets_[pick(rng)];
    *body = R"({"amount":1})";
    return true;
  }
  bool Success(int status) const override { return status == 200; }

 private:
  const Clock::time_point end_;
  std::vector<std::string> targets_;
};

class ReadWorkload : public Workload {
 public:
  ReadWorkload(const Flags& flags, Clock::time_point end) : end_(end) {
    const size_t id = flags.get.find("{id}");
    if (id == std::string::npos) {
      targets_.push_back(flags.get);
      return;
    }
    targets_.reserve(flags.accounts);
    for (int i = 0; i < flags.accounts; ++i) {
      targets_.push_back(absl::StrCat(flags.get.substr(0, id), flags.prefix, i,
                                      flags.get.substr(id + 4)));
    }
  }
  bool Next(std::mt19937_64& rng, std::string* target,
            std::string* body) override {
    if (Clock::now() >= end_) return false;
    std::uniform_int_distribution<size_t> pick(0, targets_.size() - 1);
    *target = targets_[pick(rng)];
    body->clear();
    return true;
  }
  bool Success(int status) const override { return status == 200; }
  bool get() const override { return true; }

 private:
  const Clock::time_point end_;
  std::vector<std::string> targets_;
};

class OpenWorkload : public Workload {
 public:
  explicit OpenWorkload(const Flags& flags)
      : accounts_(flags.accounts), prefix_(flags.prefix) {}
  bool Next(std::mt19937_64&, std::string* target, std::string* body) override {
    const int i = next_.fetch_add(1);
    if (i >= accounts_) return false;
    *target = "/accounts";
    *body = absl::StrCat(R"({"owner":"bench","currency":"EUR","account_id":")",
                         prefix_, i, R"("})");
    return true;
  }
  // 409 account_exists: opened by an earlier run.
  bool Success(int status) const override {
    return status == 201 || status == 409;
  }

 private:
  const int accounts_;
  const std::string prefix_;
  std::atomic<int> next_{0};
};

// One connection's results; only its own handlers touch it.
struct ConnectionStats {
  int64_t completed = 0;   // responses, warm-up included
  int64_t ok = 0;          // successes that completed inside the window
  int64_t body_bytes = 0;  // their response bodies
  std::vector<int64_t> latencies_ns;  // of those
  // Failures over the whole run by status ("404") or I/O error, and the
  // first response body seen for each.
  std::map<std::string, int64_t> failures;
  std::map<std::string, std::string> failure_samples;
  bool gave_up = false;
};

// One keep-alive connection with one request in flight at a time: connect,
// then write → read → record, until the workload says stop. Reconnects after
// an error or a response without keep-alive.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(net::io_context& ioc, tcp::endpoint endpoint, std::string host,
             std::string authorization, std::string key_prefix,
             Workload* workload, Clock::time_point window_start,
             Clock::time_point window_end, uint64_t seed,
             ConnectionStats* stats)
      : stream_(net::make_strand(ioc)),
        timer_(stream_.get_executor()),
        endpoint_(std::move(endpoint)),
        host_(std::move(host)),
        authorization_(std::move(authorization)),
        key_prefix_(std::move(key_prefix)),
        workload_(workload),
        window_start_(window_start),
        window_end_(window_end),
        rng_(seed),
        stats_(stats) {}

  void Start() { DoConnect(); }

 private:
  void DoConnect() {
    stream_.expires_after(kIoTimeout);
    stream_.async_connect(
        endpoint_,
        beast::bind_front_handler(&Connection::OnConnect, shared_from_this()));
  }

  void OnConnect(beast::error_code ec) {
    if (ec) return Fail("connect", ec);
    stream_.socket().set_option(tcp::no_delay(true), ec);
    DoWrite();
  }

  void DoWrite() {
    std::string target, body;
    if (!workload_->Next(rng_, &target, &body)) return Close();
    request_ = {};
    request_.method(workload_->get() ? bhttp::verb::get : bhttp::verb::post);
    request_.target(target);
    request_.version(11);
    request_.set(bhttp::field::host, host_);
    if (!authorization_.empty()) {
      request_.set(bhttp::field::authorization, authorization_);
    }
    if (!workload_->get()) {
      request_.set(bhttp::field::content_type, "application/json");
    }
    if (!key_prefix_.empty()) {
      request_.set("Idempotency-Key", absl::StrCat(key_prefix_, ++requests_));
    }
    request_.keep_alive(true);
    request_.body() = std::move(body);
    request_.prepare_payload();
    sent_at_ = Clock::now();
    stream_.expires_after(kIoTimeout);
    bhttp::async_write(
        stream_, request_,
        beast::bind_front_handler(&Connection::OnWrite, shared_from_this()));
  }

  void OnWrite(beast::error_code ec, size_t) {
    if (ec) return Fail("write", ec);
    response_ = {};
    stream_.expires_after(kIoTimeout);
    bhttp::async_read(
        stream_, buffer_, response_,
        beast::bind_front_handler(&Connection::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code ec, size_t) {
    if (ec) return Fail("read", ec);
    const Clock::time_point now = Clock::now();
    consecutive_errors_ = 0;
    ++stats_->completed;
    const int status = response_.result_int();
    if (workload_->Success(status)) {
      if (now >= window_start_ && now <= window_end_) {
        ++stats_->ok;
        stats_->body_bytes += static_cast<int64_t>(response_.body().size());
        stats_->latencies_ns.push_back((now - sent_at_).count());
      }
    } else {
      const std::string key = absl::StrCat(status);
      if (stats_->failures[key]++ == 0) {
        stats_->failure_samples[key] = response_.body().substr(0, 300);
      }
    }
    if (!response_.keep_alive()) {
      Shutdown();
      return DoConnect();
    }
    DoWrite();
  }

  void Fail(absl::string_view what, beast::error_code ec) {
    const std::string key = absl::StrCat(what, ": ", ec.message());
    ++stats_->failures[key];
    Shutdown();
    if (++consecutive_errors_ >= kMaxConsecutiveErrors) {
      stats_->gave_up = true;
      return;
    }
    buffer_.clear();
    timer_.expires_after(kReconnectDelay);
    timer_.async_wait(
        [self = shared_from_this()](beast::error_code) { self->DoConnect(); });
  }

  void Close() { Shutdown(); }

  void Shutdown() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    buffer_.clear();
  }

  beast::tcp_stream stream_;
  net::steady_timer timer_;
  const tcp::endpoint endpoint_;
  const std::string host_;
  const std::string authorization_;
  const std::string key_prefix_;  // empty: no Idempotency-Key
  uint64_t requests_ = 0;
  Workload* const workload_;
  const Clock::time_point window_start_;
  const Clock::time_point window_end_;
  std::mt19937_64 rng_;
  ConnectionStats* const stats_;
  beast::flat_buffer buffer_;
  bhttp::request<bhttp::string_body> request_;
  bhttp::response<bhttp::string_body> response_;
  Clock::time_point sent_at_;
  int consecutive_errors_ = 0;
};

struct ClientResult {
  int64_t completed = 0;
  int64_t ok = 0;
  int64_t body_bytes = 0;
  int64_t failed = 0;
  int gave_up = 0;
  Latencies latencies;
  std::map<std::string, int64_t> failures;
  std::map<std::string, std::string> failure_samples;
};

// Runs `connections` connections of `workload` to completion.
absl::StatusOr<ClientResult> RunClient(const Flags& flags, Workload* workload,
                                       Clock::time_point window_start,
                                       Clock::time_point window_end) {
  net::io_context ioc(flags.client_threads);
  boost::system::error_code ec;
  const net::ip::address address = net::ip::make_address(flags.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--host must be a numeric address: ", ec.message()));
  }
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(flags.port));
  const std::string host = absl::StrCat(flags.host, ":", flags.port);
  std::vector<ConnectionStats> stats(flags.connections);
  std::random_device seed;
  for (int c = 0; c < flags.connections; ++c) {
    std::make_shared<Connection>(
        ioc, endpoint, host,
        flags.token.empty() ? "" : absl::StrCat("Bearer ", flags.token),
        flags.idempotency_keys
            ? absl::StrCat(
                  "load-",
                  std::chrono::system_clock::now().time_since_epoch().count(),
                  "-", c, "-")
            : "",
        workload, window_start, window_end,
        (static_cast<uint64_t>(seed()) << 32) | c, &stats[c])
        ->Start();
  }
  std::vector<std::thread> threads;
  for (int t = 1; t < flags.client_threads; ++t) {
    threads.emplace_back([&ioc] { ioc.run(); });
  }
  ioc.run();
  for (std::thread& t : threads) t.join();

  ClientResult result;
  for (ConnectionStats& s : stats) {
    result.completed += s.completed;
    result.ok += s.ok;
    result.body_bytes += s.body_bytes;
    result.gave_up += s.gave_up ? 1 : 0;
    result.latencies.Add(std::move(s.latencies_ns));
    for (const auto& [key, count] : s.failures) {
      result.failures[key] += count;
      result.failed += count;
    }
    for (const auto& [key, body] : s.failure_samples) {
      result.failure_samples.emplace(key, body);
    }
  }
  return result;
}

void PrintFailures(const ClientResult& r) {
  if (r.failures.empty()) return;
  std::printf("failures (whole run, warm-up included):\n");
  for (const auto& [key, count] : r.failures) {
    auto sample = r.failure_samples.find(key);
    std::printf(
        "  %-40s %8lld%s%s\n", key.c_str(), static_cast<long long>(count),
        sample == r.failure_samples.end() ? "" : "  e.g. ",
        sample == r.failure_samples.end() ? "" : sample->second.c_str());
  }
  if (r.gave_up > 0) {
    std::printf("  %d connection(s) gave up after %d errors in a row\n",
                r.gave_up, kMaxConsecutiveErrors);
  }
}

int OpenAccounts(const Flags& flags) {
  OpenWorkload workload(flags);
  const Clock::time_point start = Clock::now();
  absl::StatusOr<ClientResult> r =
      RunClient(flags, &workload, start, Clock::time_point::max());
  if (!r.ok()) {
    std::fprintf(stderr, "http_load: %s\n", r.status().ToString().c_str());
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("http_load open: %lld of %d accounts open (%s%d..%d) in %.1f s\n",
              static_cast<long long>(r->ok), flags.accounts,
              flags.prefix.c_str(), 0, flags.accounts - 1, seconds);
  PrintFailures(*r);
  return r->ok == flags.accounts ? 0 : 1;
}

// `load` and `read`: a closed loop of requests for --seconds.
int Load(const Flags& flags) {
  const Clock::time_point start = Clock::now();
  const Clock::time_point window_start =
      start + SecondsToDuration(flags.warmup);
  const Clock::time_point window_end =
      window_start + SecondsToDuration(flags.seconds);
  std::unique_ptr<Workload> owned;
  if (flags.mode == "read") {
    owned = std::make_unique<ReadWorkload>(flags, window_end);
  } else {
    owned = std::make_unique<DepositWorkload>(flags, window_end);
  }
  Workload& workload = *owned;
  const std::string what = flags.mode == "read"
                               ? absl::StrCat("GET ", flags.get)
                               : std::string("POST /accounts/{id}/deposit");
  std::unique_ptr<Sampler> sampler;
  std::thread sampler_thread;
  if (!flags.database_url.empty()) {
    sampler = std::make_unique<Sampler>(flags.database_url, flags.server_pid);
    sampler_thread =
        std::thread([&] { sampler->Run(window_start, window_end); });
  }
  std::printf(
      "http_load %s: %s to %s:%d, %d keep-alive "
      "connections, %d accounts, %d client thread(s), %.1f s after %.1f s "
      "warm-up; %u CPUs, load average %s\n",
      flags.mode.c_str(), what.c_str(), flags.host.c_str(), flags.port,
      flags.connections, flags.accounts, flags.client_threads, flags.seconds,
      flags.warmup, std::thread::hardware_concurrency(), LoadAverage().c_str());
  std::fflush(stdout);
  absl::StatusOr<ClientResult> r =
      RunClient(flags, &workload, window_start, window_end);
  if (sampler_thread.joinable()) sampler_thread.join();
  if (!r.ok()) {
    std::fprintf(stderr, "http_load: %s\n", r.status().ToString().c_str());
    return 1;
  }
  const double rps = r->ok / flags.seconds;
  Latencies& l = r->latencies;
  std::printf(
      "%s: %lld ok in %.1f s = %.0f requests/s; %lld failed; latency "
      "ms p50 %.2f p90 %.2f p99 %.2f max %.2f\n",
      flags.mode == "read" ? "reads" : "deposits",
      static_cast<long long>(r->ok), flags.seconds, rps,
      static_cast<long long>(r->failed), l.Percentile(0.5), l.Percentile(0.9),
      l.Percentile(0.99), l.Percentile(1.0));
  if (r->ok > 0) {
    std::printf("mean response body: %.1f bytes\n",
                static_cast<double>(r->body_bytes) / r->ok);
  }
  PrintFailures(*r);
  if (sampler) sampler->Print(r->ok, flags.seconds);
  std::printf("load average at the end: %s\n", LoadAverage().c_str());
  std::printf(
      "http_load: result mode=%s ops_per_s=%.1f ok=%lld failed=%lld "
      "completed=%lld p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
      flags.mode.c_str(), rps, static_cast<long long>(r->ok),
      static_cast<long long>(r->failed), static_cast<long long>(r->completed),
      l.Percentile(0.5), l.Percentile(0.9), l.Percentile(0.99),
      l.Percentile(1.0));
  return r->ok > 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------
// The raw INSERT baseline.

constexpr char kRawTable[] = "raw_events";

std::string InsertSql(absl::string_view schema) {
  return absl::StrCat(
      "INSERT INTO ", schema, ".", kRawTable,
      " (stream_id, stream_version, event_id, event_type, schema_version,"
      " data, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)");
}

// One writer: its own connection, one autocommitted prepared single-row
// INSERT per operation, round-robin over streams of its own with rising
// versions (the (stream_id, stream_version) index sees an append pattern),
// with payloads shaped like the bank's deposits.
class RawInsertWriter {
 public:
  RawInsertWriter(const std::string& url, absl::string_view schema, int writer)
      : conn_(url) {
    conn_.prepare("raw_insert", InsertSql(schema));
    for (int k = 0; k < kBaselineStreamsPerWriter; ++k) {
      streams_.push_back(absl::StrCat("account-raw.", writer, ".", k));
    }
    versions_.assign(kBaselineStreamsPerWriter, 0);
  }

  // Throws what libpqxx throws.
  void Write() {
    next_ = (next_ + 1) % kBaselineStreamsPerWriter;
    ++count_;
    pqxx::nontransaction tx(conn_);
    tx.exec_prepared(
        "raw_insert", streams_[next_], versions_[next_] + 1, NewUuid(),
        "MoneyDeposited", 1,
        absl::StrCat(R"({"amount":)", 100 + (count_ * 7919) % 100000,
                     R"(,"currency":"EUR"})"),
        absl::StrCat(R"({"command_id":")", NewUuid(), R"(","correlation_id":")",
                     NewUuid(), R"(","causation_id":")", NewUuid(), R"("})"));
    ++versions_[next_];
  }

 private:
  pqxx::connection conn_;
  std::vector<std::string> streams_;
  std::vector<int64_t> versions_;
  int next_ = 0;
  int64_t count_ = 0;
};

absl::Status CreateBaselineSchema(const std::string& url,
                                  const std::string& schema) {
  RETURN_IF_ERROR(Guard([&] {
    pqxx::connection conn(url);
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat("CREATE SCHEMA ", schema));
  }));
  PgPoolOptions options;
  options.conninfo = url;
  options.max_connections = 2;
  ASSIGN_OR_RETURN(std::unique_ptr<PgPool> pool,
                   PgPool::Create(std::move(options)));
  RETURN_IF_ERROR(eventstore::PostgresEventStore::Migrate(*pool, schema));
  return Guard([&] {
    pqxx::connection conn(url);
    pqxx::nontransaction tx(conn);
    // The event store's table with every column, default, constraint and
    // index, without its triggers; as in eventstore_bench.
    tx.exec(absl::StrCat("CREATE TABLE ", schema, ".", kRawTable, " (LIKE ",
                         schema, ".events INCLUDING ALL)"));
    // Every run starts without checkpoint work pending (best effort: needs
    // superuser or pg_checkpoint).
    try {
      tx.exec("CHECKPOINT");
    } catch (const pqxx::sql_error&) {
    }
  });
}

void DropSchema(const std::string& url, const std::string& schema) {
  absl::Status dropped = Guard([&] {
    pqxx::connection conn(url);
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat("DROP SCHEMA ", schema, " CASCADE"));
  });
  if (!dropped.ok()) {
    std::fprintf(stderr, "http_load: could not drop schema %s: %s\n",
                 schema.c_str(), dropped.ToString().c_str());
  }
}

int Baseline(const Flags& flags) {
  const std::string schema =
      absl::StrCat("http_load_baseline_", NewUuid().substr(24));
  if (absl::Status s = CreateBaselineSchema(flags.database_url, schema);
      !s.ok()) {
    std::fprintf(stderr, "http_load: baseline setup: %s\n",
                 s.ToString().c_str());
    DropSchema(flags.database_url, schema);
    return 1;
  }
  std::vector<std::unique_ptr<RawInsertWriter>> writers;
  absl::Status connected = Guard([&] {
    for (int w = 0; w < flags.writers; ++w) {
      writers.push_back(
          std::make_unique<RawInsertWriter>(flags.database_url, schema, w));
    }
  });
  if (!connected.ok()) {
    std::fprintf(stderr, "http_load: baseline connect: %s\n",
                 connected.ToString().c_str());
    writers.clear();
    DropSchema(flags.database_url, schema);
    return 1;
  }
  std::printf(
      "http_load baseline: %d writers, one autocommitted single-row INSERT "
      "per transaction into %s.%s (LIKE events INCLUDING ALL), %.1f s after "
      "%.1f s warm-up; %u CPUs, load average %s\n",
      flags.writers, schema.c_str(), kRawTable, flags.seconds, flags.warmup,
      std::thread::hardware_concurrency(), LoadAverage().c_str());
  std::fflush(stdout);

  const Clock::time_point window_start =
      Clock::now() + SecondsToDuration(flags.warmup);
  const Clock::time_point window_end =
      window_start + SecondsToDuration(flags.seconds);
  Sampler sampler(flags.database_url, 0);
  // Writers stay alive until the last sample: their threads' scheduler
  // statistics vanish with them.
  absl::Notification sampled;
  std::thread sampler_thread([&] {
    sampler.Run(window_start, window_end);
    sampled.Notify();
  });
  absl::Mutex mu;
  absl::Status first_error;
  std::vector<int64_t> ok(flags.writers, 0);
  std::vector<std::vector<int64_t>> latencies(flags.writers);
  std::vector<std::thread> threads;
  for (int w = 0; w < flags.writers; ++w) {
    threads.emplace_back([&, w] {
      while (true) {
        const Clock::time_point t0 = Clock::now();
        if (t0 >= window_end) break;
        absl::Status s = Guard([&] { writers[w]->Write(); });
        const Clock::time_point t1 = Clock::now();
        if (!s.ok()) {
          absl::MutexLock lock(&mu);
          if (first_error.ok()) first_error = s;
          break;
        }
        if (t1 >= window_start && t1 <= window_end) {
          ++ok[w];
          latencies[w].push_back((t1 - t0).count());
        }
      }
      sampled.WaitForNotification();
    });
  }
  for (std::thread& t : threads) t.join();
  sampler_thread.join();
  writers.clear();
  DropSchema(flags.database_url, schema);
  if (!first_error.ok()) {
    std::fprintf(stderr, "http_load: baseline insert failed: %s\n",
                 first_error.ToString().c_str());
    return 1;
  }
  int64_t total = 0;
  Latencies l;
  for (int w = 0; w < flags.writers; ++w) {
    total += ok[w];
    l.Add(std::move(latencies[w]));
  }
  const double tps = total / flags.seconds;
  std::printf(
      "raw INSERT: %lld transactions in %.1f s = %.0f tx/s; latency ms p50 "
      "%.2f p90 %.2f p99 %.2f max %.2f\n",
      static_cast<long long>(total), flags.seconds, tps, l.Percentile(0.5),
      l.Percentile(0.9), l.Percentile(0.99), l.Percentile(1.0));
  sampler.Print(total, flags.seconds);
  std::printf("load average at the end: %s\n", LoadAverage().c_str());
  std::printf(
      "http_load: result mode=baseline ops_per_s=%.1f ok=%lld failed=0 "
      "p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
      tps, static_cast<long long>(total), l.Percentile(0.5), l.Percentile(0.9),
      l.Percentile(0.99), l.Percentile(1.0));
  return 0;
}

int Main(int argc, char** argv) {
  absl::StatusOr<Flags> flags = ParseFlags(argc, argv);
  if (!flags.ok()) {
    if (absl::IsCancelled(flags.status())) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "http_load: %s\n%s",
                 std::string(flags.status().message()).c_str(), kUsage);
    return 2;
  }
  if (flags->mode == "open") return OpenAccounts(*flags);
  if (flags->mode == "load" || flags->mode == "read") return Load(*flags);
  return Baseline(*flags);
}

}  // namespace
}  // namespace cqrs::bench

int main(int argc, char** argv) { return cqrs::bench::Main(argc, argv); }

// Throughput and latency of PostgresEventStore next to raw libpqxx inserts
// into an identical table, measured in one run on one database.
//
//   scripts/bench                                  # throwaway cluster
//   eventstore_bench --database-url="$URL" --quick # smoke run
//
// A benchmark, not a test: it prints figures and the targets beside them and
// never fails because of speed. It exits 1 when the store misbehaves (an
// error, a wrong version, a lost, skipped or misordered event; the figures
// still print), 2 for bad flags.
//
// Everything lives in a fresh schema bench_<random>, dropped at the end.
// Writer threads each own a connection (raw inserts) or share the store
// (which is thread-safe and has a pool of its own).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include <pqxx/pqxx>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "eventstore/event_store.h"
#include "eventstore/postgres_event_store.h"
#include "framework/pg_pool.h"
#include "framework/status_macros.h"
#include "framework/uuid.h"

namespace cqrs::bench {
namespace {

using eventstore::AppendResult;
using eventstore::EventStore;
using eventstore::ExpectedVersion;
using eventstore::NewEvent;
using eventstore::Position;
using eventstore::PostgresEventStore;
using eventstore::ReadAllResult;
using Clock = std::chrono::steady_clock;

// The store's table, as created by PostgresEventStore::Migrate().
constexpr char kEventsTable[] = "events";
// Its raw twin, written by the baseline writers.
constexpr char kRawTable[] = "raw_events";
constexpr char kEventType[] = "MoneyDeposited";
constexpr int kStreamsPerWriter = 100;
constexpr int kBatchSize = 100;
constexpr int kFillBatchSize = 1000;
constexpr int kFillThreads = 4;
// Empty pages tolerated (10 ms apart) before a read pass has every event.
constexpr int kMaxReadStalls = 300;
// A read pass that takes longer stops, is reported, and is not repeated.
constexpr int kMaxReadPassSeconds = 60;

// Targets from the design brief and issue 19 (group commit should make many
// appends cost less than as many one-row commits); printed next to the
// figures.
constexpr double kSingleTargetRatio = 1.2;
constexpr double kBatchTargetRatio = 0.8;
constexpr double kReadTargetEventsPerSecond = 300000;

struct Flags {
  std::string database_url;
  absl::Duration seconds = absl::Seconds(5);
  absl::Duration warmup = absl::Seconds(1);
  int64_t read_events = 1000000;
  int read_page = 1000;
  // Each phase runs baseline and store this many times each, alternating
  // (A B, then B A, ...), so that drift and noise hit both sides alike.
  int rounds = 2;
  bool quick = false;
  // Leaves the schema in place for a look at the data afterwards.
  bool keep_schema = false;
  // Which phases run (--phases): all by default.
  bool run_single = true;
  bool run_batch = true;
  bool run_read = true;
  // The store's notification mode; the default is production's.
  eventstore::PostgresEventStoreOptions::Notify notify =
      eventstore::PostgresEventStoreOptions::Notify::kAfterCommit;
  // The after-commit notifier's rate limit (--notify-interval-ms).
  absl::Duration notify_interval =
      eventstore::PostgresEventStoreOptions().notify_min_interval;
  // The store's group commit (--group-in-flight; 0 turns it off).
  int group_in_flight =
      eventstore::PostgresEventStoreOptions().group_commit_in_flight;
  // Appends per group statement (--group-max-events).
  int group_max_events =
      eventstore::PostgresEventStoreOptions().group_commit_max_events;
};

constexpr char kUsage[] =
    R"(usage: eventstore_bench [flags]
  --database-url=URL   libpq connection string or URL (default: $DATABASE_URL)
  --seconds=S          measured duration of each timed run (default 5)
  --warmup=S           unmeasured warm-up before each timed run (default 1)
  --rounds=N           alternating baseline/store runs per phase (default 2)
  --read-events=N      events in the store before the read phase (default
                       1000000)
  --read-page=N        ReadAll page size (default 1000)
  --notify=MODE        the store's notifications: after-commit (default),
                       in-transaction or none
  --notify-interval-ms=N  at most one after-commit notification per N ms
                       (default: the store's default)
  --group-in-flight=N  the store's group_commit_in_flight (0: no grouping;
                       default: the store's default)
  --group-max-events=N the store's group_commit_max_events (default: the
                       store's default)
  --phases=LIST        comma-separated subset of single,batch,read (default:
                       all)
  --keep-schema        do not drop the bench_<random> schema at the end
  --quick              smoke run: 1 s runs, 0.2 s warm-up, 20000 read events
                       (explicit flags still win)
)";

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags flags;
  if (const char* url = std::getenv("DATABASE_URL"); url != nullptr) {
    flags.database_url = url;
  }
  std::vector<std::pair<std::string, std::string>> given;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--quick") {
      flags.quick = true;
      continue;
    }
    if (arg == "--keep-schema") {
      flags.keep_schema = true;
      continue;
    }
    if (arg == "--help" || arg == "-h") {
      return absl::CancelledError("help");
    }
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
    given.emplace_back(std::move(name), std::move(value));
  }
  if (flags.quick) {
    flags.seconds = absl::Seconds(1);
    flags.warmup = absl::Milliseconds(200);
    flags.read_events = 20000;
  }
  for (const auto& [name, value] : given) {
    auto bad = [&name = name, &value = value] {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value '", value, "' for --", name));
    };
    double seconds = 0;
    int64_t number = 0;
    if (name == "database-url") {
      flags.database_url = value;
    } else if (name == "seconds" || name == "warmup") {
      if (!absl::SimpleAtod(value, &seconds) || seconds < 0 ||
          (name == "seconds" && seconds <= 0)) {
        return bad();
      }
      (name == "seconds" ? flags.seconds : flags.warmup) =
          absl::Seconds(seconds);
    } else if (name == "phases") {
      flags.run_single = flags.run_batch = flags.run_read = false;
      for (absl::string_view phase : absl::StrSplit(value, ',')) {
        if (phase == "single") {
          flags.run_single = true;
        } else if (phase == "batch") {
          flags.run_batch = true;
        } else if (phase == "read") {
          flags.run_read = true;
        } else {
          return bad();
        }
      }
    } else if (name == "group-in-flight") {
      if (!absl::SimpleAtoi(value, &number) || number < 0 || number > 1000) {
        return bad();
      }
      flags.group_in_flight = static_cast<int>(number);
    } else if (name == "group-max-events") {
      if (!absl::SimpleAtoi(value, &number) || number < 1 || number > 10000) {
        return bad();
      }
      flags.group_max_events = static_cast<int>(number);
    } else if (name == "notify-interval-ms") {
      if (!absl::SimpleAtoi(value, &number) || number < 0) return bad();
      flags.notify_interval = absl::Milliseconds(number);
    } else if (name == "notify") {
      using Notify = eventstore::PostgresEventStoreOptions::Notify;
      if (value == "after-commit") {
        flags.notify = Notify::kAfterCommit;
      } else if (value == "in-transaction") {
        flags.notify = Notify::kInTransaction;
      } else if (value == "none") {
        flags.notify = Notify::kNone;
      } else {
        return bad();
      }
    } else if (name == "rounds") {
      if (!absl::SimpleAtoi(value, &number) || number < 1) return bad();
      flags.rounds = static_cast<int>(number);
    } else if (name == "read-events") {
      if (!absl::SimpleAtoi(value, &number) || number < 1) return bad();
      flags.read_events = number;
    } else if (name == "read-page") {
      if (!absl::SimpleAtoi(value, &number) || number < 1 ||
          number > eventstore::kMaxReadLimit) {
        return bad();
      }
      flags.read_page = static_cast<int>(number);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  if (flags.database_url.empty()) {
    return absl::InvalidArgumentError(
        "no database: pass --database-url or set DATABASE_URL");
  }
  return flags;
}

const char* NotifyName(eventstore::PostgresEventStoreOptions::Notify notify) {
  switch (notify) {
    case eventstore::PostgresEventStoreOptions::Notify::kAfterCommit:
      return "after-commit";
    case eventstore::PostgresEventStoreOptions::Notify::kInTransaction:
      return "in-transaction";
    case eventstore::PostgresEventStoreOptions::Notify::kNone:
      return "none";
  }
  return "?";
}

// The 1, 5 and 15 minute load averages: other work on the machine skews
// every figure, so the output says how busy it was.
std::string LoadAverage() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return "unknown";
  double a = 0, b = 0, c = 0;
  const int n = std::fscanf(f, "%lf %lf %lf", &a, &b, &c);
  std::fclose(f);
  return n == 3 ? absl::StrFormat("%.2f %.2f %.2f", a, b, c) : "unknown";
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

// Payloads shaped like the example bank's: a small data object and the
// conventional correlation/causation metadata.
std::string EventData(int64_t n) {
  return absl::StrCat(R"({"amount":)", 100 + (n * 7919) % 100000,
                      R"(,"currency":"EUR"})");
}

std::string EventMetadata() {
  return absl::StrCat(R"({"correlation_id":")", NewUuid(),
                      R"(","causation_id":")", NewUuid(), R"("})");
}

// The streams one writer appends to, round-robin, with their versions. Both
// sides use the same ids so that the (stream_id, stream_version) index sees
// the same key pattern.
class StreamCycle {
 public:
  StreamCycle(absl::string_view tag, int writer) {
    ids_.reserve(kStreamsPerWriter);
    for (int k = 0; k < kStreamsPerWriter; ++k) {
      ids_.push_back(absl::StrCat("account-", tag, ".", writer, ".", k));
    }
    versions_.assign(kStreamsPerWriter, 0);
  }
  // The next stream; `version()` is its current version.
  void Advance() { next_ = (next_ + 1) % kStreamsPerWriter; }
  const std::string& id() const { return ids_[next_]; }
  int64_t& version() { return versions_[next_]; }

 private:
  std::vector<std::string> ids_;
  std::vector<int64_t> versions_;
  int next_ = 0;
};

// One writer thread's work; each Write() is one timed operation.
class Writer {
 public:
  virtual ~Writer() = default;
  virtual absl::Status Write() = 0;
};

std::string InsertSql(absl::string_view schema, int rows) {
  std::string sql = absl::StrCat(
      "INSERT INTO ", schema, ".", kRawTable,
      " (stream_id, stream_version, event_id, event_type, schema_version,"
      " data, metadata) VALUES ");
  for (int r = 0; r < rows; ++r) {
    const int p = r * 7;
    absl::StrAppend(&sql, r == 0 ? "" : ",", "($", p + 1, ",$", p + 2, ",$",
                    p + 3, ",$", p + 4, ",$", p + 5, ",$", p + 6, ",$", p + 7,
                    ")");
  }
  return sql;
}

// The store's ReadAll query as the migration's indexes intend it to run:
// ordered by the table's columns, (transaction_id, global_position), which
// the commit-order index delivers without sorting.
std::string RawReadSql(absl::string_view schema) {
  return absl::StrCat(
      "SELECT e.global_position, e.transaction_id::text, e.stream_id,"
      " e.stream_version, e.event_id::text, e.event_type, e.schema_version,"
      " e.data::text, e.metadata::text,"
      " (date_part('epoch', e.recorded_at) * 1000000)::int8"
      " FROM ",
      schema, ".", kEventsTable,
      " e WHERE (e.transaction_id, e.global_position) > ($1::xid8, $2::int8)"
      " AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
      " ORDER BY e.transaction_id, e.global_position LIMIT $3");
}

// A row of RawReadSql() as the event a reader works with.
eventstore::RecordedEvent RawEvent(const pqxx::row& row) {
  auto text = [&row](int i) {
    return std::string(row[i].c_str(), row[i].size());
  };
  eventstore::RecordedEvent e;
  e.position.global_position = row[0].as<int64_t>();
  e.position.transaction_id = row[1].as<uint64_t>();
  e.stream_id = text(2);
  e.stream_version = row[3].as<int64_t>();
  e.event_id = text(4);
  e.event_type = text(5);
  e.schema_version = row[6].as<int>();
  e.data = text(7);
  e.metadata = text(8);
  e.recorded_at = absl::FromUnixMicros(row[9].as<int64_t>());
  return e;
}

// The baseline: one autocommitted, prepared INSERT of `rows` rows per
// operation on a connection of its own.
class RawInsertWriter : public Writer {
 public:
  static absl::StatusOr<std::unique_ptr<Writer>> Create(
      const std::string& url, absl::string_view schema, absl::string_view tag,
      int writer, int rows) {
    std::unique_ptr<pqxx::connection> conn;
    RETURN_IF_ERROR(Guard([&] {
      conn = std::make_unique<pqxx::connection>(url);
      conn->prepare("raw_insert", InsertSql(schema, rows));
    }));
    return std::unique_ptr<Writer>(
        new RawInsertWriter(std::move(conn), tag, writer, rows));
  }

  absl::Status Write() override {
    cycle_.Advance();
    params_.clear();
    int64_t& version = cycle_.version();
    for (int r = 0; r < rows_; ++r) {
      params_.push_back(cycle_.id());
      params_.push_back(absl::StrCat(version + 1 + r));
      params_.push_back(NewUuid());
      params_.push_back(kEventType);
      params_.push_back("1");
      params_.push_back(EventData(++count_));
      params_.push_back(EventMetadata());
    }
    RETURN_IF_ERROR(Guard([&] {
      pqxx::nontransaction tx(*conn_);
      tx.exec_prepared("raw_insert",
                       pqxx::prepare::make_dynamic_params(params_));
    }));
    version += rows_;
    return absl::OkStatus();
  }

 private:
  RawInsertWriter(std::unique_ptr<pqxx::connection> conn, absl::string_view tag,
                  int writer, int rows)
      : conn_(std::move(conn)), cycle_(tag, writer), rows_(rows) {}

  std::unique_ptr<pqxx::connection> conn_;
  StreamCycle cycle_;
  const int rows_;
  int64_t count_ = 0;
  std::vector<std::string> params_;
};

// The store: Append() of `rows` events with the exact expected version, and a
// check of what it reports.
class StoreAppendWriter : public Writer {
 public:
  StoreAppendWriter(EventStore* store, absl::string_view tag, int writer,
                    int rows, std::atomic<int64_t>* appended)
      : store_(store), cycle_(tag, writer), rows_(rows), appended_(appended) {}

  absl::Status Write() override {
    cycle_.Advance();
    int64_t& version = cycle_.version();
    std::vector<NewEvent> events(rows_);
    for (NewEvent& e : events) {
      e.event_id = NewUuid();
      e.event_type = kEventType;
      e.data = EventData(++count_);
      e.metadata = EventMetadata();
    }
    absl::StatusOr<AppendResult> result = store_->Append(
        cycle_.id(), ExpectedVersion::Exactly(version), std::move(events));
    if (!result.ok()) {
      return absl::Status(
          result.status().code(),
          absl::StrCat("Append to ", cycle_.id(), " at version ", version, ": ",
                       result.status().message()));
    }
    if (result->first_version != version + 1 ||
        result->last_version != version + rows_ || result->already_stored ||
        result->stream_id != cycle_.id()) {
      return absl::InternalError(absl::StrFormat(
          "Append to %s at version %d returned versions %d..%d "
          "(already_stored=%d), expected %d..%d",
          cycle_.id(), version, result->first_version, result->last_version,
          result->already_stored, version + 1, version + rows_));
    }
    // One session's transactions commit in order, so its positions rise.
    if (!(last_position_ < result->position)) {
      return absl::InternalError(absl::StrCat(
          "Append returned position ", result->position.ToToken(),
          " not after this writer's previous ", last_position_.ToToken()));
    }
    last_position_ = result->position;
    version += rows_;
    appended_->fetch_add(rows_, std::memory_order_relaxed);
    return absl::OkStatus();
  }

 private:
  EventStore* const store_;
  StreamCycle cycle_;
  const int rows_;
  std::atomic<int64_t>* const appended_;
  int64_t count_ = 0;
  Position last_position_ = Position::Start();
};

// Completed operations inside the measured window and their latencies.
// CPU time used so far, in seconds: by this process (the client side:
// writer threads, the store's code and its notifier thread) and by the
// server's processes, when the server runs on this machine.
struct CpuTimes {
  double client = 0;
  double server = 0;
  bool server_known = false;
};

struct Measurement {
  int64_t ops = 0;
  int64_t events = 0;
  double seconds = 0;
  std::vector<int64_t> latencies_ns;
  // Events written or read during the whole run, warm-up included, and the
  // CPU time spent meanwhile. Under machine load, CPU per event is steadier
  // than throughput.
  int64_t cpu_events = 0;
  double client_cpu = 0;
  double server_cpu = 0;
  bool server_cpu_known = true;

  void Add(Measurement other) {
    ops += other.ops;
    events += other.events;
    seconds += other.seconds;
    latencies_ns.insert(latencies_ns.end(), other.latencies_ns.begin(),
                        other.latencies_ns.end());
    cpu_events += other.cpu_events;
    client_cpu += other.client_cpu;
    server_cpu += other.server_cpu;
    server_cpu_known = server_cpu_known && other.server_cpu_known;
  }
  void SetCpu(const CpuTimes& before, const CpuTimes& after) {
    client_cpu = after.client - before.client;
    server_cpu = after.server - before.server;
    server_cpu_known = before.server_known && after.server_known;
  }
  double OpsPerSecond() const { return seconds > 0 ? ops / seconds : 0; }
  double EventsPerSecond() const { return seconds > 0 ? events / seconds : 0; }
  // In milliseconds; `q` in [0, 1].
  double Percentile(double q) {
    if (latencies_ns.empty()) return 0;
    size_t i = static_cast<size_t>(q * (latencies_ns.size() - 1) + 0.5);
    std::nth_element(latencies_ns.begin(), latencies_ns.begin() + i,
                     latencies_ns.end());
    return latencies_ns[i] / 1e6;
  }
  std::string ClientMicrosPerEvent() const {
    return cpu_events > 0
               ? absl::StrFormat("%.1f", client_cpu * 1e6 / cpu_events)
               : "n/a";
  }
  std::string ServerMicrosPerEvent() const {
    return server_cpu_known && cpu_events > 0
               ? absl::StrFormat("%.1f", server_cpu * 1e6 / cpu_events)
               : "n/a";
  }
};

// Runs every writer on its own thread for `warmup` + `measure`; counts the
// operations that complete inside the last `measure`. Stops at the first
// error and returns it.
absl::StatusOr<Measurement> RunTimed(
    std::vector<std::unique_ptr<Writer>>& writers, int events_per_op,
    absl::Duration warmup, absl::Duration measure) {
  const Clock::time_point window_start =
      Clock::now() + absl::ToChronoNanoseconds(warmup);
  const Clock::time_point window_end =
      window_start + absl::ToChronoNanoseconds(measure);
  std::atomic<bool> failed{false};
  absl::Mutex mu;
  absl::Status first_error;
  std::vector<Measurement> parts(writers.size());
  std::vector<std::thread> threads;
  for (size_t w = 0; w < writers.size(); ++w) {
    threads.emplace_back([&, w] {
      Measurement& part = parts[w];
      while (!failed.load(std::memory_order_relaxed)) {
        const Clock::time_point t0 = Clock::now();
        if (t0 >= window_end) break;
        absl::Status status = writers[w]->Write();
        const Clock::time_point t1 = Clock::now();
        if (!status.ok()) {
          absl::MutexLock lock(&mu);
          if (first_error.ok()) first_error = status;
          failed = true;
          break;
        }
        ++part.cpu_events;
        if (t1 >= window_start && t1 <= window_end) {
          ++part.ops;
          part.latencies_ns.push_back((t1 - t0).count());
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  if (!first_error.ok()) return first_error;
  Measurement total;
  for (Measurement& part : parts) total.Add(std::move(part));
  total.events = total.ops * events_per_op;
  total.cpu_events *= events_per_op;
  total.seconds = absl::ToDoubleSeconds(measure);
  return total;
}

struct Row {
  Row(std::string phase, int writers)
      : phase(std::move(phase)), writers(writers) {}

  std::string phase;
  int writers;
  Measurement m;
  std::string ratio;  // store/baseline events per second, or empty
};

std::string FormatRow(Row& row) {
  return absl::StrFormat(
      "%-40s %7d %10.0f %10.0f %8.2f %8.2f %7s %9s %9s", row.phase, row.writers,
      row.m.OpsPerSecond(), row.m.EventsPerSecond(), row.m.Percentile(0.50),
      row.m.Percentile(0.99), row.ratio, row.m.ServerMicrosPerEvent(),
      row.m.ClientMicrosPerEvent());
}

std::string Header() {
  return absl::StrFormat("%-40s %7s %10s %10s %8s %8s %7s %9s %9s", "phase",
                         "writers", "ops/s", "events/s", "p50 ms", "p99 ms",
                         "ratio", "srv us/ev", "cli us/ev");
}

// True when `pid` is a PostgreSQL process on this machine: then the server
// is local and the CPU time of its processes can be read.
bool IsLocalPostgres(int pid) {
  std::FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/comm").c_str(), "r");
  if (f == nullptr) return false;
  char comm[64] = {};
  const size_t n = std::fread(comm, 1, sizeof(comm) - 1, f);
  std::fclose(f);
  return absl::StartsWith(absl::string_view(comm, n), "postgres");
}

// User plus system CPU seconds of a local process; < 0 when unreadable.
double ProcessCpuSeconds(int pid) {
  std::FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/stat").c_str(), "r");
  if (f == nullptr) return -1;
  char buffer[1024];
  const size_t n = std::fread(buffer, 1, sizeof(buffer) - 1, f);
  std::fclose(f);
  absl::string_view stat(buffer, n);
  // "pid (comm) state ppid ...": utime and stime are the 12th and 13th
  // fields after the command name, which may itself contain spaces.
  const size_t paren = stat.rfind(')');
  if (paren == absl::string_view::npos) return -1;
  std::vector<absl::string_view> fields =
      absl::StrSplit(stat.substr(paren + 1), ' ', absl::SkipEmpty());
  int64_t utime = 0, stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return -1;
  }
  return static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
}

class Bench {
 public:
  static absl::StatusOr<std::unique_ptr<Bench>> Create(Flags flags) {
    std::unique_ptr<Bench> bench(new Bench(std::move(flags)));
    RETURN_IF_ERROR(bench->SetUp());
    return bench;
  }

  ~Bench() {
    store_.reset();
    pool_.reset();
    if (!schema_created_) return;
    if (flags_.keep_schema) {
      std::fprintf(stderr, "eventstore_bench: schema %s kept\n",
                   schema_.c_str());
      return;
    }
    absl::Status dropped = Guard([&] {
      pqxx::connection conn(flags_.database_url);
      pqxx::nontransaction tx(conn);
      tx.exec(absl::StrCat("DROP SCHEMA ", schema_, " CASCADE"));
    });
    if (!dropped.ok()) {
      std::fprintf(stderr, "eventstore_bench: could not drop schema %s: %s\n",
                   schema_.c_str(), dropped.ToString().c_str());
    }
  }

  absl::Status Run() {
    std::vector<Row> rows;
    std::vector<std::string> targets;
    for (int writers : {1, 4, 16}) {
      if (!flags_.run_single) break;
      ASSIGN_OR_RETURN(auto pair, Compare("single", writers, 1));
      const double ratio = Ratio(pair.second.m, pair.first.m);
      if (writers == 16) {
        targets.push_back(
            Target("single-event Append at 16 writers vs raw INSERT", ratio,
                   kSingleTargetRatio, absl::StrFormat("%.2fx", ratio),
                   absl::StrFormat(">= %.2fx", kSingleTargetRatio)));
      }
      rows.push_back(std::move(pair.first));
      rows.push_back(std::move(pair.second));
    }
    for (int writers : {1, 4}) {
      if (!flags_.run_batch) break;
      ASSIGN_OR_RETURN(auto pair, Compare("batch", writers, kBatchSize));
      const double ratio = Ratio(pair.second.m, pair.first.m);
      targets.push_back(
          Target(absl::StrCat(kBatchSize, "-event Append at ", writers,
                              writers == 1 ? " writer" : " writers",
                              " vs raw multi-row INSERT"),
                 ratio, kBatchTargetRatio, absl::StrFormat("%.2fx", ratio),
                 absl::StrFormat(">= %.2fx", kBatchTargetRatio)));
      rows.push_back(std::move(pair.first));
      rows.push_back(std::move(pair.second));
    }
    if (flags_.run_read) {
      ASSIGN_OR_RETURN(std::vector<Row> reads, ReadPhase());
      double slowest = -1;
      for (Row& r : reads) {
        if (absl::StartsWith(r.phase, "store")) {
          const double eps = r.m.EventsPerSecond();
          slowest = slowest < 0 ? eps : std::min(slowest, eps);
        }
        rows.push_back(std::move(r));
      }
      targets.push_back(Target(
          "ReadAll from the start (slower pass)", slowest,
          kReadTargetEventsPerSecond, absl::StrFormat("%.0f events/s", slowest),
          absl::StrFormat(">= %.0f events/s", kReadTargetEventsPerSecond)));
    }
    RETURN_IF_ERROR(CheckEventCount());

    std::printf("\n%s\n", Header().c_str());
    for (Row& r : rows) std::printf("%s\n", FormatRow(r).c_str());
    std::printf(
        "\nratio: store events/s divided by raw events/s at the same writer "
        "count. Latencies are per call (per page for reads).\nsrv/cli us/ev: "
        "CPU microseconds per event of the server's processes / of this "
        "process (the store's client side), warm-up included.\n\ntargets\n");
    for (const std::string& t : targets) std::printf("  %s\n", t.c_str());
    std::printf("\nload average at the end: %s\n", LoadAverage().c_str());
    if (!problems_.empty()) {
      std::printf("\nCORRECTNESS PROBLEMS\n");
      for (const std::string& p : problems_) std::printf("  %s\n", p.c_str());
    }
    std::fflush(stdout);
    if (!problems_.empty()) {
      return absl::DataLossError(absl::StrCat(
          problems_.size(), " correctness problem(s), listed above"));
    }
    return absl::OkStatus();
  }

 private:
  explicit Bench(Flags flags) : flags_(std::move(flags)) {}

  static double Ratio(const Measurement& store, const Measurement& raw) {
    return raw.EventsPerSecond() > 0
               ? store.EventsPerSecond() / raw.EventsPerSecond()
               : 0;
  }

  static std::string Target(absl::string_view what, double value, double target,
                            absl::string_view shown, absl::string_view wanted) {
    return absl::StrFormat("%-58s %16s  target %-18s %s", what, shown, wanted,
                           value >= target ? "met" : "MISSED");
  }

  absl::Status SetUp() {
    ASSIGN_OR_RETURN(auto admin, Connect());
    admin_ = std::move(admin);
    RETURN_IF_ERROR(Guard([&] {
      pqxx::nontransaction tx(*admin_);
      std::string settings;
      for (const char* name :
           {"server_version", "fsync", "synchronous_commit", "full_page_writes",
            "wal_sync_method", "shared_buffers", "max_wal_size",
            "checkpoint_timeout"}) {
        absl::StrAppend(&settings, settings.empty() ? "" : " ", name, "=",
                        tx.exec1(absl::StrCat("SHOW ", name))[0].c_str());
      }
      std::printf("eventstore_bench: %s\n", settings.c_str());
    }));

    schema_ = absl::StrCat("bench_", NewUuid().substr(24));  // 48 random bits
    RETURN_IF_ERROR(Guard([&] {
      pqxx::nontransaction tx(*admin_);
      tx.exec(absl::StrCat("CREATE SCHEMA ", schema_));
    }));
    schema_created_ = true;

    PgPoolOptions pool_options;
    pool_options.conninfo = flags_.database_url;
    // Room for 16 writers and the fill threads: no writer ever waits for a
    // connection.
    pool_options.max_connections = 24;
    ASSIGN_OR_RETURN(pool_, PgPool::Create(std::move(pool_options)));
    RETURN_IF_ERROR(PostgresEventStore::Migrate(*pool_, schema_));
    eventstore::PostgresEventStoreOptions store_options;
    store_options.schema = schema_;
    store_options.notify = flags_.notify;
    store_options.notify_min_interval = flags_.notify_interval;
    store_options.group_commit_in_flight = flags_.group_in_flight;
    store_options.group_commit_max_events = flags_.group_max_events;
    ASSIGN_OR_RETURN(store_, PostgresEventStore::Create(
                                 pool_.get(), std::move(store_options)));
    RETURN_IF_ERROR(CreateRawTable());
    RETURN_IF_ERROR(Guard([&] {
      pqxx::nontransaction tx(*admin_);
      server_local_ =
          IsLocalPostgres(tx.exec1("SELECT pg_backend_pid()")[0].as<int>());
    }));

    std::printf(
        "eventstore_bench: schema %s; %s measured after %s warm-up per run, "
        "%d alternating baseline/store runs per phase; %lld events to read; "
        "store notify=%s; %d CPUs, load average %s\n",
        schema_.c_str(), absl::FormatDuration(flags_.seconds).c_str(),
        absl::FormatDuration(flags_.warmup).c_str(), flags_.rounds,
        static_cast<long long>(flags_.read_events), NotifyName(flags_.notify),
        static_cast<int>(std::thread::hardware_concurrency()),
        LoadAverage().c_str());
    std::fflush(stdout);
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<pqxx::connection>> Connect() {
    std::unique_ptr<pqxx::connection> conn;
    RETURN_IF_ERROR(Guard([&] {
      conn = std::make_unique<pqxx::connection>(flags_.database_url);
    }));
    return conn;
  }

  // The baseline's table is copied from the migrated one (LIKE ... INCLUDING
  // ALL: columns, types, defaults, identity, constraints and indexes,
  // expression indexes included), so it cannot drift from the migration.
  // Triggers are not copied: work a trigger does is the store's cost. The
  // index lists of both tables are compared to prove the copy.
  absl::Status CreateRawTable() {
    std::string store_indexes, raw_indexes, triggers;
    RETURN_IF_ERROR(Guard([&] {
      pqxx::nontransaction tx(*admin_);
      tx.exec(absl::StrCat("CREATE TABLE ", schema_, ".", kRawTable, " (LIKE ",
                           schema_, ".", kEventsTable, " INCLUDING ALL)"));
      // The definition without the index and table names.
      auto indexes = [&](absl::string_view table) {
        std::vector<std::string> defs;
        for (const pqxx::row& r : tx.exec_params(
                 "SELECT (CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END)"
                 " || substring(pg_get_indexdef(i.indexrelid) FROM ' USING .*')"
                 " FROM pg_index i WHERE i.indrelid = ($1 || '.' || "
                 "$2)::regclass"
                 " ORDER BY 1",
                 schema_, std::string(table))) {
          defs.push_back(r[0].c_str());
        }
        return absl::StrJoin(defs, "; ");
      };
      store_indexes = indexes(kEventsTable);
      raw_indexes = indexes(kRawTable);
      for (const pqxx::row& r : tx.exec_params(
               "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND"
               " tgrelid = ($1 || '.' || $2)::regclass",
               schema_, std::string(kEventsTable))) {
        absl::StrAppend(&triggers, triggers.empty() ? "" : ", ", r[0].c_str());
      }
    }));
    if (store_indexes != raw_indexes) {
      return absl::InternalError(absl::StrCat(
          "raw table indexes differ from the store's: ", raw_indexes, " vs ",
          store_indexes));
    }
    std::printf(
        "eventstore_bench: raw table %s.%s = LIKE %s INCLUDING ALL; "
        "indexes: %s\n",
        schema_.c_str(), kRawTable, kEventsTable, store_indexes.c_str());
    if (!triggers.empty()) {
      std::printf(
          "eventstore_bench: triggers on %s (not on the raw table): %s\n",
          kEventsTable, triggers.c_str());
    }
    return absl::OkStatus();
  }

  // A checkpoint before each timed run, so that every run starts from the
  // same state: no checkpoint writing in the background, and full-page
  // images for the first change of each page after it, for both sides.
  // Best effort: needs superuser or pg_checkpoint.
  // Server CPU is the sum over the server's processes that are alive at
  // the moment; a connection's CPU is therefore only counted while it is
  // open, which covers every timed run.
  CpuTimes SampleCpu() {
    CpuTimes t;
    rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) == 0) {
      t.client = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
                 usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
    }
    if (!server_local_) return t;
    absl::Status status = Guard([&] {
      pqxx::nontransaction tx(*admin_);
      for (const pqxx::row& r : tx.exec("SELECT pid FROM pg_stat_activity")) {
        const double seconds = ProcessCpuSeconds(r[0].as<int>());
        if (seconds > 0) t.server += seconds;
      }
    });
    t.server_known = status.ok();
    return t;
  }

  void Checkpoint() {
    absl::Status status = Guard([&] {
      pqxx::nontransaction tx(*admin_);
      tx.exec("CHECKPOINT");
    });
    if (!status.ok() && !checkpoint_warned_) {
      checkpoint_warned_ = true;
      std::fprintf(stderr,
                   "eventstore_bench: CHECKPOINT failed (%s); runs "
                   "may overlap with checkpoints\n",
                   status.ToString().c_str());
    }
  }

  // Measures raw inserts and store appends of `rows` events per operation,
  // alternating A B / B A over the rounds. Returns (raw row, store row).
  absl::StatusOr<std::pair<Row, Row>> Compare(absl::string_view kind,
                                              int writers, int rows) {
    Row raw(rows == 1 ? "raw INSERT, 1 row (autocommit)"
                      : absl::StrCat("raw INSERT, ", rows, " rows (1 stmt)"),
            writers);
    Row store(rows == 1 ? "store Append, 1 event (exact version)"
                        : absl::StrCat("store Append, ", rows, " events"),
              writers);
    for (int round = 0; round < flags_.rounds; ++round) {
      for (int side = 0; side < 2; ++side) {
        const bool is_store = (side + round) % 2 == 1;
        const std::string tag = absl::StrCat(kind, ++run_counter_);
        std::vector<std::unique_ptr<Writer>> ws;
        for (int w = 0; w < writers; ++w) {
          if (is_store) {
            ws.push_back(std::make_unique<StoreAppendWriter>(
                store_.get(), tag, w, rows, &store_appended_));
          } else {
            ASSIGN_OR_RETURN(auto writer,
                             RawInsertWriter::Create(flags_.database_url,
                                                     schema_, tag, w, rows));
            ws.push_back(std::move(writer));
          }
        }
        Checkpoint();
        const CpuTimes cpu_before = SampleCpu();
        absl::StatusOr<Measurement> m =
            RunTimed(ws, rows, flags_.warmup, flags_.seconds);
        if (!m.ok()) {
          return absl::Status(
              m.status().code(),
              absl::StrCat(is_store ? store.phase : raw.phase, ", ", writers,
                           " writers: ", m.status().message()));
        }
        // While the writers' connections are still open.
        m->SetCpu(cpu_before, SampleCpu());
        std::fprintf(stderr,
                     "  %-8s %2d writers, round %d: %-5s %9.0f events/s\n",
                     std::string(kind).c_str(), writers, round + 1,
                     is_store ? "store" : "raw", m->EventsPerSecond());
        (is_store ? store : raw).m.Add(*std::move(m));
      }
    }
    store.ratio = absl::StrFormat("%.2fx", Ratio(store.m, raw.m));
    std::fprintf(stderr, "%s\n%s\n", FormatRow(raw).c_str(),
                 FormatRow(store).c_str());
    return std::make_pair(std::move(raw), std::move(store));
  }

  absl::StatusOr<int64_t> QueryCount(absl::string_view table) {
    int64_t count = 0;
    RETURN_IF_ERROR(Guard([&] {
      pqxx::nontransaction tx(*admin_);
      count = tx.exec1(absl::StrCat("SELECT count(*) FROM ", schema_, ".",
                                    table))[0]
                  .as<int64_t>();
    }));
    return count;
  }

  // Fills the store up to --read-events with appends of kFillBatchSize
  // events (unmeasured), then reads everything from the start twice.
  absl::StatusOr<std::vector<Row>> ReadPhase() {
    ASSIGN_OR_RETURN(const int64_t present, QueryCount(kEventsTable));
    const int64_t missing = std::max<int64_t>(0, flags_.read_events - present);
    const absl::Time fill_start = absl::Now();
    std::atomic<int64_t> next_batch{0};
    const int64_t batches = (missing + kFillBatchSize - 1) / kFillBatchSize;
    absl::Mutex mu;
    absl::Status fill_error;
    std::vector<std::thread> threads;
    for (int t = 0; t < kFillThreads; ++t) {
      threads.emplace_back([&, t] {
        int64_t n = 0;
        for (int64_t b = next_batch++; b < batches; b = next_batch++) {
          const int size = static_cast<int>(
              std::min<int64_t>(kFillBatchSize, missing - b * kFillBatchSize));
          std::vector<NewEvent> events(size);
          for (NewEvent& e : events) {
            e.event_id = NewUuid();
            e.event_type = kEventType;
            e.data = EventData(++n);
            e.metadata = EventMetadata();
          }
          absl::StatusOr<AppendResult> r =
              store_->Append(absl::StrCat("account-fill.", t, ".", b),
                             ExpectedVersion::NoStream(), std::move(events));
          if (!r.ok()) {
            absl::MutexLock lock(&mu);
            if (fill_error.ok()) fill_error = r.status();
            return;
          }
          store_appended_ += size;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    RETURN_IF_ERROR(fill_error);
    const double fill_seconds = absl::ToDoubleSeconds(absl::Now() - fill_start);
    std::fprintf(stderr,
                 "  fill: %lld events appended in batches of %d by %d threads "
                 "in %.1f s (%.0f events/s, unmeasured)\n",
                 static_cast<long long>(missing), kFillBatchSize, kFillThreads,
                 fill_seconds, fill_seconds > 0 ? missing / fill_seconds : 0);

    // A long-lived store has been vacuumed and analyzed by autovacuum; read
    // it in that state rather than paying the hint-bit writes of freshly
    // inserted rows inside the measurement.
    RETURN_IF_ERROR(Guard([&] {
      pqxx::nontransaction tx(*admin_);
      tx.exec(absl::StrCat("VACUUM ANALYZE ", schema_, ".", kEventsTable));
    }));
    ASSIGN_OR_RETURN(const int64_t expected, QueryCount(kEventsTable));
    // Orderings that only go wrong across a change in the number of digits
    // of transaction ids (999 -> 1000) need such a change in the data.
    RETURN_IF_ERROR(Guard([&] {
      pqxx::nontransaction tx(*admin_);
      pqxx::row span = tx.exec1(absl::StrCat(
          "SELECT min(transaction_id)::text, max(transaction_id)::text FROM ",
          schema_, ".", kEventsTable));
      std::fprintf(stderr, "  read: %lld events, transaction ids %s..%s\n",
                   static_cast<long long>(expected), span[0].c_str(),
                   span[1].c_str());
    }));
    Checkpoint();

    ASSIGN_OR_RETURN(std::unique_ptr<pqxx::connection> raw_conn, Connect());
    RETURN_IF_ERROR(
        Guard([&] { raw_conn->prepare("raw_read", RawReadSql(schema_)); }));
    PageFn raw_read = [&](Position after) -> absl::StatusOr<ReadAllResult> {
      ReadAllResult page;
      RETURN_IF_ERROR(Guard([&] {
        pqxx::nontransaction tx(*raw_conn);
        pqxx::result r =
            tx.exec_prepared("raw_read", std::to_string(after.transaction_id),
                             after.global_position, flags_.read_page);
        page.events.reserve(r.size());
        for (const pqxx::row& row : r) page.events.push_back(RawEvent(row));
      }));
      page.next = page.events.empty() ? after : page.events.back().position;
      return page;
    };
    PageFn store_read = [&](Position after) {
      return store_->ReadAll(after, flags_.read_page);
    };

    // Alternating (store, raw), (raw, store), as for the writers.
    Row store_row(absl::StrCat("store ReadAll, pages of ", flags_.read_page),
                  1);
    Row raw_row(absl::StrCat("raw SELECT, pages of ", flags_.read_page), 1);
    std::vector<Row> rows;
    bool gave_up[2] = {false, false};  // raw, store
    for (int pass = 1; pass <= 2; ++pass) {
      for (int side = 0; side < 2; ++side) {
        const bool is_store = (side + pass) % 2 == 0;
        if (gave_up[is_store]) continue;
        Row& total = is_store ? store_row : raw_row;
        ASSIGN_OR_RETURN(
            Row row, ReadPass(absl::StrCat(total.phase, " (pass ", pass, ")"),
                              is_store ? store_read : raw_read, expected,
                              gave_up[is_store]));
        std::fprintf(stderr, "%s\n", FormatRow(row).c_str());
        if (is_store) {
          rows.push_back(std::move(row));
        } else {
          raw_row.m.Add(std::move(row.m));
        }
      }
    }
    raw_row.phase += " (2 passes)";
    for (Row& r : rows) {
      r.ratio = absl::StrFormat("%.2fx", Ratio(r.m, raw_row.m));
    }
    rows.insert(rows.begin(), std::move(raw_row));
    return rows;
  }

  using PageFn = std::function<absl::StatusOr<ReadAllResult>(Position after)>;

  // Reads everything from the start, page by page. Order and count problems
  // are recorded in problems_ and the pass goes on, so that the figures
  // still print.
  absl::StatusOr<Row> ReadPass(std::string name, const PageFn& read,
                               int64_t expected, bool& gave_up) {
    Row row(std::move(name), 1);
    Position after = Position::Start();
    int stalls = 0;
    int64_t out_of_order = 0;
    std::string first_out_of_order;
    const CpuTimes cpu_before = SampleCpu();
    const Clock::time_point start = Clock::now();
    const Clock::time_point deadline =
        start + std::chrono::seconds(kMaxReadPassSeconds);
    while (true) {
      const Clock::time_point t0 = Clock::now();
      if (t0 > deadline) {
        gave_up = true;
        problems_.push_back(
            absl::StrCat(row.phase, ": gave up after ", kMaxReadPassSeconds,
                         " s, at ", row.m.events, " of ", expected, " events"));
        break;
      }
      absl::StatusOr<ReadAllResult> page = read(after);
      const Clock::time_point t1 = Clock::now();
      if (!page.ok()) return page.status();
      if (page->events.empty()) {
        if (page->next != after) {
          problems_.push_back(
              absl::StrCat(row.phase, ": an empty page moved next from ",
                           after.ToToken(), " to ", page->next.ToToken()));
        }
        if (row.m.events >= expected) break;
        // Caught up with the visible events but not with the table: either
        // a transaction older than the rest is still running (wait for it,
        // bounded, and say what it was) or events were skipped.
        if (stalls++ == 0) {
          std::fprintf(stderr,
                       "  %s: empty page after %lld of %lld events at %s; %s\n",
                       row.phase.c_str(), static_cast<long long>(row.m.events),
                       static_cast<long long>(expected),
                       after.ToToken().c_str(), RunningTransactions().c_str());
        }
        if (stalls > kMaxReadStalls) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      ++row.m.ops;
      row.m.latencies_ns.push_back((t1 - t0).count());
      for (const eventstore::RecordedEvent& e : page->events) {
        if (!(after < e.position)) {
          if (out_of_order++ == 0) {
            first_out_of_order =
                absl::StrCat(e.position.ToToken(), " after ", after.ToToken());
          }
        }
        after = e.position;
      }
      if (page->next != after) {
        problems_.push_back(
            absl::StrCat(row.phase, ": next is ", page->next.ToToken(),
                         ", the last event is at ", after.ToToken()));
        after = page->next;
      }
      row.m.events += static_cast<int64_t>(page->events.size());
    }
    row.m.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    row.m.cpu_events = row.m.events;
    row.m.SetCpu(cpu_before, SampleCpu());
    if (out_of_order > 0) {
      problems_.push_back(absl::StrCat(
          row.phase, ": ", out_of_order,
          " events not after their predecessor in commit order, first: ",
          first_out_of_order));
    }
    if (row.m.events != expected) {
      problems_.push_back(absl::StrCat(row.phase, ": read ", row.m.events,
                                       " events, the ", kEventsTable,
                                       " table holds ", expected));
    }
    return row;
  }

  // What may hold ReadAll back: the snapshot's xmin and the sessions whose
  // transaction id or snapshot is at or before it.
  std::string RunningTransactions() {
    std::string out;
    absl::Status status = Guard([&] {
      pqxx::nontransaction tx(*admin_);
      pqxx::row xmin = tx.exec1(absl::StrCat(
          "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, "
          "(SELECT count(*) FROM ",
          schema_, ".", kEventsTable,
          " WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))"));
      out = absl::StrCat("snapshot xmin ", xmin[0].c_str(), ", ",
                         xmin[1].c_str(), " events at or after it; sessions:");
      for (const pqxx::row& r : tx.exec(
               "SELECT pid, coalesce(backend_type, ''), coalesce(state, ''),"
               " coalesce(backend_xid::text, '-'),"
               " coalesce(backend_xmin::text, '-'), left(query, 60)"
               " FROM pg_stat_activity WHERE backend_xid IS NOT NULL OR"
               " backend_xmin IS NOT NULL")) {
        absl::StrAppend(&out, " [pid ", r[0].c_str(), " ", r[1].c_str(), " ",
                        r[2].c_str(), " xid ", r[3].c_str(), " xmin ",
                        r[4].c_str(), " '", r[5].c_str(), "']");
      }
    });
    return status.ok() ? out : status.ToString();
  }

  // Every successful append must be stored exactly once.
  absl::Status CheckEventCount() {
    ASSIGN_OR_RETURN(const int64_t stored, QueryCount(kEventsTable));
    if (stored != store_appended_.load()) {
      problems_.push_back(absl::StrCat("the store acknowledged ",
                                       store_appended_.load(),
                                       " events but holds ", stored));
    } else {
      std::printf("eventstore_bench: %lld events stored, as acknowledged\n",
                  static_cast<long long>(stored));
    }
    return absl::OkStatus();
  }

  const Flags flags_;
  std::string schema_;
  bool schema_created_ = false;
  bool checkpoint_warned_ = false;
  // True when the server's processes are visible in this machine's /proc.
  bool server_local_ = false;
  int run_counter_ = 0;
  std::unique_ptr<pqxx::connection> admin_;
  std::unique_ptr<PgPool> pool_;
  std::unique_ptr<PostgresEventStore> store_;
  std::atomic<int64_t> store_appended_{0};
  std::vector<std::string> problems_;
};

int Main(int argc, char** argv) {
  absl::StatusOr<Flags> flags = ParseFlags(argc, argv);
  if (!flags.ok()) {
    if (absl::IsCancelled(flags.status())) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "eventstore_bench: %s\n%s",
                 std::string(flags.status().message()).c_str(), kUsage);
    return 2;
  }
  absl::StatusOr<std::unique_ptr<Bench>> bench = Bench::Create(*flags);
  absl::Status status = bench.ok() ? (*bench)->Run() : bench.status();
  if (!status.ok()) {
    std::fprintf(stderr, "eventstore_bench: FAILED: %s\n",
                 status.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace cqrs::bench

int main(int argc, char** argv) { return cqrs::bench::Main(argc, argv); }

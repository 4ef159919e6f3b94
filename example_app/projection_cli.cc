#include "example_app/projection_cli.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "eventstore/postgres_event_store.h"
#include "example_app/bank_projections.h"
#include "example_app/transfer_process.h"
#include "framework/log.h"
#include "projections/parked.h"
#include "projections/rebuild.h"
#include "projections/runner.h"
#include "projections/status.h"

namespace bank {

const char kProjectionsHelp[] = R"(usage: bank projections <command> [options]

commands:
  list                      the projections this build has
  status [--json]           state, checkpoint, lag, owner, parked events,
                            last error and the error being retried (transient
                            database errors) of every projection
  rebuild <name>... | --all rebuild read models without downtime (a progress
                            bar on a terminal); Ctrl-C stops it and leaves the
                            live read model untouched; running it again
                            resumes. It writes in short transactions and
                            pauses between them so that live projections
                            keep their latency; --fast writes whole pages
                            without pauses (several times faster, for quiet
                            hours: every live projection in the cluster
                            waits up to a page's write, about 0.1 s)
  parked [<name>]           the parked (dead-letter) events, oldest first
  replay-parked <name>      apply a projection's parked events again, in
                            order; those that fail again stay parked
  resume <name>             go on with a projection or the transfer process
                            that an error stopped (state failed), from its
                            checkpoint: the failed event is tried again, so
                            fix its cause first; no rebuild

options (before or after the command):
  --database-url URL     PostgreSQL connection string (default: $DATABASE_URL,
                         else the embedded cluster in --data-dir)
  --data-dir DIR         embedded cluster directory (default ./bank-data)
  --schema NAME          PostgreSQL schema (default bank)
  --help                 show this help
)";

namespace {

using cqrs::projections::Projection;

constexpr int kOk = 0;
constexpr int kFailure = 1;
constexpr int kUsage = 2;

int Fail(const absl::Status& status) {
  std::cerr << "bank: " << status.message() << std::endl;
  return kFailure;
}

int Usage(const std::string& message) {
  std::cerr << "bank: " << message << " (see `bank projections --help`)"
            << std::endl;
  return kUsage;
}

absl::StatusOr<std::unique_ptr<cqrs::eventstore::PostgresEventStore>> OpenStore(
    cqrs::PgPool& pool, const std::string& schema) {
  cqrs::eventstore::PostgresEventStoreOptions options;
  options.schema = schema;
  return cqrs::eventstore::PostgresEventStore::Create(&pool,
                                                      std::move(options));
}

int List() {
  for (const Projection& p : BankProjections()) {
    std::vector<std::string> tables;
    for (const auto& t : p.tables) tables.push_back(t.name);
    std::cout << p.name << "  version " << p.version << "  tables "
              << absl::StrJoin(tables, ",") << "  events "
              << absl::StrJoin(p.event_types, ",") << "\n";
  }
  return kOk;
}

int Status(cqrs::PgPool& pool, const std::string& schema, bool json) {
  // This build's versions: a stored read model of another one is
  // "outdated".
  std::map<std::string, int> versions;
  for (const Projection& p : BankProjections()) versions[p.name] = p.version;
  const cqrs::commands::ProcessManager transfers = TransferProcess();
  versions[transfers.name] = transfers.version;
  auto statuses =
      cqrs::projections::ReadProjectionStatuses(pool, schema, schema, versions);
  if (!statuses.ok()) return Fail(statuses.status());
  if (json) {
    std::cout << cqrs::projections::StatusesJson(
                     *statuses, cqrs::projections::StatusFields::kAll)
              << std::endl;
    return kOk;
  }
  std::cout << absl::StrFormat("%-22s %3s %4s %-12s %-16s %10s %9s %6s  %s\n",
                               "NAME", "VER", "GEN", "STATE", "POSITION", "LAG",
                               "LAG_S", "PARKED", "OWNER");
  for (const auto& s : *statuses) {
    std::cout << absl::StrFormat(
        "%-22s %3d %4d %-12s %-16s %10d %9.1f %6d  %s\n", s.name, s.version,
        s.generation, s.state, s.position, s.lag_events, s.lag_seconds,
        s.parked, s.owner.empty() ? "-" : s.owner);
    if (s.code_version != 0 && s.code_version != s.version) {
      std::cout << "    stored version " << s.version << ", this build has "
                << s.code_version << ": `bank projections rebuild " << s.name
                << "` with this build, or run the build of version "
                << s.version << "\n";
    }
    if (!s.last_error.empty()) {
      std::cout << "    last error"
                << (s.last_error_at.empty()
                        ? ""
                        : absl::StrCat(" (", s.last_error_at, ")"))
                << ": " << s.last_error
                << (s.failed_position.empty()
                        ? ""
                        : absl::StrCat(" (at ", s.failed_position, ")"))
                << "\n";
    }
    if (!s.transient_error.empty()) {
      std::cout << "    retrying after: " << s.transient_error << "\n";
    }
  }
  return kOk;
}

std::atomic<bool> interrupted{false};

void OnInterrupt(int) { interrupted = true; }

std::string Thousands(int64_t n) {
  std::string digits = absl::StrCat(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string Duration(absl::Duration d) {
  const int64_t s = absl::ToInt64Seconds(d);
  return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
}

// Progress: a bar redrawn in place on a terminal, plain lines otherwise.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(std::string name)
      : name_(std::move(name)), tty_(isatty(STDERR_FILENO) == 1) {}

  void Print(const cqrs::projections::RebuildProgress& p) {
    const absl::Time now = absl::Now();
    const absl::Duration every =
        tty_ ? absl::Milliseconds(100) : absl::Seconds(2);
    if (!p.swapped && now - last_ < every) return;
    last_ = now;
    const double fraction =
        p.total > 0 ? static_cast<double>(p.done) / p.total : 1.0;
    const std::string figures = absl::StrFormat(
        "%s/%s events  %s ev/s  ETA %s", Thousands(p.done), Thousands(p.total),
        Thousands(static_cast<int64_t>(p.events_per_second)), Duration(p.eta));
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(fraction * kWidth);
      std::string bar(filled, '#');
      bar.append(kWidth - filled, '.');
      std::fprintf(stderr, "\r%s [%s] %3.0f%%  %s%s", name_.c_str(),
                   bar.c_str(), fraction * 100, figures.c_str(),
                   p.swapped ? "  swapped\n" : "");
    } else {
      std::fprintf(stderr, "%s: %3.0f%%  %s%s\n", name_.c_str(), fraction * 100,
                   figures.c_str(), p.swapped ? "  swapped" : "");
    }
    std::fflush(stderr);
  }

 private:
  const std::string name_;
  const bool tty_;
  absl::Time last_ = absl::InfinitePast();
};

int Rebuild(cqrs::PgPool& pool, const std::string& schema,
            const std::vector<std::string>& names, bool all, bool fast) {
  std::vector<Projection> chosen;
  std::vector<Projection> known = BankProjections();
  if (all) {
    if (!names.empty())
      return Usage("give projection names or --all, not both");
    chosen = known;
  } else {
    if (names.empty()) return Usage("rebuild needs projection names or --all");
    std::set<std::string> seen;
    for (const std::string& name : names) {
      bool found = false;
      for (const Projection& p : known) {
        if (p.name == name) {
          found = true;
          if (seen.insert(name).second) chosen.push_back(p);
        }
      }
      if (!found) {
        std::vector<std::string> valid;
        for (const Projection& p : known) valid.push_back(p.name);
        return Usage(absl::StrCat("unknown projection '", name, "' (known: ",
                                  absl::StrJoin(valid, ", "), ")"));
      }
    }
  }
  auto store = OpenStore(pool, schema);
  if (!store.ok()) return Fail(store.status());
  struct sigaction action = {};
  action.sa_handler = OnInterrupt;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  for (const Projection& p : chosen) {
    ProgressPrinter printer(p.name);
    cqrs::projections::RebuildOptions options;
    options.progress = [&](const cqrs::projections::RebuildProgress& r) {
      printer.Print(r);
    };
    options.cancelled = [] { return interrupted.load(); };
    if (fast) {
      options.max_batch_duration = absl::ZeroDuration();
      options.pause_share = 0;
    }
    absl::Status s = cqrs::projections::RebuildProjection(&pool, store->get(),
                                                          p, schema, options);
    if (!s.ok()) {
      std::fprintf(stderr, "\n");
      return Fail(s);
    }
  }
  return kOk;
}

// The projection of this build called `name`, or a usage error.
absl::StatusOr<Projection> Find(const std::string& name) {
  std::vector<std::string> valid;
  for (const Projection& p : BankProjections()) {
    if (p.name == name) return p;
    valid.push_back(p.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown projection '", name,
                   "' (known: ", absl::StrJoin(valid, ", "), ")"));
}

int Parked(cqrs::PgPool& pool, const std::string& schema,
           const std::vector<std::string>& names) {
  if (names.size() > 1) return Usage("parked takes at most one projection");
  std::string name;
  if (!names.empty()) {
    absl::StatusOr<Projection> p = Find(names[0]);
    if (!p.ok()) return Usage(std::string(p.status().message()));
    name = p->name;
  }
  auto parked = cqrs::projections::ListParked(pool, schema, name, 10000);
  if (!parked.ok()) return Fail(parked.status());
  for (const auto& e : *parked) {
    std::cout << e.projection << "  " << e.position << "  " << e.stream_id
              << " v" << e.stream_version << "  " << e.event_type << "  "
              << absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", e.parked_at,
                                  absl::UTCTimeZone())
              << "  " << e.error << "\n";
  }
  std::cout << parked->size() << " parked event(s)" << std::endl;
  return kOk;
}

int ReplayParked(cqrs::PgPool& pool, const std::string& schema,
                 const std::vector<std::string>& names) {
  if (names.size() != 1) return Usage("replay-parked takes one projection");
  absl::StatusOr<Projection> p = Find(names[0]);
  if (!p.ok()) return Usage(std::string(p.status().message()));
  auto result = cqrs::projections::ReplayParked(pool, *p, schema);
  if (!result.ok()) return Fail(result.status());
  std::cout << p->name << ": replayed " << result->replayed << ", still parked "
            << result->still_parked << std::endl;
  return result->still_parked == 0 ? kOk : kFailure;
}

int Resume(cqrs::PgPool& pool, const std::string& schema,
           const std::vector<std::string>& names) {
  if (names.size() != 1) return Usage("resume takes one projection");
  std::vector<std::string> valid;
  for (const Projection& p : BankProjections()) valid.push_back(p.name);
  valid.push_back(TransferProcess().name);
  if (std::find(valid.begin(), valid.end(), names[0]) == valid.end()) {
    return Usage(absl::StrCat("unknown projection '", names[0],
                              "' (known: ", absl::StrJoin(valid, ", "), ")"));
  }
  absl::Status s = cqrs::projections::ResumeProjection(pool, schema, names[0]);
  if (!s.ok()) return Fail(s);
  std::cout << names[0]
            << ": resumed from its checkpoint (the owning process goes on "
               "within a second)"
            << std::endl;
  return kOk;
}

}  // namespace

int RunProjectionsCommand(cqrs::PgPool& pool, const std::string& schema,
                          const std::vector<std::string>& args) {
  if (args.empty()) {
    return Usage(
        "missing command (list, status, rebuild, parked, "
        "replay-parked, resume)");
  }
  const std::string& command = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  bool json = false, all = false, fast = false;
  std::vector<std::string> names;
  for (const std::string& a : rest) {
    if (a == "--json" && command == "status") {
      json = true;
    } else if (a == "--all" && command == "rebuild") {
      all = true;
    } else if (a == "--fast" && command == "rebuild") {
      fast = true;
    } else if (a.rfind("--", 0) == 0 ||
               (command != "rebuild" && command != "parked" &&
                command != "replay-parked" && command != "resume")) {
      return Usage(absl::StrCat("unexpected argument '", a, "' for ", command));
    } else {
      names.push_back(a);
    }
  }
  if (command == "list") return List();
  if (command == "status") return Status(pool, schema, json);
  if (command == "rebuild") return Rebuild(pool, schema, names, all, fast);
  if (command == "parked") return Parked(pool, schema, names);
  if (command == "replay-parked") return ReplayParked(pool, schema, names);
  if (command == "resume") return Resume(pool, schema, names);
  return Usage(absl::StrCat("unknown projections command '", command, "'"));
}

int RunProjector(cqrs::PgPool& pool, const std::string& schema) {
  // Signals are taken synchronously: blocked here, before any thread
  // starts, and awaited below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto store = OpenStore(pool, schema);
  if (!store.ok()) return Fail(store.status());
  auto process_store = NewProcessStore(&pool, schema);
  if (!process_store.ok()) return Fail(process_store.status());
  cqrs::projections::ProjectionRunnerOptions options;
  options.schema = schema;
  auto runner = cqrs::projections::ProjectionRunner::Create(
      &pool, store->get(), BankRunnerProjections(process_store->get(), schema),
      options);
  if (!runner.ok()) return Fail(runner.status());
  (*runner)->Start();
  cqrs::Log(cqrs::LogLevel::kInfo, "projector running", {{"schema", schema}});
  int signal = 0;
  sigwait(&signals, &signal);
  cqrs::Log(cqrs::LogLevel::kInfo, "projector stopping", {{"signal", signal}});
  (*runner)->Stop();
  return kOk;
}

}  // namespace bank

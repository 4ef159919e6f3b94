// `APP projections ...`: operate the projections of any app (list, status,
// rebuild, parked, replay-parked, resume).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "app/internal/commands.h"
#include "app/internal/parts.h"
#include "eventstore/postgres_event_store.h"
#include "framework/error_classes.h"
#include "framework/log.h"
#include "framework/retry.h"
#include "projections/parked.h"
#include "projections/rebuild.h"
#include "projections/runner.h"
#include "projections/status.h"

namespace cqrs::app_internal {

namespace {

using projections::Projection;

int Usage(const App& app, const std::string& message) {
  std::cerr << app.name() << ": " << message << " (see `" << app.name()
            << " projections --help`)" << std::endl;
  return kUsage;
}

absl::StatusOr<std::unique_ptr<eventstore::PostgresEventStore>> OpenStore(
    PgPool& pool, const std::string& schema) {
  eventstore::PostgresEventStoreOptions options;
  options.schema = schema;
  return eventstore::PostgresEventStore::Create(&pool, std::move(options));
}

int List(const App& app) {
  for (const Projection& p : app.parts().projections) {
    std::vector<std::string> tables;
    for (const auto& t : p.tables) tables.push_back(t.name);
    std::cout << p.name << "  version " << p.version << "  tables "
              << absl::StrJoin(tables, ",") << "  events "
              << absl::StrJoin(p.event_types, ",") << "\n";
  }
  return kOk;
}

int Status(const App& app, PgPool& pool, const std::string& schema, bool json) {
  // This build's versions: a stored read model of another one is
  // "outdated".
  std::map<std::string, int> versions;
  for (const Projection& p : app.parts().projections)
    versions[p.name] = p.version;
  for (const commands::ProcessManager& pm : app.parts().process_managers) {
    versions[pm.name] = pm.version;
  }
  auto statuses =
      projections::ReadProjectionStatuses(pool, schema, schema, versions);
  if (!statuses.ok()) return Fail(app, statuses.status());
  if (json) {
    std::cout << projections::StatusesJson(*statuses,
                                           projections::StatusFields::kAll)
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
                << s.code_version << ": `" << app.name()
                << " projections rebuild " << s.name
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

  void Print(const projections::RebuildProgress& p) {
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

// True for a rebuild's error that a new attempt resumes past: the database
// went away, ended the session or timed a statement out. Not a
// cancellation, nor another rebuild of the same projection (kAborted), nor
// bad input or a bug.
bool Resumable(const absl::Status& s) {
  return IsTransientError(s) && s.code() != absl::StatusCode::kCancelled &&
         s.code() != absl::StatusCode::kAborted;
}

// How this command runs a step again that the database interrupted: while
// it fails with an error a new attempt may get past (Resumable), 1 s apart,
// for up to `retry_for`, unless interrupted. Says why on stderr as
// "<what>: <error>; <then> in 1 s".
RetryOptions Resuming(absl::Duration retry_for, std::string what,
                      std::string then) {
  RetryOptions retry;
  retry.retry_for = retry_for;
  retry.retryable = Resumable;
  retry.stop = [] { return interrupted.load(); };
  retry.before_retry = [what = std::move(what),
                        then = std::move(then)](const absl::Status& s) {
    std::fprintf(stderr, "%s: %s; %s in 1 s\n", what.c_str(),
                 std::string(s.message()).c_str(), then.c_str());
  };
  return retry;
}

int Rebuild(const App& app, PgPool& pool, const std::string& schema,
            const std::vector<std::string>& names, bool all, bool fast,
            absl::Duration retry_for) {
  std::vector<Projection> chosen;
  const std::vector<Projection>& known = app.parts().projections;
  if (all) {
    if (!names.empty())
      return Usage(app, "give projection names or --all, not both");
    chosen = known;
  } else {
    if (names.empty())
      return Usage(app, "rebuild needs projection names or --all");
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
        return Usage(
            app, absl::StrCat("unknown projection '", name,
                              "' (known: ", absl::StrJoin(valid, ", "), ")"));
      }
    }
  }
  struct sigaction action = {};
  action.sa_handler = OnInterrupt;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  for (const Projection& p : chosen) {
    ProgressPrinter printer(p.name);
    projections::RebuildOptions options;
    absl::Time last_progress = absl::Now();
    options.progress = [&](const projections::RebuildProgress& r) {
      last_progress = absl::Now();
      printer.Print(r);
    };
    options.batch_committed = [&] { last_progress = absl::Now(); };
    options.cancelled = [] { return interrupted.load(); };
    if (fast) {
      options.max_batch_duration = absl::ZeroDuration();
      options.pause_share = 0;
    }
    // A rebuild the database interrupted resumes from its last committed
    // batch (projections/rebuild.h), here in the same run: the projections
    // it already swapped are not rebuilt again, as a rerun of --all would.
    // Each attempt opens the event store anew: a fault may leave the old
    // one's connections dead.
    // The progress line has no newline: start the message on a line of
    // its own.
    RetryOptions retry = Resuming(retry_for, "\n" + p.name, "resuming");
    retry.since = [&] { return last_progress; };
    absl::Status s = RetryTransient(retry, [&]() -> absl::Status {
      auto store = OpenStore(pool, schema);
      if (!store.ok()) return store.status();
      return projections::RebuildProjection(&pool, store->get(), p, schema,
                                            options);
    });
    if (!s.ok()) {
      std::fprintf(stderr, "\n");
      return Fail(app, s);
    }
  }
  return kOk;
}

// The projection of this build called `name`, or a usage error.
absl::StatusOr<Projection> Find(const App& app, const std::string& name) {
  std::vector<std::string> valid;
  for (const Projection& p : app.parts().projections) {
    if (p.name == name) return p;
    valid.push_back(p.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown projection '", name,
                   "' (known: ", absl::StrJoin(valid, ", "), ")"));
}

int Parked(const App& app, PgPool& pool, const std::string& schema,
           const std::vector<std::string>& names) {
  if (names.size() > 1)
    return Usage(app, "parked takes at most one projection");
  std::string name;
  if (!names.empty()) {
    absl::StatusOr<Projection> p = Find(app, names[0]);
    if (!p.ok()) return Usage(app, std::string(p.status().message()));
    name = p->name;
  }
  auto parked = projections::ListParked(pool, schema, name, 10000);
  if (!parked.ok()) return Fail(app, parked.status());
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

int ReplayParked(const App& app, PgPool& pool, const std::string& schema,
                 const std::vector<std::string>& names) {
  if (names.size() != 1)
    return Usage(app, "replay-parked takes one projection");
  absl::StatusOr<Projection> p = Find(app, names[0]);
  if (!p.ok()) return Usage(app, std::string(p.status().message()));
  auto result = projections::ReplayParked(pool, *p, schema);
  if (!result.ok()) return Fail(app, result.status());
  std::cout << p->name << ": replayed " << result->replayed << ", still parked "
            << result->still_parked << std::endl;
  return result->still_parked == 0 ? kOk : kFailure;
}

int Resume(const App& app, PgPool& pool, const std::string& schema,
           const std::vector<std::string>& names) {
  if (names.size() != 1) return Usage(app, "resume takes one projection");
  std::vector<std::string> valid;
  for (const Projection& p : app.parts().projections) valid.push_back(p.name);
  for (const commands::ProcessManager& pm : app.parts().process_managers) {
    valid.push_back(pm.name);
  }
  if (std::find(valid.begin(), valid.end(), names[0]) == valid.end()) {
    return Usage(app,
                 absl::StrCat("unknown projection '", names[0],
                              "' (known: ", absl::StrJoin(valid, ", "), ")"));
  }
  absl::Status s = projections::ResumeProjection(pool, schema, names[0]);
  if (!s.ok()) return Fail(app, s);
  std::cout << names[0]
            << ": resumed from its checkpoint (the owning process goes on "
               "within a second)"
            << std::endl;
  return kOk;
}

}  // namespace

int Projections(App& app, const DatabaseFlags& db,
                const ProjectionsFlags& flags) {
  if (flags.command == "list") return List(app);
  // Only a rebuild goes on through database faults (--retry-for), from its
  // first step.
  absl::Duration retry_for = absl::ZeroDuration();
  if (flags.command == "rebuild" &&
      (!absl::ParseDuration(flags.retry_for, &retry_for) ||
       retry_for < absl::ZeroDuration())) {
    return Usage(app, absl::StrCat("--retry-for: '", flags.retry_for,
                                   "' is not a duration (5m, 30s, 0s)"));
  }
  auto database = OpenDatabase(app.name(), db, 4);
  if (!database.ok()) return Fail(app, database.status());
  PgPool& pool = *database->pool;
  if (absl::Status s =
          RetryTransient(Resuming(retry_for, "migrating", "again"),
                         [&] { return MigrateAll(pool, db.schema); });
      !s.ok()) {
    return Fail(app, s);
  }
  const std::string& schema = db.schema;
  if (flags.command == "status") return Status(app, pool, schema, flags.json);
  if (flags.command == "rebuild") {
    return Rebuild(app, pool, schema, flags.names, flags.all, flags.fast,
                   retry_for);
  }
  if (flags.command == "parked") return Parked(app, pool, schema, flags.names);
  if (flags.command == "replay-parked") {
    return ReplayParked(app, pool, schema, flags.names);
  }
  if (flags.command == "resume") return Resume(app, pool, schema, flags.names);
  return Usage(
      app, absl::StrCat("unknown projections command '", flags.command, "'"));
}

}  // namespace cqrs::app_internal

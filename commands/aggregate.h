// Event-sourced aggregates: load by folding a stream's events (from the
// latest snapshot when there is one), decide, append with the loaded version
// as the exact expected version, and on a conflict reload and decide again.
//
//   AggregateType<Account, AccountEvent> accounts(std::move(options));
//   absl::StatusOr<CommandOutcome<Account>> out = accounts.Execute(
//       store, "42", metadata, {}, [&](const Account& a, int64_t version)
//           -> absl::StatusOr<std::vector<AccountEvent>> { ... });
//
// A decision is a pure function of (state, version). It returns the events
// to append (none is a valid answer), or an error: a business-rule failure
// should be kFailedPrecondition with an error code (framework/error_code.h),
// a missing aggregate kNotFound.
//
// State cache: the type keeps the latest committed state of recently used
// aggregates in memory, so a command usually costs one round trip (the
// append). A stale entry is harmless: an append decided on it fails its
// version check and the command reloads; a rejection or a no-op decided on
// cached state is re-decided on freshly loaded state before it is returned.
// Only what committed is cached: a command on a store inside its caller's
// transaction (EventStore::InCallersTransaction(), e.g. under an
// Idempotency-Key or in a process manager) neither fills the cache nor
// leaves an entry for its stream, since the caller may still roll back.
//
// Commands on one aggregate are serialized within the process (a striped
// lock per stream, Options::serialize_in_process): they queue rather than
// race for the same version, so a conflict retry happens only when another
// process wrote the stream. Commands inside a caller's transaction skip
// that lock: the transaction holds the stream's database lock until it
// ends, and a command queued in-process behind it could otherwise wait for
// a lock its own thread holds.
//
// Conflicts inside a caller's transaction are re-decided at once, without a
// backoff: the failed append left the stream locked by this transaction, so
// the reload sees the latest commit and nobody can append in between.
// An append that reports MustRetryTransaction() is returned as it is: only
// a new transaction can succeed.
//
// Snapshots are written after a successful append when the new version
// crosses a multiple of `snapshot_every`; a failed snapshot write only
// costs a longer load later (inside a caller's transaction it runs in a
// savepoint, so it cannot abort the transaction).
//
// Thread-safety: an AggregateType is thread-safe once constructed; the
// registry and the functions it holds must be safe to call concurrently.
#ifndef COMMANDS_AGGREGATE_H_
#define COMMANDS_AGGREGATE_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "commands/command_metadata.h"
#include "commands/state_cache.h"
#include "eventstore/event_store.h"
#include "framework/error_code.h"
#include "framework/event_registry.h"

namespace cqrs::commands {

// What a command did.
template <typename State>
struct CommandOutcome {
  std::string stream_id;
  State state;          // after the command's events
  int64_t version = 0;  // the stream's version after the command
  // Position of the appended events; Position::Start() when none were
  // appended.
  eventstore::Position position;
  bool appended = false;
};

struct ExecuteOptions {
  // Run only if the aggregate is at this version (HTTP If-Match); otherwise
  // kAborted with error code "version_conflict" and nothing is retried.
  std::optional<int64_t> required_version;
  // Attempts on version conflicts before giving up with kAborted. Under
  // heavy contention on one aggregate every round has one winner, so this
  // must comfortably exceed the number of concurrent writers.
  int max_attempts = 100;
  // Backoff before retry n (after a real race, not a stale cache) is
  // uniformly random in [0, base * 2^min(n, 5)).
  absl::Duration base_backoff = absl::Milliseconds(1);
};

template <typename State>
struct SnapshotPolicy {
  int64_t every = 0;  // events between snapshots; 0 disables them
  int schema_version = 1;
  std::function<std::string(const State&)> to_json;
  std::function<absl::StatusOr<State>(absl::string_view)> from_json;
};

template <typename State, typename Event>
class AggregateType {
 public:
  using Decide = std::function<absl::StatusOr<std::vector<Event>>(
      const State&, int64_t version)>;

  struct Options {
    std::string category;  // stream ids are "<category>-<id>"
    const EventRegistry<Event>* registry = nullptr;  // must outlive this
    State initial{};
    std::function<void(State&, const Event&)> apply;
    SnapshotPolicy<State> snapshots;
    size_t cache_capacity = 100000;  // aggregates kept in memory; 0: none
    // Commands on one aggregate run one at a time in this process (a lock
    // per stream, striped), so that they queue instead of racing to append
    // the same version and retrying. Other processes are still kept apart by
    // the optimistic version check alone.
    bool serialize_in_process = true;
  };

  explicit AggregateType(Options options)
      : options_(std::move(options)),
        cache_(options_.cache_capacity),
        stripes_(options_.serialize_in_process
                     ? std::make_unique<absl::Mutex[]>(kStripes)
                     : nullptr) {}

  const std::string& category() const { return options_.category; }
  std::string StreamId(absl::string_view id) const {
    return absl::StrCat(options_.category, "-", id);
  }

  // Loads the current state from `store`. Version 0 means the aggregate has
  // no events (State is `initial`). Errors: those of the store,
  // kFailedPrecondition when the stream was deleted (a deleted aggregate
  // neither loads as new nor comes back from its snapshot), and
  // kFailedPrecondition for an event this build cannot decode.
  absl::StatusOr<std::pair<State, int64_t>> Load(eventstore::EventStore& store,
                                                 absl::string_view id) const {
    const std::string stream = StreamId(id);
    State state = options_.initial;
    int64_t version = 0;
    if (options_.snapshots.every > 0) {
      absl::StatusOr<eventstore::Snapshot> snap = store.LoadSnapshot(stream);
      if (snap.ok() &&
          snap->schema_version == options_.snapshots.schema_version) {
        absl::StatusOr<State> restored =
            options_.snapshots.from_json(snap->state);
        // An unreadable snapshot is ignored: the events are the truth.
        if (restored.ok()) {
          state = *std::move(restored);
          version = snap->stream_version;
        }
      } else if (!snap.ok() && !absl::IsNotFound(snap.status())) {
        return snap.status();
      }
    }
    constexpr int kPage = 1000;
    while (true) {
      absl::StatusOr<std::vector<eventstore::RecordedEvent>> page =
          store.ReadStream(stream, eventstore::Direction::kForward, version + 1,
                           kPage);
      if (eventstore::IsDeletedStream(page.status())) {
        return absl::FailedPreconditionError(
            absl::StrCat("stream '", stream, "' was deleted"));
      }
      if (absl::IsNotFound(page.status())) break;  // no stream (yet)
      if (!page.ok()) return page.status();
      for (const eventstore::RecordedEvent& recorded : *page) {
        absl::StatusOr<Event> event = options_.registry->Decode(
            recorded.event_type, recorded.schema_version, recorded.data);
        if (!event.ok()) {
          return absl::Status(event.status().code(),
                              absl::StrCat("stream '", stream, "' version ",
                                           recorded.stream_version, ": ",
                                           event.status().message()));
        }
        options_.apply(state, *event);
        version = recorded.stream_version;
      }
      if (page->size() < static_cast<size_t>(kPage)) break;
    }
    return std::make_pair(std::move(state), version);
  }

  // Runs `decide` on the aggregate and appends its events. Errors: whatever
  // `decide` returns (decided on fresh state); kAborted "version_conflict"
  // when `required_version` does not match or conflicts persist after
  // `max_attempts`; the store's errors otherwise.
  absl::StatusOr<CommandOutcome<State>> Execute(eventstore::EventStore& store,
                                                absl::string_view id,
                                                const CommandMetadata& metadata,
                                                const ExecuteOptions& execute,
                                                const Decide& decide) const {
    const std::string stream = StreamId(id);
    const bool in_callers_transaction = store.InCallersTransaction();
    absl::Mutex* stripe =
        stripes_ == nullptr || in_callers_transaction
            ? nullptr
            : &stripes_[absl::Hash<std::string>()(stream) % kStripes];
    absl::MutexLockMaybe serialized(stripe);
    std::optional<std::pair<State, int64_t>> loaded = cache_.Get(stream);
    bool fresh = false;
    for (int attempt = 0;; ++attempt) {
      if (!loaded.has_value()) {
        absl::StatusOr<std::pair<State, int64_t>> l = Load(store, id);
        if (!l.ok()) return l.status();
        loaded = *std::move(l);
        fresh = true;
        // Inside a transaction the load may include its own uncommitted
        // appends.
        if (!in_callers_transaction) cache_.Put(stream, *loaded);
      }
      const State& state = loaded->first;
      const int64_t version = loaded->second;

      if (execute.required_version.has_value() &&
          *execute.required_version != version) {
        if (!fresh) {
          loaded.reset();
          continue;
        }
        return WithErrorCode(absl::AbortedError(absl::StrCat(
                                 "expected version ", *execute.required_version,
                                 ", current version ", version)),
                             "version_conflict");
      }

      absl::StatusOr<std::vector<Event>> decided = decide(state, version);
      if (!decided.ok() || decided->empty()) {
        if (!fresh) {  // re-decide on the truth before answering
          loaded.reset();
          continue;
        }
        if (!decided.ok()) return decided.status();
        return CommandOutcome<State>{stream, state, version,
                                     eventstore::Position::Start(), false};
      }

      std::vector<eventstore::NewEvent> encoded;
      encoded.reserve(decided->size());
      const std::string meta = metadata.ToJson();
      for (const Event& e : *decided) {
        absl::StatusOr<EncodedEvent> enc = options_.registry->Encode(e);
        if (!enc.ok()) return enc.status();
        eventstore::NewEvent ne;
        ne.event_type = std::move(enc->type);
        ne.schema_version = enc->schema_version;
        ne.data = std::move(enc->data);
        ne.metadata = meta;
        encoded.push_back(std::move(ne));
      }
      absl::StatusOr<eventstore::AppendResult> appended =
          store.Append(stream, eventstore::ExpectedVersion::Exactly(version),
                       std::move(encoded));
      if (appended.ok()) {
        State next = state;
        for (const Event& e : *decided) options_.apply(next, e);
        if (in_callers_transaction) {
          cache_.Erase(stream);  // committed only if the caller commits
        } else {
          cache_.Put(stream, {next, appended->last_version});
        }
        MaybeSnapshot(store, stream, next, version, appended->last_version);
        return CommandOutcome<State>{stream, std::move(next),
                                     appended->last_version, appended->position,
                                     true};
      }
      if (!eventstore::ConflictActualVersion(appended.status()).has_value()) {
        return appended.status();
      }
      cache_.Erase(stream);
      if (attempt + 1 >= execute.max_attempts) {
        return WithErrorCode(
            absl::AbortedError(absl::StrCat("stream '", stream,
                                            "' kept changing; gave up after ",
                                            execute.max_attempts, " attempts")),
            "version_conflict");
      }
      // A real race, not a stale cache: back off (not while this
      // transaction holds the stream's lock; see the header comment).
      if (fresh && !in_callers_transaction) {
        const int64_t cap_us = absl::ToInt64Microseconds(
            execute.base_backoff * (int64_t{1} << std::min(attempt, 5)));
        absl::BitGen gen;  // only here: seeding it costs a system call
        absl::SleepFor(absl::Microseconds(
            absl::Uniform<int64_t>(gen, 0, std::max<int64_t>(cap_us, 1))));
      }
      loaded.reset();
    }
  }

  // Drops every cached state (tests, or after restoring a database).
  void ClearCache() const { cache_.Clear(); }

 private:
  void MaybeSnapshot(eventstore::EventStore& store, const std::string& stream,
                     const State& state, int64_t before, int64_t after) const {
    const int64_t every = options_.snapshots.every;
    if (every <= 0 || after / every == before / every) return;
    eventstore::Snapshot snapshot;
    snapshot.stream_id = stream;
    snapshot.stream_version = after;
    snapshot.schema_version = options_.snapshots.schema_version;
    snapshot.state = options_.snapshots.to_json(state);
    // Best effort by design (see the header comment).
    store.SaveSnapshot(snapshot).IgnoreError();
  }

  static constexpr size_t kStripes = 1024;

  const Options options_;
  mutable StateCache<std::pair<State, int64_t>> cache_;
  // Locks of Options::serialize_in_process; null when off.
  std::unique_ptr<absl::Mutex[]> stripes_;
};

}  // namespace cqrs::commands

#endif  // COMMANDS_AGGREGATE_H_

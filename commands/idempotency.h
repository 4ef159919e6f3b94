// Idempotent command execution: with an idempotency key, a command runs at
// most once and every retry gets the first execution's response, byte for
// byte.
//
//   ASSIGN_OR_RETURN(IdempotentResult r, idempotency->Run(
//       key, request_text, [&](eventstore::EventStore& store) {
//         return ExecuteDeposit(store, ...);   // appends through `store`
//       }));
//
// PostgresIdempotencyStore runs `execute` inside one transaction that also
// stores the response, so the events and the record commit together or not
// at all. Concurrent requests with one key queue on a transaction-scoped
// advisory lock on the key (database-wide: stores in other schemas of the
// database that see the same key at that moment queue too); the second one
// sees the first's committed record and replays it. Responses with status >= 500, and responses the command
// marks as not lasting (StoredResponse::store = false: a concurrency
// conflict or a timeout, whose retry may well succeed), are not stored:
// their transaction is rolled back, events included, so a retry runs again.
// A success is only ever returned for a transaction that committed: when a
// database error aborted the transaction (or an append asked for it to run
// again, eventstore::MustRetryTransaction), `execute` runs again in a new
// transaction, a few times for transient errors, and otherwise Run()
// returns the error, never the command's response.
// Records are kept for `retention` (default 24 hours;
// absl::InfiniteDuration() keeps them forever); PurgeExpired() deletes older
// ones, and an expired record no longer matches.
//
// The request text identifies the request (for example method, path and
// body). A retry whose text differs gets kFailedPrecondition with error code
// "idempotency_key_reused" (HTTP 422).
//
// Thread-safety: implementations are thread-safe.
#ifndef COMMANDS_IDEMPOTENCY_H_
#define COMMANDS_IDEMPOTENCY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "eventstore/event_store.h"
#include "eventstore/postgres_event_store.h"
#include "framework/pg_pool.h"

namespace cqrs::commands {

inline constexpr size_t kMaxIdempotencyKeyLength = 200;

struct StoredResponse {
  int status = 200;
  std::string body;
  // False for an outcome that a retry of the same request may not repeat
  // (a version conflict, a timeout): it is not stored, and its transaction
  // rolls back.
  bool store = true;
};

struct IdempotentResult {
  StoredResponse response;
  bool replayed = false;  // true: this is the stored first response
};

struct IdempotencyOptions {
  // How long a key answers retries: positive; absl::InfiniteDuration() keeps
  // records forever (PurgeExpired() then deletes nothing).
  absl::Duration retention = absl::Hours(24);
  // Transactions `execute` runs in before a transient database error (a
  // deadlock, a statement timeout, a lost connection, an append that must
  // run in a newer transaction) is returned.
  int max_transaction_attempts = 5;
};

// kInvalidArgument unless `key` is 1..200 printable ASCII characters.
absl::Status ValidateIdempotencyKey(absl::string_view key);

class IdempotencyStore {
 public:
  using Execute = std::function<StoredResponse(eventstore::EventStore&)>;
  virtual ~IdempotencyStore() = default;

  // Runs `execute` unless `key` was used before (then replays), all events it
  // appends through the given store committing atomically with the record.
  // `execute` may run more than once (each time in a new transaction, after
  // the previous one rolled back); it must not have effects outside the
  // store it is given.
  // Errors: kInvalidArgument for a bad key; kFailedPrecondition with code
  // "idempotency_key_reused" when the key was used with another request;
  // kUnavailable when the database failed or the transaction kept failing
  // for transient reasons; kInternal when a database error aborted the
  // transaction for a reason that does not go away; kUnknown when the
  // commit's outcome is unknown. Retrying with the same key is always safe.
  virtual absl::StatusOr<IdempotentResult> Run(absl::string_view key,
                                               absl::string_view request,
                                               const Execute& execute) = 0;

  // Deletes records older than the retention; returns how many.
  virtual absl::StatusOr<int64_t> PurgeExpired() = 0;
};

class PostgresIdempotencyStore : public IdempotencyStore {
 public:
  // Creates or upgrades the table in `schema` (component "commands").
  static absl::Status Migrate(PgPool& pool, absl::string_view schema);

  // `pool` and `store` must outlive the result; `store` must use the same
  // database. kFailedPrecondition when the schema is not migrated;
  // kInvalidArgument for a retention that is not positive or fewer than
  // one transaction attempt.
  static absl::StatusOr<std::unique_ptr<PostgresIdempotencyStore>> Create(
      PgPool* pool, eventstore::PostgresEventStore* store,
      absl::string_view schema, IdempotencyOptions options = {});

  absl::StatusOr<IdempotentResult> Run(absl::string_view key,
                                       absl::string_view request,
                                       const Execute& execute) override;
  absl::StatusOr<int64_t> PurgeExpired() override;

 private:
  PostgresIdempotencyStore(PgPool* pool, eventstore::PostgresEventStore* store,
                           std::string schema, IdempotencyOptions options);

  PgPool* const pool_;
  eventstore::PostgresEventStore* const store_;
  const std::string schema_;
  const IdempotencyOptions options_;
  const std::string lookup_sql_;
  const std::string insert_sql_;
  const std::string purge_sql_;
};

// For unit tests with the in-memory event store: runs everything under one
// lock; records do not commit atomically with the events.
class InMemoryIdempotencyStore : public IdempotencyStore {
 public:
  // `store` must outlive this object.
  explicit InMemoryIdempotencyStore(eventstore::EventStore* store,
                                    IdempotencyOptions options = {});

  absl::StatusOr<IdempotentResult> Run(absl::string_view key,
                                       absl::string_view request,
                                       const Execute& execute) override;
  absl::StatusOr<int64_t> PurgeExpired() override;

 private:
  struct Record {
    std::string request;
    StoredResponse response;
    absl::Time created_at;
  };
  eventstore::EventStore* const store_;
  const IdempotencyOptions options_;
  absl::Mutex mu_;
  std::map<std::string, Record> records_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cqrs::commands

#endif  // COMMANDS_IDEMPOTENCY_H_

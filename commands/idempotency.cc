#include "commands/idempotency.h"

#include <pqxx/pqxx>

#include <optional>

#include "absl/strings/str_cat.h"
#include "framework/error_code.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"

namespace cqrs::commands {
namespace {

constexpr char kComponent[] = "commands";
constexpr Migration kMigrations[] = {
    {1, "idempotency keys", R"sql(
CREATE TABLE {s}.idempotency_keys (
  key         text        PRIMARY KEY,
  fingerprint bytea       NOT NULL,
  status      integer     NOT NULL,
  body        text        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_idx
  ON {s}.idempotency_keys (created_at);
)sql"},
};

absl::Status KeyReused() {
  return WithErrorCode(
      absl::FailedPreconditionError(
          "this Idempotency-Key was already used with a different request"),
      "idempotency_key_reused");
}

}  // namespace

absl::Status ValidateIdempotencyKey(absl::string_view key) {
  if (key.empty() || key.size() > kMaxIdempotencyKeyLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("Idempotency-Key must be 1 to ", kMaxIdempotencyKeyLength,
                     " characters"));
  }
  for (unsigned char c : key) {
    if (c < 0x20 || c > 0x7E) {
      return absl::InvalidArgumentError(
          "Idempotency-Key must be printable ASCII");
    }
  }
  return absl::OkStatus();
}

absl::Status PostgresIdempotencyStore::Migrate(PgPool& pool,
                                               absl::string_view schema) {
  return ApplyMigrations(pool, schema, kComponent, kMigrations);
}

absl::StatusOr<std::unique_ptr<PostgresIdempotencyStore>>
PostgresIdempotencyStore::Create(PgPool* pool,
                                 eventstore::PostgresEventStore* store,
                                 absl::string_view schema,
                                 IdempotencyOptions options) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  if (options.retention <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "idempotency retention must be positive (InfiniteDuration: forever)");
  }
  if (options.max_transaction_attempts < 1) {
    return absl::InvalidArgumentError(
        "max_transaction_attempts must be at least 1");
  }
  ASSIGN_OR_RETURN(int version, MigratedVersion(*pool, schema, kComponent));
  if (version < kMigrations[std::size(kMigrations) - 1].version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "schema '", schema, "' has no idempotency table: run the migration"));
  }
  return std::unique_ptr<PostgresIdempotencyStore>(
      new PostgresIdempotencyStore(pool, store, std::string(schema), options));
}

PostgresIdempotencyStore::PostgresIdempotencyStore(
    PgPool* pool, eventstore::PostgresEventStore* store, std::string schema,
    IdempotencyOptions options)
    : pool_(pool),
      store_(store),
      schema_(std::move(schema)),
      options_(options),
      // $3: the retention in seconds; NULL keeps records forever.
      lookup_sql_(WithSchema(
          "SELECT fingerprint = sha256($2), status, body "
          "FROM {s}.idempotency_keys WHERE key = $1 AND ($3::float8 IS NULL "
          "OR created_at > now() - make_interval(secs => $3::float8))",
          schema_)),
      insert_sql_(WithSchema(
          "INSERT INTO {s}.idempotency_keys (key, fingerprint, status, body) "
          "VALUES ($1, sha256($2), $3, $4) ON CONFLICT (key) DO UPDATE SET "
          "fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, "
          "body = EXCLUDED.body, created_at = now()",
          schema_)),
      purge_sql_(
          WithSchema("DELETE FROM {s}.idempotency_keys "
                     "WHERE created_at <= now() - make_interval(secs => $1)",
                     schema_)) {}

absl::StatusOr<IdempotentResult> PostgresIdempotencyStore::Run(
    absl::string_view key, absl::string_view request, const Execute& execute) {
  RETURN_IF_ERROR(ValidateIdempotencyKey(key));
  const std::string k(key);
  const pqxx::binarystring fingerprint(request.data(), request.size());
  const std::optional<double> retention_s =
      options_.retention == absl::InfiniteDuration()
          ? std::nullopt
          : std::optional<double>(absl::ToDoubleSeconds(options_.retention));
  for (int attempt = 1;; ++attempt) {
    IdempotentResult result;
    bool reused = false;
    absl::Status failure;  // what stopped the transaction from committing
    std::optional<eventstore::Position> appended;
    int64_t appended_events = 0;
    RETURN_IF_ERROR(pool_->Run(
        PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
          pqxx::work tx(conn);
          // Requests with one key run one after the other.
          tx.exec_params(
              "SELECT pg_advisory_xact_lock(hashtextextended($1, 2))", k);
          pqxx::result found =
              tx.exec_params(lookup_sql_, k, fingerprint, retention_s);
          if (!found.empty()) {
            tx.commit();
            if (!found[0][0].as<bool>()) {
              reused = true;
              return absl::OkStatus();
            }
            result.replayed = true;
            result.response.status = found[0][1].as<int>();
            result.response.body = found[0][2].as<std::string>();
            return absl::OkStatus();
          }
          auto in_tx = store_->InTransaction(tx);
          result.response = execute(*in_tx);
          if (in_tx->failed()) {
            // Whatever the command answered, nothing it did can commit.
            failure = in_tx->failure();
            tx.abort();
            return absl::OkStatus();
          }
          if (!result.response.store || result.response.status >= 500) {
            tx.abort();
            return absl::OkStatus();
          }
          tx.exec_params(insert_sql_, k, fingerprint, result.response.status,
                         result.response.body);
          tx.commit();
          appended = in_tx->last_appended();
          appended_events = in_tx->appended_events();
          return absl::OkStatus();
        }));
    if (reused) return KeyReused();
    if (!failure.ok()) {
      const bool transient = eventstore::MustRetryTransaction(failure) ||
                             IsTransientError(failure);
      if (transient && attempt < options_.max_transaction_attempts) continue;
      // The failure's text describes the database: it goes to the log
      // detail of a 5xx, never into a client's response.
      return transient ? absl::UnavailableError(absl::StrCat(
                             "the command's transaction could not commit (",
                             failure.message(), "); retry with the same key"))
                       : absl::InternalError(
                             absl::StrCat("the command's transaction failed: ",
                                          failure.message()));
    }
    if (appended.has_value()) {
      store_->NotifyCommitted(*appended, appended_events);
    }
    return result;
  }
}

absl::StatusOr<int64_t> PostgresIdempotencyStore::PurgeExpired() {
  if (options_.retention == absl::InfiniteDuration()) return 0;
  int64_t deleted = 0;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        pqxx::nontransaction tx(conn);
        deleted = tx.exec_params(purge_sql_,
                                 absl::ToDoubleSeconds(options_.retention))
                      .affected_rows();
        return absl::OkStatus();
      }));
  return deleted;
}

InMemoryIdempotencyStore::InMemoryIdempotencyStore(
    eventstore::EventStore* store, IdempotencyOptions options)
    : store_(store), options_(options) {}

absl::StatusOr<IdempotentResult> InMemoryIdempotencyStore::Run(
    absl::string_view key, absl::string_view request, const Execute& execute) {
  RETURN_IF_ERROR(ValidateIdempotencyKey(key));
  absl::MutexLock lock(&mu_);
  auto it = records_.find(std::string(key));
  if (it != records_.end() &&
      it->second.created_at > absl::Now() - options_.retention) {
    if (it->second.request != request) return KeyReused();
    return IdempotentResult{it->second.response, true};
  }
  IdempotentResult result{execute(*store_), false};
  if (result.response.store && result.response.status < 500) {
    records_[std::string(key)] =
        Record{std::string(request), result.response, absl::Now()};
  }
  return result;
}

absl::StatusOr<int64_t> InMemoryIdempotencyStore::PurgeExpired() {
  absl::MutexLock lock(&mu_);
  int64_t deleted = 0;
  const absl::Time cutoff = absl::Now() - options_.retention;
  for (auto it = records_.begin(); it != records_.end();) {
    if (it->second.created_at <= cutoff) {
      it = records_.erase(it);
      ++deleted;
    } else {
      ++it;
    }
  }
  return deleted;
}

}  // namespace cqrs::commands

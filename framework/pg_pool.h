// A bounded pool of PostgreSQL connections, and the one place that turns
// libpqxx exceptions into absl::Status.
//
//   PgPoolOptions options;
//   options.conninfo = url;
//   ASSIGN_OR_RETURN(auto pool, cqrs::PgPool::Create(std::move(options)));
//   absl::Status s = pool->Run(cqrs::PgPool::Retry::kOnBrokenConnection,
//       [&](pqxx::connection& c) { pqxx::nontransaction tx(c); ...;
//                                  return absl::OkStatus(); });
//
// Each connection is used by one caller at a time (a pqxx::connection is one
// thread's world). Connections are opened lazily up to `max_connections`;
// one that breaks is closed and replaced by a fresh one on a later Acquire().
//
// This header is for PostgreSQL-facing code only: it exposes libpqxx types.
//
// Thread-safety: PgPool is thread-safe. A Lease must stay on one thread at a
// time and must not outlive its pool.
#ifndef FRAMEWORK_PG_POOL_H_
#define FRAMEWORK_PG_POOL_H_

#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <pqxx/connection>
#include <pqxx/transaction_base>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "framework/error_classes.h"

namespace cqrs {

// Translates the exception currently being handled (call only inside a catch
// block) into a Status, most-derived libpqxx type first:
//   in_doubt_error / statement_completion_unknown -> kUnknown (the commit may
//     or may not have happened: never retry blindly),
//   broken_connection (and sessions ended by the server, and errors libpq
//     raises itself, without a SQLSTATE: a connection failing mid-statement)
//     -> kUnavailable,
//   serialization_failure / deadlock_detected -> kAborted,
//   lock_not_available (lock_timeout) -> kDeadlineExceeded,
//   query_canceled (statement_timeout, pg_cancel_backend) -> kCancelled,
//   unique_violation -> kAlreadyExists,
//   other integrity violations / missing tables -> kFailedPrecondition,
//   data_exception -> kInvalidArgument,
//   anything else -> kInternal.
// The message carries the SQLSTATE and the first line of the server's text,
// never the query, its parameters, the server's DETAIL/CONTEXT lines (which
// quote rows and SQL) or the connection string. Every status made here
// carries a payload that marks it as a database error
// (framework/error_classes.h: IsDatabaseError()), so that responses to
// clients can leave its text out.
absl::Status StatusFromCurrentPgException();

struct PgPoolOptions {
  // libpq connection string or URL. Never logged (it may hold a password).
  std::string conninfo;
  int max_connections = 16;
  // How long Acquire() waits for a free connection before kUnavailable.
  absl::Duration acquire_timeout = absl::Seconds(10);
  // Runs once on every new connection, e.g. to prepare statements. An
  // exception thrown here fails the Acquire() that opened the connection.
  std::function<void(pqxx::connection&)> on_connect;
};

class PgPool {
 public:
  // A connection checked out of the pool; returned to it on destruction.
  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) = delete;
    Lease(const Lease&) = delete;
    ~Lease();

    pqxx::connection& operator*() const { return *conn_; }
    pqxx::connection* operator->() const { return conn_.get(); }
    // Closes the connection instead of returning it to the pool.
    void MarkBroken() { broken_ = true; }

   private:
    friend class PgPool;
    Lease(PgPool* pool, std::unique_ptr<pqxx::connection> conn)
        : pool_(pool), conn_(std::move(conn)) {}

    PgPool* pool_;
    std::unique_ptr<pqxx::connection> conn_;
    bool broken_ = false;
  };

  enum class Retry {
    kNever,
    // Run again once on a fresh connection when the connection turns out to
    // be broken (kUnavailable). Only for work that is safe to repeat: reads,
    // or writes that are idempotent by construction.
    kOnBrokenConnection,
  };

  struct Stats {
    int open = 0;     // connections currently open
    int in_use = 0;   // of those, checked out
    int waiting = 0;  // callers blocked in Acquire()
  };

  // Returns kInvalidArgument for a non-positive pool size. Does not connect:
  // the first Acquire() does.
  static absl::StatusOr<std::unique_ptr<PgPool>> Create(PgPoolOptions options);
  ~PgPool();

  // Checks out a connection, opening one if none is idle and the pool is not
  // full. Returns kUnavailable when the server cannot be reached or no
  // connection frees up within `acquire_timeout`; retry later.
  absl::StatusOr<Lease> Acquire();

  // Runs `fn(pqxx::connection&) -> absl::Status` on a pooled connection.
  // Exceptions from `fn` become a Status (StatusFromCurrentPgException); a
  // connection that broke is discarded.
  template <typename Fn>
  absl::Status Run(Retry retry, Fn&& fn);

  Stats stats() const;

  // The connection string, for components that need a dedicated session
  // outside the pool (LISTEN, advisory-lock ownership). Never log it.
  const std::string& conninfo() const { return options_.conninfo; }

 private:
  explicit PgPool(PgPoolOptions options) : options_(std::move(options)) {}
  void Release(std::unique_ptr<pqxx::connection> conn, bool broken);
  absl::StatusOr<std::unique_ptr<pqxx::connection>> Connect();

  const PgPoolOptions options_;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  int in_use_ ABSL_GUARDED_BY(mu_) = 0;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
};

// Runs `fn(tx)` (returning absl::Status, possibly throwing) inside a
// savepoint of `tx`: when it fails, only its own work is undone and `tx`
// stays usable. (libpqxx 6.4's pqxx::subtransaction does not open its
// savepoint before exec_params() or exec_prepared(), so a failure there
// aborts the whole transaction: do not use it.) Returns what `fn` returned,
// or its exception translated. When the savepoint cannot be rolled back (a
// lost connection), `*tx_lost` is set: `tx` is then unusable.
template <typename Fn>
absl::Status InSavepoint(pqxx::transaction_base& tx, Fn&& fn,
                         bool* tx_lost = nullptr);

// After work on `conn` failed: ends any transaction block the work left
// open, so that the connection goes back to the pool outside a transaction.
// (A statement cancelled while BEGIN runs leaves the session in an aborted
// transaction block that no pqxx::work object owns.) Returns false when the
// connection is unusable.
bool ResetAfterFailure(pqxx::connection& conn);

// True when the server has ended the session of `conn`, an idle connection
// (no statement running), while it waited: a restart, pg_terminate_backend,
// a network failure. Its socket then has something to read (the server's
// last message, the end of the stream), which an idle session is otherwise
// never sent unless it LISTENs. Costs one poll(), no round trip. Checking
// this before using a connection that sat idle saves a statement that would
// fail (docs/event-store.md, "Connections").
bool SessionEndedWhileIdle(const pqxx::connection_base& conn);

// Runs `fn` and translates any exception; marks the lease broken when the
// connection is gone, so that the pool replaces it.
template <typename Fn>
absl::Status RunOnLease(PgPool::Lease& lease, Fn&& fn) {
  absl::Status status;
  try {
    status = fn(*lease);
  } catch (...) {
    status = StatusFromCurrentPgException();
  }
  if (absl::IsUnavailable(status) || absl::IsUnknown(status) ||
      !lease->is_open() || (!status.ok() && !ResetAfterFailure(*lease))) {
    lease.MarkBroken();
  }
  return status;
}

namespace pg_pool_internal {
// The statements around InSavepoint()'s work; they may throw.
void BeginSavepoint(pqxx::transaction_base& tx);
void ReleaseSavepoint(pqxx::transaction_base& tx);
// Returns false when the rollback failed.
bool RollbackSavepoint(pqxx::transaction_base& tx);
}  // namespace pg_pool_internal

template <typename Fn>
absl::Status InSavepoint(pqxx::transaction_base& tx, Fn&& fn, bool* tx_lost) {
  absl::Status status;
  bool begun = false;
  try {
    pg_pool_internal::BeginSavepoint(tx);
    begun = true;
    status = fn(tx);
    if (status.ok()) pg_pool_internal::ReleaseSavepoint(tx);
  } catch (...) {
    status = StatusFromCurrentPgException();
  }
  if (!status.ok() && (!begun || !pg_pool_internal::RollbackSavepoint(tx))) {
    if (tx_lost != nullptr) *tx_lost = true;
  }
  return status;
}

template <typename Fn>
absl::Status PgPool::Run(Retry retry, Fn&& fn) {
  const int attempts = retry == Retry::kOnBrokenConnection ? 2 : 1;
  absl::Status status;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    absl::StatusOr<Lease> lease = Acquire();
    if (!lease.ok()) return lease.status();
    status = RunOnLease(*lease, fn);
    if (!absl::IsUnavailable(status)) return status;
  }
  return status;
}

}  // namespace cqrs

#endif  // FRAMEWORK_PG_POOL_H_

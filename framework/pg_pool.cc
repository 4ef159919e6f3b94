#include "framework/pg_pool.h"

#include <dlfcn.h>
#include <libpq-fe.h>
#include <poll.h>

#include <pqxx/except>
#include <pqxx/nontransaction>
#include <pqxx/transaction_base>

#include "absl/strings/str_cat.h"

// libpqxx 6.4 (Debian 12) leaks the result of every statement whose
// connection is lost while it runs: connection_base::make_result() asks
// libpq for the client encoding before it takes the result over, libpq
// answers -1 for a lost connection, libpqxx throws broken_connection, and
// the result (about 2.3 kB) is never freed. libpqxx 7 fixed the order.
//
// This definition takes the place of libpq's for the whole process (an
// executable's symbols come first when libpqxx's references are bound; the
// linker exports it because libpqxx refers to it, and this file is linked
// into every program that uses PgPool). It answers as libpq does, except
// that a lost connection gets SQL_ASCII (0) instead of -1: libpqxx then
// wraps the result, and its next check throws the same broken_connection,
// with the result freed on the way. The encoding is only used to read
// values, and an error result has none.
extern "C" int PQclientEncoding(const PGconn* conn) {
  using Original = int (*)(const PGconn*);
  static const Original original =
      reinterpret_cast<Original>(dlsym(RTLD_NEXT, "PQclientEncoding"));
  if (original == nullptr) return -1;  // no libpq loaded: nothing to mend
  const int encoding = original(conn);
  // -1 with a connection: it is not (or no longer) CONNECTION_OK.
  return encoding == -1 && conn != nullptr ? 0 : encoding;
}

namespace cqrs {
namespace {

// The first line of an exception's text: PostgreSQL's primary message.
// The DETAIL, HINT and CONTEXT lines that follow quote rows and SQL text,
// which must not travel with a Status (to a log or a client).
std::string FirstLine(const char* what) {
  std::string message = what;
  message = message.substr(0, message.find('\n'));
  while (!message.empty() && message.back() == ' ') message.pop_back();
  return message;
}

std::string Describe(const std::exception& e) {
  const std::string message = FirstLine(e.what());
  // libpqxx 6.4 derives some error classes (transaction_rollback) from
  // failure rather than sql_error; those carry no SQLSTATE.
  const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e);
  if (sql == nullptr) return absl::StrCat("postgres error: ", message);
  return absl::StrCat("postgres error ", sql->sqlstate(), ": ", message);
}

// SQLSTATE class 57 (operator intervention: pg_terminate_backend, server
// shutdown) and class 08 (connection exception) mean the session is gone.
bool IsSessionGone(const std::string& sqlstate) {
  return sqlstate.rfind("57P", 0) == 0 || sqlstate.rfind("08", 0) == 0;
}

// StatusFromCurrentPgException() without the database-error mark.
absl::Status TranslateCurrentPgException() {
  try {
    throw;
  } catch (const pqxx::in_doubt_error& e) {
    return absl::UnknownError(
        absl::StrCat("commit outcome unknown (connection lost during commit): ",
                     FirstLine(e.what())));
  } catch (const pqxx::statement_completion_unknown& e) {
    return absl::UnknownError(
        absl::StrCat("statement outcome unknown: ", FirstLine(e.what())));
  } catch (const pqxx::broken_connection& e) {
    return absl::UnavailableError(
        absl::StrCat("database connection lost: ", FirstLine(e.what())));
  } catch (const pqxx::serialization_failure& e) {
    return absl::AbortedError(Describe(e));
  } catch (const pqxx::deadlock_detected& e) {
    return absl::AbortedError(Describe(e));
  } catch (const pqxx::unique_violation& e) {
    return absl::AlreadyExistsError(Describe(e));
  } catch (const pqxx::integrity_constraint_violation& e) {
    return absl::FailedPreconditionError(Describe(e));
  } catch (const pqxx::undefined_table& e) {
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(e), " (is the schema migrated?)"));
  } catch (const pqxx::undefined_function& e) {
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(e), " (is the schema migrated?)"));
  } catch (const pqxx::data_exception& e) {
    return absl::InvalidArgumentError(Describe(e));
  } catch (const pqxx::insufficient_privilege& e) {
    return absl::PermissionDeniedError(Describe(e));
  } catch (const pqxx::insufficient_resources& e) {
    return absl::ResourceExhaustedError(Describe(e));
  } catch (const pqxx::sql_error& e) {
    if (IsSessionGone(e.sqlstate())) {
      return absl::UnavailableError(Describe(e));
    }
    // No SQLSTATE: libpq's own error, not the server's; in the middle of a
    // statement that is the connection failing ("server closed the
    // connection unexpectedly" when the server crashed), which libpqxx 6.4
    // throws as a plain sql_error. (Had it happened during COMMIT, libpqxx
    // would have thrown in_doubt_error, above.)
    if (e.sqlstate().empty()) {
      return absl::UnavailableError(
          absl::StrCat("database connection lost: ", FirstLine(e.what())));
    }
    if (e.sqlstate() == "57014") return absl::CancelledError(Describe(e));
    if (e.sqlstate() == "55P03") {
      return absl::DeadlineExceededError(Describe(e));
    }
    return absl::InternalError(Describe(e));
  } catch (const pqxx::failure& e) {
    return absl::InternalError(
        absl::StrCat("postgres failure: ", FirstLine(e.what())));
  } catch (const std::exception& e) {
    return absl::InternalError(FirstLine(e.what()));
  } catch (...) {
    return absl::InternalError("unknown exception");
  }
}

}  // namespace

absl::Status StatusFromCurrentPgException() {
  return MarkDatabaseError(TranslateCurrentPgException());
}

namespace pg_pool_internal {

void BeginSavepoint(pqxx::transaction_base& tx) {
  tx.exec("SAVEPOINT cqrs_savepoint");
}

void ReleaseSavepoint(pqxx::transaction_base& tx) {
  tx.exec("RELEASE SAVEPOINT cqrs_savepoint");
}

bool RollbackSavepoint(pqxx::transaction_base& tx) {
  try {
    tx.exec("ROLLBACK TO SAVEPOINT cqrs_savepoint");
    tx.exec("RELEASE SAVEPOINT cqrs_savepoint");
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace pg_pool_internal

bool SessionEndedWhileIdle(const pqxx::connection_base& conn) {
  const int fd = conn.sock();
  if (fd < 0) return true;
  pollfd p{};
  p.fd = fd;
  p.events = POLLIN | POLLRDHUP;
  // Readable, hung up or in error: lost. Nothing, or poll() itself failing
  // (EINTR): let the statement find out.
  return ::poll(&p, 1, 0) > 0;
}

bool ResetAfterFailure(pqxx::connection& conn) {
  try {
    // Outside a transaction block this only draws a warning, which
    // libpqxx does not print.
    pqxx::nontransaction tx(conn);
    tx.exec("ROLLBACK");
    return true;
  } catch (...) {
    return false;
  }
}

PgPool::Lease::Lease(Lease&& other) noexcept
    : pool_(other.pool_),
      conn_(std::move(other.conn_)),
      broken_(other.broken_) {
  other.pool_ = nullptr;
}

PgPool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->Release(std::move(conn_), broken_);
}

absl::StatusOr<std::unique_ptr<PgPool>> PgPool::Create(PgPoolOptions options) {
  if (options.max_connections <= 0) {
    return absl::InvalidArgumentError("pool size must be positive");
  }
  return std::unique_ptr<PgPool>(new PgPool(std::move(options)));
}

PgPool::~PgPool() {
  absl::MutexLock lock(&mu_);
  idle_.clear();
}

absl::StatusOr<std::unique_ptr<pqxx::connection>> PgPool::Connect() {
  try {
    auto conn = std::make_unique<pqxx::connection>(options_.conninfo);
    if (options_.on_connect) options_.on_connect(*conn);
    return conn;
  } catch (...) {
    absl::Status status = StatusFromCurrentPgException();
    // A failure to connect is a reachability problem whatever libpqxx calls it.
    if (status.code() == absl::StatusCode::kInternal) {
      return absl::UnavailableError(status.message());
    }
    return status;
  }
}

absl::StatusOr<PgPool::Lease> PgPool::Acquire() {
  // Idle connections found lost; closed when this returns, after the lock.
  std::vector<std::unique_ptr<pqxx::connection>> lost;
  {
    absl::MutexLock lock(&mu_);
    ++waiting_;
    auto can_proceed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !idle_.empty() || open_ < options_.max_connections;
    };
    const bool ready = mu_.AwaitWithTimeout(absl::Condition(&can_proceed),
                                            options_.acquire_timeout);
    --waiting_;
    if (!ready) {
      return absl::UnavailableError(
          absl::StrCat("no database connection free within ",
                       absl::FormatDuration(options_.acquire_timeout),
                       " (pool size ", options_.max_connections, ")"));
    }
    ++in_use_;
    while (!idle_.empty()) {
      std::unique_ptr<pqxx::connection> conn = std::move(idle_.back());
      idle_.pop_back();
      if (!SessionEndedWhileIdle(*conn)) return Lease(this, std::move(conn));
      // Ended by the server while idle: closed (outside the lock) and
      // replaced, instead of failing the caller's first statement.
      --open_;
      lost.push_back(std::move(conn));
    }
    ++open_;  // reserve the slot; connect outside the lock
  }
  absl::StatusOr<std::unique_ptr<pqxx::connection>> conn = Connect();
  if (!conn.ok()) {
    absl::MutexLock lock(&mu_);
    --open_;
    --in_use_;
    return conn.status();
  }
  return Lease(this, *std::move(conn));
}

void PgPool::Release(std::unique_ptr<pqxx::connection> conn, bool broken) {
  std::unique_ptr<pqxx::connection> to_close;
  {
    absl::MutexLock lock(&mu_);
    --in_use_;
    if (broken || conn == nullptr || !conn->is_open()) {
      --open_;
      to_close = std::move(conn);
    } else {
      idle_.push_back(std::move(conn));
    }
  }
  // Closing talks to the server; do it outside the lock.
  to_close.reset();
}

PgPool::Stats PgPool::stats() const {
  absl::MutexLock lock(&mu_);
  return Stats{open_, in_use_, waiting_};
}

}  // namespace cqrs

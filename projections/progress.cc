#include "projections/progress.h"

#include <exception>
#include <utility>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "framework/migrations.h"
#include "framework/pg_listener.h"
#include "framework/status_macros.h"
#include "projections/internal/common.h"
#include "projections/sql_array.h"

namespace cqrs::projections {

using eventstore::Position;

std::string ProgressChannel(absl::string_view schema) {
  return absl::StrCat(schema, "_projections");
}

void NotifyProgress(pqxx::transaction_base& tx, absl::string_view schema,
                    absl::string_view name, const Position& position) {
  tx.exec_params("SELECT pg_notify($1, $2)", ProgressChannel(schema),
                 absl::StrCat(name, " ", position.ToToken()));
}

ProgressNotifier::ProgressNotifier(std::string conninfo,
                                   absl::string_view schema)
    : conninfo_(std::move(conninfo)), channel_(ProgressChannel(schema)) {
  thread_ = std::thread([this] { Loop(); });
}

ProgressNotifier::~ProgressNotifier() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void ProgressNotifier::Notify(absl::string_view name,
                              const Position& position) {
  absl::MutexLock lock(&mu_);
  Position& pending = pending_[name];
  if (pending < position) pending = position;
}

void ProgressNotifier::Loop() {
  std::unique_ptr<pqxx::connection> conn;
  while (true) {
    SqlArray payloads;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !pending_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      // What is pending is still sent when stopping: the last checkpoints
      // of a process wake their readers too.
      if (pending_.empty()) return;
      for (const auto& [name, position] : pending_) {
        payloads.Add(absl::StrCat(name, " ", position.ToToken()));
      }
      pending_.clear();
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
      try {
        if (conn == nullptr || !conn->is_open() ||
            SessionEndedWhileIdle(*conn)) {
          conn = std::make_unique<pqxx::connection>(conninfo_);
          // A notification is not durable anyway: its commit need not
          // wait for a WAL flush while holding the notify lock.
          pqxx::nontransaction(*conn).exec("SET synchronous_commit = off");
        }
        pqxx::nontransaction tx(*conn);
        tx.exec_params("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                       channel_, payloads.literal());
        break;
      } catch (const std::exception&) {
        conn.reset();
      }
    }
  }
}

absl::StatusOr<std::vector<Progress>> ReadCheckpoints(
    PgPool& pool, absl::string_view schema) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  ASSIGN_OR_RETURN(int migrated, MigratedVersion(pool, schema, "projections"));
  if (migrated == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("no projections in schema '", schema, "'"));
  }
  std::vector<Progress> out;
  RETURN_IF_ERROR(
      pool.Run(PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        pqxx::read_transaction tx(conn);
        for (const auto& row :
             tx.exec(absl::StrCat("SELECT name, position_xid::text, "
                                  "position_gp FROM ",
                                  schema, ".projections"))) {
          out.push_back(
              {row[0].as<std::string>(),
               {projections_internal::ParseXid(row[1]), row[2].as<int64_t>()}});
        }
        return absl::OkStatus();
      }));
  return out;
}

struct ProgressListener::State {
  std::unique_ptr<PgListener> listener;
};

absl::StatusOr<std::unique_ptr<ProgressListener>> ProgressListener::Create(
    const std::string& conninfo, absl::string_view schema) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  auto state = std::make_unique<State>();
  ASSIGN_OR_RETURN(state->listener,
                   PgListener::Create(conninfo, ProgressChannel(schema),
                                      absl::StrCat("cqrs progress ", schema)));
  return std::unique_ptr<ProgressListener>(
      new ProgressListener(std::move(state)));
}

ProgressListener::ProgressListener(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

ProgressListener::~ProgressListener() = default;

absl::StatusOr<std::vector<Progress>> ProgressListener::Wait(
    absl::Duration timeout) {
  ASSIGN_OR_RETURN(std::vector<std::string> payloads,
                   state_->listener->Wait(timeout));
  std::vector<Progress> seen;
  for (const std::string& payload : payloads) {
    const size_t space = payload.rfind(' ');
    if (space == std::string::npos || space == 0) continue;  // not ours
    absl::StatusOr<Position> p =
        Position::FromToken(absl::string_view(payload).substr(space + 1));
    if (!p.ok()) continue;
    seen.push_back({payload.substr(0, space), *p});
  }
  return seen;
}

int ProgressListener::BackendPid() const {
  return state_->listener->BackendPid();
}

}  // namespace cqrs::projections

#include "projections/progress.h"

#include <algorithm>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "projections/internal/common.h"

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
  class Receiver : public pqxx::notification_receiver {
   public:
    Receiver(pqxx::connection_base& conn, const std::string& channel,
             std::vector<Progress>* seen)
        : pqxx::notification_receiver(conn, channel), seen_(seen) {}
    void operator()(const std::string& payload, int) override {
      const size_t space = payload.rfind(' ');
      if (space == std::string::npos || space == 0) return;
      absl::StatusOr<Position> p =
          Position::FromToken(absl::string_view(payload).substr(space + 1));
      if (!p.ok()) return;  // not ours: ignore
      seen_->push_back({payload.substr(0, space), *p});
    }

   private:
    std::vector<Progress>* seen_;
  };

  std::unique_ptr<pqxx::connection> conn;
  std::vector<Progress> seen;
  std::unique_ptr<Receiver> receiver;
};

absl::StatusOr<std::unique_ptr<ProgressListener>> ProgressListener::Create(
    const std::string& conninfo, absl::string_view schema) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  auto state = std::make_unique<State>();
  try {
    state->conn = std::make_unique<pqxx::connection>(conninfo);
    state->receiver = std::make_unique<State::Receiver>(
        *state->conn, ProgressChannel(schema), &state->seen);
    // LISTEN is sent lazily: make it take effect before returning, so that
    // nothing committed after Create() goes unheard.
    state->conn->get_notifs();
    pqxx::nontransaction tx(*state->conn);
    tx.exec_params("SELECT set_config('application_name', $1, false)",
                   absl::StrCat("cqrs progress ", schema));
  } catch (...) {
    absl::Status status = StatusFromCurrentPgException();
    if (status.code() == absl::StatusCode::kInternal) {
      return absl::UnavailableError(status.message());
    }
    return status;
  }
  return std::unique_ptr<ProgressListener>(
      new ProgressListener(std::move(state)));
}

ProgressListener::ProgressListener(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

ProgressListener::~ProgressListener() {
  // The receiver unregisters from the connection: destroy it first.
  state_->receiver.reset();
  state_->conn.reset();
}

absl::StatusOr<std::vector<Progress>> ProgressListener::Wait(
    absl::Duration timeout) {
  try {
    if (!state_->conn->is_open()) {
      return absl::UnavailableError("listening connection is closed");
    }
    state_->conn->get_notifs();
    if (state_->seen.empty()) {
      const int64_t micros =
          std::max<int64_t>(0, absl::ToInt64Microseconds(timeout));
      state_->conn->await_notification(static_cast<long>(micros / 1000000),
                                       static_cast<long>(micros % 1000000));
    }
    if (!state_->conn->is_open()) {
      return absl::UnavailableError("listening connection was lost");
    }
  } catch (...) {
    return StatusFromCurrentPgException();
  }
  std::vector<Progress> seen;
  seen.swap(state_->seen);
  return seen;
}

int ProgressListener::BackendPid() const { return state_->conn->backendpid(); }

}  // namespace cqrs::projections

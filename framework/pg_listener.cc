#include "framework/pg_listener.h"

#include <algorithm>
#include <cstdint>

#include <pqxx/pqxx>

#include "framework/pg_pool.h"

namespace cqrs {

struct PgListener::State {
  class Receiver : public pqxx::notification_receiver {
   public:
    Receiver(pqxx::connection_base& conn, const std::string& channel,
             std::vector<std::string>* payloads)
        : pqxx::notification_receiver(conn, channel), payloads_(payloads) {}
    void operator()(const std::string& payload, int) override {
      payloads_->push_back(payload);
    }

   private:
    std::vector<std::string>* payloads_;
  };

  std::unique_ptr<pqxx::connection> conn;
  std::vector<std::string> payloads;
  std::unique_ptr<Receiver> receiver;
};

absl::StatusOr<std::unique_ptr<PgListener>> PgListener::Create(
    const std::string& conninfo, const std::string& channel,
    absl::string_view application_name) {
  auto state = std::make_unique<State>();
  try {
    state->conn = std::make_unique<pqxx::connection>(conninfo);
    state->receiver = std::make_unique<State::Receiver>(*state->conn, channel,
                                                        &state->payloads);
    // LISTEN is sent lazily: make it take effect before returning, so that
    // nothing committed after Create() goes unheard.
    state->conn->get_notifs();
    pqxx::nontransaction tx(*state->conn);
    tx.exec_params("SELECT set_config('application_name', $1, false)",
                   std::string(application_name));
  } catch (...) {
    absl::Status status = StatusFromCurrentPgException();
    if (status.code() == absl::StatusCode::kInternal) {
      return absl::UnavailableError(status.message());
    }
    return status;
  }
  return std::unique_ptr<PgListener>(new PgListener(std::move(state)));
}

PgListener::PgListener(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

PgListener::~PgListener() {
  // The receiver unregisters from the connection: destroy it first.
  state_->receiver.reset();
  state_->conn.reset();
}

absl::StatusOr<std::vector<std::string>> PgListener::Wait(
    absl::Duration timeout) {
  try {
    if (!state_->conn->is_open()) {
      return absl::UnavailableError("listening connection is closed");
    }
    state_->conn->get_notifs();
    if (state_->payloads.empty()) {
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
  std::vector<std::string> payloads;
  payloads.swap(state_->payloads);
  return payloads;
}

int PgListener::BackendPid() const { return state_->conn->backendpid(); }

}  // namespace cqrs

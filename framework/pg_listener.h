// Follows one PostgreSQL NOTIFY channel on a dedicated session.
//
//   ASSIGN_OR_RETURN(auto listener,
//                    PgListener::Create(url, "bank_events", "cqrs listener"));
//   ASSIGN_OR_RETURN(std::vector<std::string> payloads,
//                    listener->Wait(absl::Seconds(1)));
//
// Notifications are delivered only for transactions that commit, after the
// commit; one sent while the session was down is lost, so callers re-read
// whatever state the notifications announce after reconnecting.
//
// Thread-safety: one thread at a time.
#ifndef FRAMEWORK_PG_LISTENER_H_
#define FRAMEWORK_PG_LISTENER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace cqrs {

class PgListener {
 public:
  // Connects, names the session `application_name` (so operators and tests
  // can tell it apart) and LISTENs on `channel`, in effect when this
  // returns. kUnavailable when the database is unreachable.
  static absl::StatusOr<std::unique_ptr<PgListener>> Create(
      const std::string& conninfo, const std::string& channel,
      absl::string_view application_name);
  ~PgListener();

  // Waits up to `timeout` unless notifications are pending, and returns the
  // payloads received, oldest first (empty on timeout). kUnavailable when
  // the connection is lost: create a new listener.
  absl::StatusOr<std::vector<std::string>> Wait(absl::Duration timeout);

  // The server process id of the session.
  int BackendPid() const;

 private:
  struct State;
  explicit PgListener(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace cqrs

#endif  // FRAMEWORK_PG_LISTENER_H_

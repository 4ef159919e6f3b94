// A position in the global commit order of an event store.
//
//   cqrs::eventstore::Position p = batch.next;          // resume point
//   std::string token = p.ToToken();                      // "812.40771"
//   ASSIGN_OR_RETURN(auto again, Position::FromToken(token));
//
// A position is the pair (transaction id, global position) of an event: the
// store's commit order is the lexicographic order of these pairs (see
// docs/event-store.md). Position::Start() is before every event. Tokens are
// opaque to clients; only this class parses them.
//
// Thread-safety: a value type; no shared state.
#ifndef EVENTSTORE_POSITION_H_
#define EVENTSTORE_POSITION_H_

#include <cstdint>
#include <string>
#include <tuple>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cqrs::eventstore {

struct Position {
  // The id (xid8) of the transaction that committed the event.
  uint64_t transaction_id = 0;
  // The event's global position (unique, increasing in insert order, with
  // possible gaps).
  int64_t global_position = 0;

  static Position Start() { return Position{}; }

  // "<transaction_id>.<global_position>" in decimal.
  std::string ToToken() const;

  // Parses a token made by ToToken(). Returns kInvalidArgument for anything
  // else (empty, signs, spaces, overflow, missing parts); the caller should
  // report bad input.
  static absl::StatusOr<Position> FromToken(absl::string_view token);

  friend bool operator<(const Position& a, const Position& b) {
    return std::tie(a.transaction_id, a.global_position) <
           std::tie(b.transaction_id, b.global_position);
  }
  friend bool operator==(const Position& a, const Position& b) {
    return a.transaction_id == b.transaction_id &&
           a.global_position == b.global_position;
  }
  friend bool operator!=(const Position& a, const Position& b) {
    return !(a == b);
  }
  friend bool operator<=(const Position& a, const Position& b) {
    return !(b < a);
  }
  friend bool operator>(const Position& a, const Position& b) { return b < a; }
  friend bool operator>=(const Position& a, const Position& b) {
    return !(a < b);
  }
};

}  // namespace cqrs::eventstore

#endif  // EVENTSTORE_POSITION_H_

// Fuzzes eventstore::Position::FromToken() (eventstore/position.h), which
// reads position tokens from clients (?after=, cursors in feeds).
//
// Properties: nothing crashes; a position that parses has a non-negative
// global position, and its ToToken() parses back to the same position.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "eventstore/position.h"

namespace {

void Require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view token(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<cqrs::eventstore::Position> position =
      cqrs::eventstore::Position::FromToken(token);
  if (!position.ok()) return 0;
  Require(position->global_position >= 0);
  const std::string again = position->ToToken();
  absl::StatusOr<cqrs::eventstore::Position> reparsed =
      cqrs::eventstore::Position::FromToken(again);
  Require(reparsed.ok());
  Require(*reparsed == *position);
  Require(reparsed->ToToken() == again);
  return 0;
}

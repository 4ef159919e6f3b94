// Fuzzes the SSE resume point: the bytes are the value of a Last-Event-ID
// header, read from an http::Request and parsed with
// eventstore::Position::FromToken() exactly as GET /events/stream does
// (app/events_route.cc, which the harness cannot link without the whole
// app). Header values are arbitrary bytes from the client.
//
// Properties: nothing crashes; the header comes back unchanged from the
// request; an event id that parses is the token of that position.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "eventstore/position.h"
#include "framework/http/message.h"

namespace {

void Require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string value(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<cqrs::http::Request> request = cqrs::http::Request::Create(
      "GET", "/events/stream", {{"last-event-id", value}}, "");
  if (!request.ok()) return 0;
  absl::optional<absl::string_view> last = request->Header("Last-Event-ID");
  Require(last.has_value() && *last == value);
  if (last->empty()) return 0;
  absl::StatusOr<cqrs::eventstore::Position> after =
      cqrs::eventstore::Position::FromToken(*last);
  if (!after.ok()) return 0;
  Require(cqrs::eventstore::Position::FromToken(after->ToToken()).ok());
  Require(*cqrs::eventstore::Position::FromToken(after->ToToken()) == *after);
  return 0;
}

// Fuzzes the pagination cursor a client sends back in ?after=:
// queries::DecodeCursor() and ParsePageRequest() (queries/pagination.h).
// Cursors are not signed, so any bytes may arrive.
//
// Properties: nothing crashes; a decoded key has the requested number of
// parts, and EncodeCursor() of it decodes to the same key; a key part is
// valid UTF-8 without NUL bytes, as every sort key read from PostgreSQL is
// (it goes back to PostgreSQL as a text parameter, and to the handler).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "framework/json.h"
#include "queries/pagination.h"

namespace {

void Require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first byte picks the number of key parts the list expects (1..3;
  // "0", "1" and "2" in the text seeds).
  const size_t parts = 1 + data[0] % 3;
  const std::string cursor(reinterpret_cast<const char*>(data) + 1, size - 1);

  absl::StatusOr<std::vector<std::string>> key =
      cqrs::queries::DecodeCursor(cursor, parts);
  absl::StatusOr<cqrs::queries::PageRequest> page =
      cqrs::queries::ParsePageRequest(std::nullopt, cursor, parts);
  Require(key.ok() == page.ok());
  if (!key.ok()) return 0;
  Require(key->size() == parts);
  Require(page->after == *key);
  for (const std::string& part : *key) {
    Require(part.find('\0') == std::string::npos);
    Require(cqrs::IsValidUtf8(part));
  }
  absl::StatusOr<std::vector<std::string>> again =
      cqrs::queries::DecodeCursor(cqrs::queries::EncodeCursor(*key), parts);
  Require(again.ok() && *again == *key);
  return 0;
}

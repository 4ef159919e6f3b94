// Fuzzes JSON request bodies: http::ParseJsonBody() and the field readers
// of framework/http/json_body.h, and json::Decode<T>() for a shape with
// every kind of field (framework/json_shape.h).
//
// Properties: nothing crashes; a body with a NUL byte is refused; what
// Decode() accepts, Encode() writes as JSON that Decode() accepts again and
// encodes to the same text (a decoded value survives a round trip).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "framework/http/json_body.h"
#include "framework/json_shape.h"
#include "rapidjson/document.h"

namespace {

void Require(bool condition) {
  if (!condition) std::abort();
}

struct Address {
  std::string city;
  std::optional<std::string> zip;
  static auto Json() {
    return cqrs::json::Shape<Address>("Address")
        .Field("city", &Address::city, cqrs::json::Length(1, 40))
        .Field("zip", &Address::zip, cqrs::json::Pattern("^[0-9]{5}$"));
  }
};

struct Everything {
  int64_t amount = 0;
  int32_t count = 0;
  double rate = 0;
  bool active = false;
  std::string currency;
  std::optional<std::string> note;
  absl::Time at;
  std::vector<std::string> tags;
  std::map<std::string, int64_t> limits;
  std::optional<Address> address;
  std::vector<std::optional<Address>> others;
  static auto Json() {
    return cqrs::json::Shape<Everything>("Everything")
        .Field("amount", &Everything::amount, cqrs::json::Range(1, 1000000))
        .Field("count", &Everything::count)
        .Field("rate", &Everything::rate, cqrs::json::Range(0.0, 1.0))
        .Field("active", &Everything::active)
        .Field("currency", &Everything::currency,
               cqrs::json::OneOf({"EUR", "USD"}))
        .Field("note", &Everything::note, cqrs::json::Length(0, 200))
        .Field("at", &Everything::at)
        .Field("tags", &Everything::tags, cqrs::json::Items(0, 8))
        .Field("limits", &Everything::limits, cqrs::json::Items(0, 4))
        .Field("address", &Everything::address)
        .Field("others", &Everything::others);
  }
};

void FuzzFieldReaders(const rapidjson::Document& doc) {
  constexpr cqrs::http::LengthBounds kIdLength{1, 64};
  (void)cqrs::http::RequiredString(doc, "id", kIdLength);
  (void)cqrs::http::OptionalString(doc, "note");
  constexpr cqrs::http::Int64Bounds kAmount{1, 1000};
  (void)cqrs::http::RequiredInt64(doc, "amount", kAmount);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view body(reinterpret_cast<const char*>(data), size);
  const bool has_nul = body.find('\0') != absl::string_view::npos;

  rapidjson::Document doc;
  if (cqrs::http::ParseJsonBody(body, &doc).ok()) {
    Require(!has_nul);
    Require(doc.IsObject());
    FuzzFieldReaders(doc);
  }

  absl::StatusOr<Everything> decoded = cqrs::json::Decode<Everything>(body);
  if (!decoded.ok()) return 0;
  Require(!has_nul);
  std::string encoded = cqrs::json::Encode(*decoded);
  absl::StatusOr<Everything> again = cqrs::json::Decode<Everything>(encoded);
  Require(again.ok());
  Require(cqrs::json::Encode(*again) == encoded);
  return 0;
}

#include "framework/json.h"

#include <cstring>

#include "rapidjson/reader.h"
#include "rapidjson/stream.h"

namespace cqrs {
namespace {

bool IsJsonSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// Accepts every value except strings holding U+0000 (PostgreSQL's jsonb
// rejects that escape) and nesting deeper than kMaxJsonDepth (PostgreSQL's
// parser runs out of stack): every store must refuse the same input.
struct CheckingHandler
    : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, CheckingHandler> {
  bool String(const char* str, rapidjson::SizeType length, bool) {
    return std::memchr(str, '\0', length) == nullptr;
  }
  bool Key(const char* str, rapidjson::SizeType length, bool copy) {
    return String(str, length, copy);
  }
  bool StartObject() { return ++depth <= kMaxJsonDepth; }
  bool EndObject(rapidjson::SizeType) {
    --depth;
    return true;
  }
  bool StartArray() { return ++depth <= kMaxJsonDepth; }
  bool EndArray(rapidjson::SizeType) {
    --depth;
    return true;
  }

  int depth = 0;
};

}  // namespace

bool IsJsonObject(absl::string_view text) {
  size_t first = 0;
  while (first < text.size() && IsJsonSpace(text[first])) ++first;
  if (first == text.size() || text[first] != '{') return false;

  rapidjson::MemoryStream stream(text.data(), text.size());
  rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream>
      input(stream);
  rapidjson::Reader reader;
  CheckingHandler handler;
  constexpr unsigned kFlags =
      rapidjson::kParseValidateEncodingFlag | rapidjson::kParseStopWhenDoneFlag;
  if (reader.Parse<kFlags>(input, handler).IsError()) return false;
  // kParseStopWhenDoneFlag stops after the first value: only whitespace may
  // follow it.
  for (size_t pos = input.Tell(); pos < text.size(); ++pos) {
    if (!IsJsonSpace(text[pos])) return false;
  }
  return true;
}

}  // namespace cqrs

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
// rejects that escape), lone surrogates (RapidJSON decodes a lone "\udc00"
// escape into the bytes of a surrogate code point, which PostgreSQL refuses
// when it reads the value) and nesting deeper than kMaxJsonDepth
// (PostgreSQL's parser runs out of stack): every store must refuse the same
// input.
struct CheckingHandler
    : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, CheckingHandler> {
  bool String(const char* str, rapidjson::SizeType length, bool) {
    return std::memchr(str, '\0', length) == nullptr &&
           IsValidUtf8(absl::string_view(str, length));
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

bool IsValidUtf8(absl::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    // The allowed range of the second byte depends on the first (RFC 3629
    // table): it excludes overlong forms, surrogates and > U+10FFFF.
    int extra = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      extra = 1;
    } else if (c == 0xE0) {
      extra = 2;
      lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      extra = 2;
    } else if (c == 0xED) {
      extra = 2;
      hi = 0x9F;
    } else if (c == 0xF0) {
      extra = 3;
      lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
      extra = 3;
    } else if (c == 0xF4) {
      extra = 3;
      hi = 0x8F;
    } else {
      return false;
    }
    if (end - p <= extra) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (int i = 2; i <= extra; ++i) {
      if (p[i] < 0x80 || p[i] > 0xBF) return false;
    }
    p += extra + 1;
  }
  return true;
}

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

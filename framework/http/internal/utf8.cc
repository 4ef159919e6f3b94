#include "framework/http/internal/utf8.h"

#include <cstdint>

namespace cqrs {
namespace http_internal {
namespace {

// Returns the length of the well-formed sequence starting at `pos`, or 0.
size_t SequenceLength(absl::string_view text, size_t pos) {
  const auto byte = [&](size_t i) -> uint8_t {
    return static_cast<uint8_t>(text[i]);
  };
  const auto continuation = [&](size_t i) {
    return i < text.size() && (byte(i) & 0xC0) == 0x80;
  };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) return continuation(pos + 1) ? 2 : 0;
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (!continuation(pos + 1) || !continuation(pos + 2)) return 0;
    const uint8_t b1 = byte(pos + 1);
    if (b0 == 0xE0 && b1 < 0xA0) return 0;  // Overlong.
    if (b0 == 0xED && b1 > 0x9F) return 0;  // Surrogate.
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (!continuation(pos + 1) || !continuation(pos + 2) ||
        !continuation(pos + 3)) {
      return 0;
    }
    const uint8_t b1 = byte(pos + 1);
    if (b0 == 0xF0 && b1 < 0x90) return 0;  // Overlong.
    if (b0 == 0xF4 && b1 > 0x8F) return 0;  // Above U+10FFFF.
    return 4;
  }
  return 0;
}

}  // namespace

bool IsValidUtf8(absl::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const size_t n = SequenceLength(text, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

std::string ToValidUtf8(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const size_t n = SequenceLength(text, pos);
    if (n == 0) {
      out.append("\xEF\xBF\xBD");
      ++pos;
    } else {
      out.append(text.data() + pos, n);
      pos += n;
    }
  }
  return out;
}

}  // namespace http_internal
}  // namespace cqrs

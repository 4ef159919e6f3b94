#include "framework/uuid.h"

#include <chrono>
#include <cstdint>

#include "absl/random/random.h"

namespace cqrs {
namespace {

constexpr char kHex[] = "0123456789abcdef";

bool IsHexDigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
         (c >= 'A' && c <= 'F');
}

}  // namespace

std::string NewUuid() {
  // One generator per thread: absl::BitGen is not thread-safe, and a
  // thread-local one needs no lock.
  thread_local absl::BitGen gen;
  const uint64_t unix_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  uint8_t bytes[16];
  for (int i = 0; i < 6; ++i) {
    bytes[i] = static_cast<uint8_t>(unix_ms >> (8 * (5 - i)));
  }
  const uint64_t r1 = absl::Uniform<uint64_t>(gen);
  const uint64_t r2 = absl::Uniform<uint64_t>(gen);
  for (int i = 0; i < 2; ++i)
    bytes[6 + i] = static_cast<uint8_t>(r1 >> (8 * i));
  for (int i = 0; i < 8; ++i)
    bytes[8 + i] = static_cast<uint8_t>(r2 >> (8 * i));
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0F) | 0x70);  // version 7
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3F) | 0x80);  // RFC variant

  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 0x0F]);
  }
  return out;
}

bool IsUuid(absl::string_view text) {
  if (text.size() != 36) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return false;
    } else if (!IsHexDigit(text[i])) {
      return false;
    }
  }
  return true;
}

}  // namespace cqrs

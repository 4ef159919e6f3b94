#include "framework/uuid.h"

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"

namespace cqrs {
namespace {

int64_t UnixMillisNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The 48-bit Unix millisecond timestamp of a version 7 UUID.
int64_t TimestampOf(const std::string& uuid) {
  const std::string hex = uuid.substr(0, 8) + uuid.substr(9, 4);
  uint64_t value = 0;
  REQUIRE(absl::SimpleHexAtoi(hex, &value));
  return static_cast<int64_t>(value);
}

TEST_CASE("NewUuid returns canonical lower-case version 7 UUIDs",
          "[framework]") {
  const int64_t before = UnixMillisNow();
  const std::string id = NewUuid();
  const int64_t after = UnixMillisNow();
  INFO(id);

  REQUIRE(id.size() == 36);
  CHECK(IsUuid(id));
  for (size_t i = 0; i < id.size(); ++i) {
    INFO("index " << i);
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      CHECK(id[i] == '-');
    } else {
      const bool lower_hex =
          (id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f');
      CHECK(lower_hex);
    }
  }
  CHECK(id[14] == '7');  // version
  CHECK((id[19] == '8' || id[19] == '9' || id[19] == 'a' ||
         id[19] == 'b'));  // RFC 9562 variant: 10xx

  const int64_t timestamp = TimestampOf(id);
  CHECK(timestamp >= before);
  CHECK(timestamp <= after);
}

TEST_CASE("NewUuid sets version and variant on every call", "[framework]") {
  for (int i = 0; i < 1000; ++i) {
    const std::string id = NewUuid();
    INFO(id);
    REQUIRE(IsUuid(id));
    REQUIRE(id[14] == '7');
    REQUIRE(std::string("89ab").find(id[19]) != std::string::npos);
  }
}

TEST_CASE("NewUuid is unique over many calls", "[framework]") {
  constexpr int kCount = 200000;
  absl::flat_hash_set<std::string> seen;
  seen.reserve(kCount);
  for (int i = 0; i < kCount; ++i) seen.insert(NewUuid());
  CHECK(seen.size() == static_cast<size_t>(kCount));
}

TEST_CASE("NewUuid is unique across threads", "[framework]") {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50000;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&ids, t] {
      ids[t].reserve(kPerThread);
      for (int i = 0; i < kPerThread; ++i) ids[t].push_back(NewUuid());
    });
  }
  for (std::thread& thread : threads) thread.join();

  absl::flat_hash_set<std::string> seen;
  for (const auto& batch : ids) seen.insert(batch.begin(), batch.end());
  CHECK(seen.size() == static_cast<size_t>(kThreads * kPerThread));
}

TEST_CASE("IsUuid accepts the canonical form in either case", "[framework]") {
  const std::string text =
      GENERATE(std::string("00000000-0000-0000-0000-000000000000"),
               std::string("ffffffff-ffff-ffff-ffff-ffffffffffff"),
               std::string("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"),
               std::string("0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f6"),
               std::string("0192F3C4-5B6A-7C8D-9E0F-A1B2C3D4E5F6"),
               std::string("0192f3C4-5b6A-7c8D-9e0F-a1B2c3D4e5F6"),
               // Version 4 and other versions are accepted too.
               std::string("f47ac10b-58cc-4372-a567-0e02b2c3d479"),
               std::string("6ba7b810-9dad-11d1-80b4-00c04fd430c8"));
  INFO(text);
  CHECK(IsUuid(text));
}

TEST_CASE("IsUuid rejects anything but the canonical form", "[framework]") {
  const std::string text =
      GENERATE(std::string(""), std::string("not-a-uuid"),
               // 35 and 37 characters.
               std::string("0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f"),
               std::string("0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f60"),
               // No hyphens, 32 hex digits.
               std::string("0192f3c45b6a7c8d9e0fa1b2c3d4e5f6"),
               // Hyphens misplaced.
               std::string("0192f3c45-b6a-7c8d-9e0f-a1b2c3d4e5f6"),
               std::string("0192f3c4-5b6a7-c8d-9e0f-a1b2c3d4e5f6"),
               std::string("0192f3c4-5b6a-7c8d-9e0fa-1b2c3d4e5f6"),
               std::string("0192f3c4-5b6a-7c8d-9e0f--1b2c3d4e5f6"),
               // Non-hex digits.
               std::string("0192f3g4-5b6a-7c8d-9e0f-a1b2c3d4e5f6"),
               std::string("0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5fz"),
               std::string("0192f3c4 5b6a 7c8d 9e0f a1b2c3d4e5f6"),
               std::string("0192f3c4_5b6a_7c8d_9e0f_a1b2c3d4e5f6"),
               // Decorations.
               std::string("{0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f6}"),
               std::string("urn:uuid:0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f6"),
               std::string(" 0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f"),
               std::string("0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f\n"),
               std::string("0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f\0", 36));
  INFO("\"" << text << "\"");
  CHECK_FALSE(IsUuid(text));
}

}  // namespace
}  // namespace cqrs

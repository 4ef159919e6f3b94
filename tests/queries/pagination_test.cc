#include "queries/pagination.h"

#include <catch2/catch.hpp>

#include "framework/http/status_mapping.h"

namespace cqrs::queries {
namespace {

TEST_CASE("cursors round-trip any key", "[queries]") {
  for (const std::vector<std::string>& key :
       std::vector<std::vector<std::string>>{
           {"acc-1", "42"}, {"", ""}, {"a:b:c", "1:2"}, {"ü€", "\n\t\""}}) {
    const std::string cursor = EncodeCursor(key);
    CHECK(cursor.find_first_of("+/=&?# ") == std::string::npos);
    auto decoded = DecodeCursor(cursor, key.size());
    REQUIRE(decoded.ok());
    CHECK(*decoded == key);
  }
}

TEST_CASE("bad cursors and limits are invalid_request", "[queries]") {
  for (const char* cursor :
       {"", "!!!", "MQ", "eDox", "MTk5OnRvbyBzaG9ydA", "MjphYg"}) {
    INFO(cursor);
    auto decoded = DecodeCursor(cursor, 2);
    REQUIRE(!decoded.ok());
    CHECK(absl::IsInvalidArgument(decoded.status()));
    CHECK(http::ErrorCodeOf(decoded.status()) == "invalid_request");
  }
  CHECK(!DecodeCursor(std::string(2000, 'A'), 2).ok());
  // A cursor of another list (another number of key parts).
  CHECK(!DecodeCursor(EncodeCursor({"a"}), 2).ok());

  for (const char* limit : {"0", "-1", "501", "abc", "1.5", "", "1000000"}) {
    INFO(limit);
    auto page = ParsePageRequest(std::string(limit), std::nullopt, 2);
    REQUIRE(!page.ok());
    CHECK(http::ErrorCodeOf(page.status()) == "invalid_request");
  }
}

// Found by fuzz/cursor_fuzzer.cc: a forged cursor whose key part was not
// UTF-8 decoded, and PostgreSQL then failed on the text parameter.
TEST_CASE("a cursor whose key is not valid text is invalid_request",
          "[queries]") {
  for (const std::vector<std::string>& key :
       std::vector<std::vector<std::string>>{{"2024-03\xad", "x"},
                                             {std::string("a\0b", 3), "x"},
                                             {"\xc0\x80", ""}}) {
    auto decoded = DecodeCursor(EncodeCursor(key), 2);
    REQUIRE(!decoded.ok());
    CHECK(http::ErrorCodeOf(decoded.status()) == "invalid_request");
    CHECK(!ParsePageRequest(std::nullopt, EncodeCursor(key), 2).ok());
  }
}

TEST_CASE("limit defaults to 50 and accepts 1 to 500", "[queries]") {
  auto page = ParsePageRequest(std::nullopt, std::nullopt, 2);
  REQUIRE(page.ok());
  CHECK(page->limit == 50);
  CHECK(page->after.empty());
  for (int n : {1, 50, 500}) {
    page = ParsePageRequest(std::to_string(n), EncodeCursor({"x", "7"}), 2);
    REQUIRE(page.ok());
    CHECK(page->limit == n);
    CHECK(page->after == std::vector<std::string>{"x", "7"});
  }
}

}  // namespace
}  // namespace cqrs::queries

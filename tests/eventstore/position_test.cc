#include "eventstore/position.h"

#include <cstdint>
#include <limits>
#include <string>

#include <catch2/catch.hpp>

#include "absl/status/status.h"

namespace cqrs::eventstore {
namespace {

constexpr uint64_t kMaxXid = std::numeric_limits<uint64_t>::max();
constexpr int64_t kMaxPos = std::numeric_limits<int64_t>::max();

TEST_CASE("Position token round trip", "[eventstore]") {
  const Position p =
      GENERATE(Position::Start(), Position{1, 1}, Position{812, 40771},
               Position{7, 0}, Position{0, 9}, Position{kMaxXid, kMaxPos});
  const std::string token = p.ToToken();
  INFO(token);
  absl::StatusOr<Position> parsed = Position::FromToken(token);
  INFO(parsed.status());
  REQUIRE(parsed.ok());
  CHECK(parsed->transaction_id == p.transaction_id);
  CHECK(parsed->global_position == p.global_position);
  CHECK(*parsed == p);
}

TEST_CASE("Position token is decimal transaction id dot position",
          "[eventstore]") {
  CHECK(Position::Start().ToToken() == "0.0");
  CHECK(Position{812, 40771}.ToToken() == "812.40771");
  CHECK(Position{kMaxXid, kMaxPos}.ToToken() ==
        "18446744073709551615.9223372036854775807");

  absl::StatusOr<Position> parsed = Position::FromToken("12.345");
  REQUIRE(parsed.ok());
  CHECK(parsed->transaction_id == 12u);
  CHECK(parsed->global_position == 345);
}

TEST_CASE("Position::FromToken rejects malformed tokens", "[eventstore]") {
  const std::string token = GENERATE(
      std::string(""), std::string("1"), std::string("1."), std::string(".1"),
      std::string("."), std::string("-1.2"), std::string("1.-2"),
      std::string("+1.2"), std::string("1.+2"), std::string("1.2.3"),
      std::string(" 1.2"), std::string("1.2 "), std::string("1 .2"),
      std::string("1. 2"), std::string("1,2"), std::string("a.b"),
      std::string("1.b"), std::string("a.2"), std::string("1.2x"),
      std::string("0x1.2"), std::string("1e3.2"), std::string("1.2\n"),
      std::string("1\0.2", 4), std::string("1.2\0", 4),
      // One past the largest transaction id (uint64).
      std::string("18446744073709551616.1"),
      // One past the largest global position (int64).
      std::string("1.9223372036854775808"),
      std::string("1.18446744073709551615"),
      std::string("99999999999999999999999.1"),
      std::string("1.99999999999999999999999"));
  INFO("token: \"" << token << "\"");
  absl::StatusOr<Position> parsed = Position::FromToken(token);
  CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Position orders by transaction id, then global position",
          "[eventstore]") {
  const Position a{1, 5};
  const Position b{1, 6};
  const Position c{2, 1};  // later transaction, lower global position

  CHECK(a < b);
  CHECK(b < c);
  CHECK(a < c);
  CHECK_FALSE(b < a);
  CHECK_FALSE(c < b);
  CHECK_FALSE(a < a);

  CHECK(c > b);
  CHECK_FALSE(a > b);
  CHECK_FALSE(a > a);

  CHECK(a <= a);
  CHECK(a <= b);
  CHECK_FALSE(c <= b);

  CHECK(a >= a);
  CHECK(c >= a);
  CHECK_FALSE(a >= b);

  CHECK(a == Position{1, 5});
  CHECK_FALSE(a == b);
  CHECK_FALSE(a == Position{2, 5});
  CHECK(a != b);
  CHECK(a != Position{2, 5});
  CHECK_FALSE(a != Position{1, 5});

  CHECK(Position::Start() == Position{0, 0});
  CHECK(Position::Start() < Position{0, 1});
  CHECK(Position::Start() < a);
}

}  // namespace
}  // namespace cqrs::eventstore

// rewards: the bank's loyalty program. Members earn a point for every whole
// unit (100 cents) they transfer out of their account, and redeem points
// for rewards. It learns of transfers from the bank's events on RabbitMQ
// alone, never over HTTP (docs/choreography.md):
//
//   queue rewards.transfers <- exchange bank.events,
//     key account.bank.account.transfer_debited.v1
//     (the CloudEvent subject is the account id, which is the member id)
//
//   POST /members/{id}/earn    {"points": 3, "reason": "transfer",
//                               "transfer": "t-1"}          PointsEarned
//   POST /members/{id}/redeem  {"points": 2, "reward": "mug"} PointsRedeemed
//   GET  /members/{id}         points, earned, redeemed, history
//
// Both events are published ("rewards.member.points_earned.v1", ...), so
// `rewards serve --amqp-url URL --amqp-declare-exchange` relays them to the
// exchange rewards.events for whoever follows the program.
//
//   rewards serve | project | migrate | projections ... (--help)
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "app/app.h"
#include "rapidjson/document.h"

namespace json = cqrs::json;
constexpr int64_t kMaxPoints = 1000000000000;
constexpr int64_t kCentsPerPoint = 100;

// Events; PointsEarned is also the body of the command that records it.
struct PointsEarned {
  int64_t points = 0;
  std::string reason;                   // "transfer", "goodwill", ...
  std::optional<std::string> transfer;  // the bank's transfer, if any
  static auto Json() {
    return json::Shape<PointsEarned>()
        .Field("points", &PointsEarned::points, json::Range(0, kMaxPoints))
        .Field("reason", &PointsEarned::reason, json::Length(1, 64))
        .Field("transfer", &PointsEarned::transfer);
  }
};
struct PointsRedeemed {
  int64_t points = 0;
  std::string reward;
  static auto Json() {
    return json::Shape<PointsRedeemed>()
        .Field("points", &PointsRedeemed::points, json::Range(1, kMaxPoints))
        .Field("reward", &PointsRedeemed::reward, json::Length(1, 64));
  }
};

struct Member {
  int64_t points = 0;
};
using Members = cqrs::AggregateOf<Member, PointsEarned, PointsRedeemed>;

// The bank's public event bank.account.transfer_debited.v1 (its data:
// {"transfer_id", "amount"} in cents) as the earn command's body. Only the
// two members used are read, so that the bank may add others; a message
// without them can never earn anything and is dead-lettered.
absl::StatusOr<std::string> EarnFromTransfer(
    const cqrs::integration::amqp::Delivery& message) {
  rapidjson::Document data;
  data.Parse(message.body.data(), message.body.size());
  if (data.HasParseError() || !data.IsObject()) {
    return absl::InvalidArgumentError(
        "a transfer_debited event's data must be a JSON object");
  }
  auto amount = data.FindMember("amount");
  auto transfer = data.FindMember("transfer_id");
  if (amount == data.MemberEnd() || !amount->value.IsInt64() ||
      amount->value.GetInt64() < 1 || transfer == data.MemberEnd() ||
      !transfer->value.IsString()) {
    return absl::InvalidArgumentError(
        "a transfer_debited event needs \"amount\" (a positive integer) and "
        "\"transfer_id\" (a string)");
  }
  return json::Encode(PointsEarned{amount->value.GetInt64() / kCentsPerPoint,
                                   "transfer", transfer->value.GetString()});
}

int main(int argc, char** argv) {
  cqrs::AppOptions options;
  options.description =
      "rewards: the bank's loyalty program, points for the bank's transfers "
      "read from RabbitMQ";
  cqrs::App app("rewards", options);
  app.Event<PointsEarned>("PointsEarned")
      .Event<PointsRedeemed>("PointsRedeemed");
  app.Publish<PointsEarned>("rewards.member.points_earned")
      .Publish<PointsRedeemed>("rewards.member.points_redeemed");
  Members& members =
      app.Aggregate<Member, PointsEarned, PointsRedeemed>("member")
          .On<PointsEarned>(
              [](Member& m, const PointsEarned& e) { m.points += e.points; })
          .On<PointsRedeemed>(
              [](Member& m, const PointsRedeemed& e) { m.points -= e.points; });

  app.Command<PointsEarned>(
      "POST", "/members/{id}/earn", members,
      [](const Member& m, const PointsEarned& c) -> Members::Decision {
        if (c.points == 0) return Members::Emit();  // a transfer under 1.00
        if (m.points > kMaxPoints - c.points) {
          return cqrs::Reject("too_many_points", "at most 10^12 points");
        }
        return Members::Emit(c);
      });
  app.Command<PointsRedeemed>(
      "POST", "/members/{id}/redeem", members,
      [](const Member& m, const PointsRedeemed& c) -> Members::Decision {
        if (c.points > m.points) {
          return cqrs::Reject("insufficient_points",
                              absl::StrCat("the member has ", m.points));
        }
        return Members::Emit(c);
      });
  // The bank's transfers, from the broker: the CloudEvent subject (the
  // account id) is the member; the message id makes each transfer count
  // once however often it is delivered.
  app.Consume("rewards.transfers", "POST", "/members/{id}/earn")
      .Bind("bank.events", "account.bank.account.transfer_debited.v1")
      .Body(EarnFromTransfer);

  const char* kAdd =
      "INSERT INTO {member_points} AS t VALUES ($1, $2, $3, $4, 1) "
      "ON CONFLICT (member) DO UPDATE SET points = t.points + $2, "
      "earned = t.earned + $3, redeemed = t.redeemed + $4, "
      "history = t.history + 1";
  app.Projection("member_points")
      .Table("member_points",
             "CREATE TABLE {table} (member text PRIMARY KEY, points bigint "
             "NOT NULL, earned bigint NOT NULL, redeemed bigint NOT NULL, "
             "history bigint NOT NULL)")
      .On<PointsEarned>([=](cqrs::ReadModel& db, const auto& e) {
        db.Exec(kAdd, e.id, e.event.points, e.event.points, 0);
      })
      .On<PointsRedeemed>([=](cqrs::ReadModel& db, const auto& e) {
        db.Exec(kAdd, e.id, -e.event.points, 0, e.event.points);
      });
  app.Query("/members/{id}", {"member_points"}, [](cqrs::QueryContext& q) {
    return q.One(
        "SELECT member AS id, points, earned, redeemed, history "
        "FROM {member_points} WHERE member = $1",
        {q.Param("id")}, "member_not_found");
  });
  return app.Main(argc, argv);
}

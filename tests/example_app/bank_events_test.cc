// The bank's published events as another system sees them: a consumer that
// knows nothing but GET /events rebuilds every account's balance and every
// transfer's outcome from the pages alone (after deposits, withdrawals and
// transfers, some refused and some failed) and agrees with the bank's own
// queries; and GET /asyncapi.json describes every published type with the
// schema of its data.
#include <map>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "eventstore/position.h"
#include "example_app/account.h"
#include "example_app/bank_app.h"
#include "example_app/transfer.h"
#include "framework/json_shape.h"
#include "rapidjson/document.h"
#include "tests/example_app/service_fixture.h"
#include "tests/support/wait.h"

namespace bank {
namespace {

namespace json = cqrs::json;
using cqrs::eventstore::Position;
using cqrs::http_test::ClientResponse;

// Request bodies, encoded by their shapes.
struct AmountBody {
  int64_t amount = 0;
  static auto Json() {
    return json::Shape<AmountBody>().Field("amount", &AmountBody::amount);
  }
};
struct TransferBody {
  std::string from;
  std::string to;
  int64_t amount = 0;
  std::string transfer_id;
  static auto Json() {
    return json::Shape<TransferBody>()
        .Field("from", &TransferBody::from)
        .Field("to", &TransferBody::to)
        .Field("amount", &TransferBody::amount)
        .Field("transfer_id", &TransferBody::transfer_id);
  }
};

ClientResponse Move(ServiceFixture& f, const std::string& id,
                    const char* command, int64_t amount) {
  return f.Post(absl::StrCat("/accounts/", id, "/", command),
                json::Encode(AmountBody{amount}));
}

std::string String(const rapidjson::Value& v, const char* member) {
  REQUIRE(v.HasMember(member));
  REQUIRE(v[member].IsString());
  return v[member].GetString();
}

// The later of two position tokens ("" is before every position).
std::string Later(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  auto pa = Position::FromToken(a);
  auto pb = Position::FromToken(b);
  REQUIRE(pa.ok());
  REQUIRE(pb.ok());
  return *pa < *pb ? b : a;
}

// What the consumer knows, from the CloudEvents alone.
struct ConsumerAccount {
  std::string owner;
  std::string currency;
  int64_t balance = 0;
  bool closed = false;
  int64_t version = 0;  // streamversion of the last event
};
struct ConsumerTransfer {
  std::string from;
  std::string to;
  int64_t amount = 0;
  std::string status;
  std::string reason;
};

class Consumer {
 public:
  // Reads every page there is now (limit 4, so there are many); returns
  // how many events it read.
  int ReadNewPages(ServiceFixture& f) {
    int read = 0;
    while (true) {
      std::string target = "/events?limit=4";
      if (!after_.empty()) absl::StrAppend(&target, "&after=", after_);
      ClientResponse r = f.Get(target);
      REQUIRE(r.status == 200);
      rapidjson::Document page = Parse(r.body);
      REQUIRE(page["items"].IsArray());
      for (const rapidjson::Value& event : page["items"].GetArray()) {
        Apply(event);
        ++read;
      }
      const std::string next = String(page, "next");
      const bool empty = page["items"].Empty();
      after_ = next;
      if (empty) return read;
    }
  }

  std::map<std::string, ConsumerAccount> accounts;
  std::map<std::string, ConsumerTransfer> transfers;

 private:
  void Apply(const rapidjson::Value& event) {
    REQUIRE(String(event, "specversion") == "1.0");
    REQUIRE(String(event, "source") == kEventSource);
    REQUIRE(String(event, "datacontenttype") == "application/json");
    const std::string id = String(event, "id");
    CHECK(ids_.insert(id).second);  // no event comes twice
    const std::string position = String(event, "position");
    CHECK(Later(last_position_, position) == position);
    CHECK(position != last_position_);
    last_position_ = position;

    const std::string type = String(event, "type");
    const std::string subject = String(event, "subject");
    const std::string category = String(event, "category");
    const rapidjson::Value& data = event["data"];
    REQUIRE(data.IsObject());
    INFO(type << " " << subject);
    if (category == "account") {
      ConsumerAccount& a = accounts[subject];
      CHECK(event["streamversion"].GetInt64() == a.version + 1);
      a.version = event["streamversion"].GetInt64();
      if (type == "bank.account.opened.v1") {
        a.owner = String(data, "owner");
        a.currency = String(data, "currency");
      } else if (type == "bank.account.deposited.v1" ||
                 type == "bank.account.transfer_credited.v1" ||
                 type == "bank.account.transfer_refunded.v1") {
        a.balance += data["amount"].GetInt64();
      } else if (type == "bank.account.withdrawn.v1" ||
                 type == "bank.account.transfer_debited.v1") {
        a.balance -= data["amount"].GetInt64();
      } else if (type == "bank.account.closed.v1") {
        a.closed = true;
      } else {
        FAIL("unexpected account event " << type);
      }
    } else if (category == "transfer") {
      ConsumerTransfer& t = transfers[subject];
      if (type == "bank.transfer.requested.v1") {
        t.from = String(data, "from");
        t.to = String(data, "to");
        t.amount = data["amount"].GetInt64();
        t.status = "pending";
      } else if (type == "bank.transfer.completed.v1") {
        t.status = "completed";
      } else if (type == "bank.transfer.failed.v1") {
        t.status = "failed";
        t.reason = String(data, "reason");
      } else {
        FAIL("unexpected transfer event " << type);
      }
    } else {
      FAIL("unexpected category " << category);
    }
  }

  std::string after_;
  std::string last_position_;
  std::set<std::string> ids_;
};

TEST_CASE("a consumer rebuilds every balance from GET /events alone",
          "[bank][events][pg]") {
  ServiceFixture f;
  Open(f, "ev-ann");
  Open(f, "ev-bob");
  Open(f, "ev-cy");
  Open(f, "ev-dollar", "Dee", "USD");
  Open(f, "ev-gone", "Gus");
  Deposit(f, "ev-ann", 10000);
  Deposit(f, "ev-bob", 500);
  Deposit(f, "ev-dollar", 700);
  REQUIRE(Move(f, "ev-ann", "withdraw", 1500).status == 200);
  // Refused: nothing appended, nothing published.
  REQUIRE(Move(f, "ev-bob", "withdraw", 501).status == 422);
  REQUIRE(f.Post("/accounts/ev-gone/close", "{}").status == 200);
  REQUIRE(Move(f, "ev-gone", "deposit", 5).status == 422);

  const std::vector<TransferBody> transfers = {
      {"ev-ann", "ev-bob", 2500, "ev-t-ok"},         // completed
      {"ev-bob", "ev-cy", 400, "ev-t-ok-2"},         // completed
      {"ev-cy", "ev-ann", 99999, "ev-t-poor"},       // insufficient_funds
      {"ev-ann", "ev-dollar", 1000, "ev-t-usd"},     // refunded: currency
      {"ev-ann", "ev-gone", 300, "ev-t-closed"},     // refunded: closed
      {"ev-dollar", "ev-ann", 50, "ev-t-usd-back"},  // refunded: currency
  };
  for (const TransferBody& t : transfers) {
    REQUIRE(f.Post("/transfers", json::Encode(t)).status == 202);
  }
  REQUIRE(Move(f, "ev-bob", "withdraw", 100).status == 200);

  // The bank's own answers, once every transfer is settled and the
  // account read model has caught up with the log.
  std::string seen;
  std::map<std::string, std::string> status;
  for (const TransferBody& t : transfers) {
    REQUIRE(cqrs::testing::Eventually(
        [&] {
          ClientResponse r = f.Get(absl::StrCat("/transfers/", t.transfer_id));
          if (r.status != 200) return false;
          rapidjson::Document doc = Parse(r.body);
          if (String(doc, "status") == "pending") return false;
          status[t.transfer_id] = String(doc, "status");
          return true;
        },
        absl::Seconds(30)));
  }
  // Quiet now: the log's head is past every transfer's movements (a
  // query's X-Projection-Position is taken before its read, so the read
  // that saw a transfer settled may name a position before them).
  seen = f.schema().LogHead();
  CHECK(status ==
        std::map<std::string, std::string>{{"ev-t-ok", "completed"},
                                           {"ev-t-ok-2", "completed"},
                                           {"ev-t-poor", "failed"},
                                           {"ev-t-usd", "failed"},
                                           {"ev-t-closed", "failed"},
                                           {"ev-t-usd-back", "failed"}});
  std::map<std::string, rapidjson::Document> bank;
  for (const char* id : {"ev-ann", "ev-bob", "ev-cy", "ev-dollar", "ev-gone"}) {
    ClientResponse r = f.Get(absl::StrCat("/accounts/", id), AtLeast(seen));
    REQUIRE(r.status == 200);
    bank[id] = Parse(r.body);
  }

  // The consumer follows the feed until it has every account at the
  // version the bank shows (an event is readable once no older transaction
  // of the database is open, so the newest may take a moment).
  Consumer consumer;
  const auto caught_up = [&] {
    for (const auto& [id, doc] : bank) {
      auto it = consumer.accounts.find(id);
      if (it == consumer.accounts.end() ||
          it->second.version < doc["version"].GetInt64()) {
        return false;
      }
    }
    for (const TransferBody& t : transfers) {
      auto it = consumer.transfers.find(t.transfer_id);
      if (it == consumer.transfers.end() || it->second.status == "pending") {
        return false;
      }
    }
    return true;
  };
  REQUIRE(cqrs::testing::Eventually(
      [&] {
        consumer.ReadNewPages(f);
        return caught_up();
      },
      absl::Seconds(30), absl::Milliseconds(20)));

  CHECK(consumer.accounts.size() == bank.size());
  for (const auto& [id, doc] : bank) {
    INFO(id);
    const ConsumerAccount& a = consumer.accounts[id];
    CHECK(a.balance == doc["balance"].GetInt64());
    CHECK(a.version == doc["version"].GetInt64());
    CHECK(a.owner == String(doc, "owner"));
    CHECK(a.currency == String(doc, "currency"));
    CHECK((a.closed ? "closed" : "open") == String(doc, "status"));
  }
  CHECK(consumer.accounts["ev-ann"].balance == 10000 - 1500 - 2500);
  CHECK(consumer.accounts["ev-bob"].balance == 500 + 2500 - 400 - 100);
  for (const TransferBody& t : transfers) {
    INFO(t.transfer_id);
    ClientResponse r = f.Get(absl::StrCat("/transfers/", t.transfer_id));
    REQUIRE(r.status == 200);
    rapidjson::Document doc = Parse(r.body);
    const ConsumerTransfer& c = consumer.transfers[t.transfer_id];
    CHECK(c.status == String(doc, "status"));
    CHECK(c.from == t.from);
    CHECK(c.to == t.to);
    CHECK(c.amount == t.amount);
    if (c.status == "failed") CHECK(c.reason == String(doc, "reason"));
  }
  // Read to the end, the feed has nothing more.
  CHECK(consumer.ReadNewPages(f) == 0);
}

// The data schema of E as /asyncapi.json must carry it: SchemaOf<E>()
// without "$schema".
rapidjson::Document DataSchemaOf(const std::string& schema) {
  rapidjson::Document doc = Parse(schema);
  doc.RemoveMember("$schema");
  return doc;
}

TEST_CASE("GET /asyncapi.json describes every type the bank publishes",
          "[bank][events][pg]") {
  ServiceFixture f;
  // Open: no token.
  auto client = cqrs::http_test::TestClient::Connect(f.server().port());
  REQUIRE(client.ok());
  auto r = (*client)->Send("GET", "/asyncapi.json");
  REQUIRE(r.ok());
  REQUIRE(r->status == 200);
  rapidjson::Document doc = Parse(r->body);
  CHECK(String(doc, "asyncapi") == "3.0.0");
  const std::map<std::string, std::string> published = {
      {"bank.account.opened.v1", json::SchemaOf<AccountOpened>()},
      {"bank.account.deposited.v1", json::SchemaOf<MoneyDeposited>()},
      {"bank.account.withdrawn.v1", json::SchemaOf<MoneyWithdrawn>()},
      {"bank.account.closed.v1", json::SchemaOf<AccountClosed>()},
      {"bank.account.transfer_debited.v1", json::SchemaOf<TransferDebit>()},
      {"bank.account.transfer_credited.v1", json::SchemaOf<TransferCredit>()},
      {"bank.account.transfer_refunded.v1", json::SchemaOf<TransferRefund>()},
      {"bank.transfer.requested.v1", json::SchemaOf<TransferRequested>()},
      {"bank.transfer.completed.v1", json::SchemaOf<TransferCompleted>()},
      {"bank.transfer.failed.v1", json::SchemaOf<TransferFailed>()},
  };
  const rapidjson::Value& messages = doc["components"]["messages"];
  CHECK(messages.MemberCount() == published.size());
  for (const auto& [type, schema] : published) {
    INFO(type);
    REQUIRE(messages.HasMember(type.c_str()));
    const rapidjson::Value& payload = messages[type.c_str()]["payload"];
    CHECK(String(payload["properties"]["type"], "const") == type);
    CHECK(String(payload["properties"]["source"], "const") == kEventSource);
    CHECK(payload["properties"]["data"] == DataSchemaOf(schema));
    for (const char* channel : {"events", "eventStream"}) {
      CHECK(doc["channels"][channel]["messages"].HasMember(type.c_str()));
    }
  }
  // The bounds of the shapes reach the consumer.
  const rapidjson::Value& amount =
      messages["bank.account.deposited.v1"]["payload"]["properties"]["data"]
              ["properties"]["amount"];
  CHECK(amount["minimum"].GetInt64() == 1);
  CHECK(amount["maximum"].GetInt64() == kMaxAmount);
}

}  // namespace
}  // namespace bank

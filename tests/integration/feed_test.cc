// Published events (integration/cloud_events.h) and the feed over them
// (integration/feed.h), on the in-memory store and on PostgreSQL (a
// transaction that commits late is not skipped).
#include "integration/feed.h"
#include "integration/feed_read_ahead.h"

#include <pqxx/pqxx>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "eventstore/in_memory_event_store.h"
#include "framework/json_shape.h"
#include "integration/cloud_events.h"
#include "rapidjson/document.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace cqrs::integration {
namespace {

using eventstore::ExpectedVersion;
using eventstore::NewEvent;
using eventstore::Position;

NewEvent Event(const std::string& type, const std::string& data = "{}",
               const std::string& metadata = "{}") {
  NewEvent e;
  e.event_type = type;
  e.data = data;
  e.metadata = metadata;
  return e;
}

// The public payload of a deposit: its amount under another name.
struct Cents {
  int64_t cents = 0;
  static auto Json() {
    return json::Shape<Cents>().Field("cents", &Cents::cents);
  }
};

Publication Bank() {
  Publication p("https://bank.example/");
  REQUIRE(p.Add({"AccountOpened", "bank.account.opened", 1, nullptr, ""}).ok());
  PublishedType deposited;
  deposited.stored_type = "MoneyDeposited";
  deposited.public_type = "bank.account.deposited";
  deposited.version = 2;
  deposited.to_public =
      [](const eventstore::RecordedEvent& e) -> absl::StatusOr<std::string> {
    rapidjson::Document d;
    d.Parse(e.data.c_str());
    return json::Encode(Cents{d["amount"].GetInt64()});
  };
  REQUIRE(p.Add(deposited).ok());
  return p;
}

rapidjson::Document Json(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  REQUIRE(!d.HasParseError());
  return d;
}

std::string Text(const rapidjson::Value& v, const char* name) {
  REQUIRE(v.HasMember(name));
  return v[name].GetString();
}

TEST_CASE("a published event is a CloudEvent; others are not published",
          "[integration]") {
  eventstore::InMemoryEventStore store;
  const Publication bank = Bank();
  auto appended = store.Append(
      "account-42", ExpectedVersion::NoStream(),
      {Event("AccountOpened", R"({"owner":"Ann"})",
             R"({"correlation_id":"c-1","causation_id":"k-1","actor":"x"})"),
       Event("MoneyDeposited", R"({"amount":5})"),
       Event("InternalAudit", R"({"secret":1})")});
  REQUIRE(appended.ok());
  auto all = store.ReadAll(Position::Start(), 10);
  REQUIRE(all.ok());
  REQUIRE(all->events.size() == 3);

  auto opened = bank.Encode(all->events[0]);
  REQUIRE(opened.ok());
  REQUIRE(opened->has_value());
  rapidjson::Document ce = Json(**opened);
  CHECK(Text(ce, "specversion") == "1.0");
  CHECK(Text(ce, "id") == all->events[0].event_id);
  CHECK(Text(ce, "source") == "https://bank.example/");
  CHECK(Text(ce, "type") == "bank.account.opened.v1");
  CHECK(Text(ce, "subject") == "42");
  CHECK(Text(ce, "datacontenttype") == "application/json");
  CHECK(Text(ce, "position") == all->events[0].position.ToToken());
  CHECK(ce["streamversion"].GetInt64() == 1);
  CHECK(Text(ce, "category") == "account");
  CHECK(Text(ce, "correlationid") == "c-1");
  CHECK(Text(ce, "causationid") == "k-1");
  CHECK_FALSE(ce.HasMember("actor"));
  CHECK(Text(ce["data"], "owner") == "Ann");
  const std::string time = Text(ce, "time");
  CHECK(time.size() >= 20);
  CHECK(time.back() == 'Z');

  auto deposited = bank.Encode(all->events[1]);
  REQUIRE(deposited.ok());
  rapidjson::Document d = Json(**deposited);
  CHECK(Text(d, "type") == "bank.account.deposited.v2");
  CHECK(d["data"]["cents"].GetInt64() == 5);
  CHECK_FALSE(d.HasMember("correlationid"));

  auto internal = bank.Encode(all->events[2]);
  REQUIRE(internal.ok());
  CHECK_FALSE(internal->has_value());
}

// What Encode() writes for `time` and the trace attributes, as first
// written: absl::FormatTime, and a DOM lookup of the metadata.
std::string ReferenceTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%E*SZ", t, absl::UTCTimeZone());
}
std::string ReferenceMember(const std::string& metadata, const char* name) {
  rapidjson::Document doc;
  doc.Parse(metadata.data(), metadata.size());
  if (!doc.IsObject()) return "";
  auto it = doc.FindMember(name);
  if (it == doc.MemberEnd() || !it->value.IsString()) return "";
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

TEST_CASE("a CloudEvent's time, position and trace attributes",
          "[integration]") {
  const Publication bank = Bank();
  eventstore::RecordedEvent e;
  e.event_id = "0192f3c4-0000-7000-8000-000000000001";
  e.stream_id = "account-42";
  e.stream_version = 3;
  e.event_type = "AccountOpened";
  e.data = R"({"owner":"Ann"})";

  const absl::Time base = absl::FromCivil(
      absl::CivilSecond(2026, 12, 6, 9, 5, 7), absl::UTCTimeZone());
  std::vector<absl::Time> times = {
      base,
      base + absl::Microseconds(1),
      base + absl::Microseconds(10),
      base + absl::Microseconds(120000),
      base + absl::Microseconds(999999),
      base + absl::Milliseconds(500),
      base + absl::Nanoseconds(1),
      base + absl::Nanoseconds(1) / 4,  // finer than the store records
      absl::UnixEpoch(),
      absl::UnixEpoch() - absl::Microseconds(1),
      absl::FromCivil(absl::CivilSecond(999, 12, 31, 23, 59, 59),
                      absl::UTCTimeZone()),
      absl::FromCivil(absl::CivilSecond(1000, 1, 1, 0, 0, 0),
                      absl::UTCTimeZone()),
      absl::FromCivil(absl::CivilSecond(9999, 12, 31, 23, 59, 59),
                      absl::UTCTimeZone()) +
          absl::Microseconds(5),
      absl::FromCivil(absl::CivilSecond(10000, 1, 1, 0, 0, 0),
                      absl::UTCTimeZone()),
  };
  for (int i = 0; i < 1000; ++i) {
    times.push_back(base + absl::Microseconds(int64_t{7919} * 7919 * i));
  }
  for (absl::Time t : times) {
    e.recorded_at = t;
    auto encoded = bank.Encode(e);
    REQUIRE(encoded.ok());
    rapidjson::Document ce = Json(**encoded);
    INFO(ReferenceTime(t));
    CHECK(Text(ce, "time") == ReferenceTime(t));
  }

  for (const Position& p :
       {Position{0, 0}, Position{1, 1}, Position{812, 40771},
        Position{UINT64_MAX, INT64_MAX}, Position{7, -1}}) {
    e.position = p;
    auto encoded = bank.Encode(e);
    REQUIRE(encoded.ok());
    CHECK(Text(Json(**encoded), "position") == p.ToToken());
  }

  const std::vector<std::string> metadata = {
      "{}",
      R"({"correlation_id":"c","causation_id":"k"})",
      R"({"causation_id":"k","actor":"x","correlation_id":"c"})",
      R"({"correlation_id":5,"causation_id":null})",
      R"({"correlation_id":"first","correlation_id":"second"})",
      R"({"correlation_id":1,"correlation_id":"second"})",
      R"({"nested":{"correlation_id":"inner"},"causation_id":"outer"})",
      R"({"list":[{"correlation_id":"inner"}],"x":{"y":[1,{"z":2}]}})",
      R"({"correlation_id":{"causation_id":"no"},"causation_id":"yes"})",
      R"({"correlation_id":["a"],"causation_id":"yes"})",
      R"({"correlation_id":"esc"aped\u00e9","causation_id":""})",
      R"(["correlation_id","c"])",
      R"({"correlation_id":"c",)",
      R"({"correlation_id":"c"} trailing)",
      "",
      "not json",
  };
  for (const std::string& m : metadata) {
    INFO(m);
    e.metadata = m;
    auto encoded = bank.Encode(e);
    REQUIRE(encoded.ok());
    rapidjson::Document ce = Json(**encoded);
    for (const auto& [member, attribute] :
         {std::pair<const char*, const char*>{"correlation_id",
                                              "correlationid"},
          {"causation_id", "causationid"}}) {
      const std::string want = ReferenceMember(m, member);
      if (want.empty()) {
        CHECK_FALSE(ce.HasMember(attribute));
      } else {
        CHECK(Text(ce, attribute) == want);
      }
    }
  }
}

TEST_CASE("published types are checked when added", "[integration]") {
  Publication p("/bank");
  CHECK(absl::IsInvalidArgument(p.Add({"", "a.b", 1, nullptr, ""})));
  CHECK(absl::IsInvalidArgument(p.Add({"A", "Bank.Opened", 1, nullptr, ""})));
  CHECK(absl::IsInvalidArgument(p.Add({"A", "bank..opened", 1, nullptr, ""})));
  CHECK(absl::IsInvalidArgument(p.Add({"A", "bank.opened", 0, nullptr, ""})));
  CHECK(p.Add({"A", "bank.opened", 1, nullptr, ""}).ok());
  CHECK(absl::IsAlreadyExists(p.Add({"A", "bank.other", 1, nullptr, ""})));
  CHECK(absl::IsAlreadyExists(p.Add({"B", "bank.opened", 1, nullptr, ""})));
  CHECK(p.Add({"B", "bank.opened", 2, nullptr, ""}).ok());
  Publication spaced("has space");
  CHECK(absl::IsInvalidArgument(spaced.Add({"A", "a", 1, nullptr, ""})));
}

TEST_CASE("feed pages filter, and advance past what they filter out",
          "[integration]") {
  eventstore::InMemoryEventStore store;
  const Publication bank = Bank();
  for (int i = 0; i < 30; ++i) {
    const std::string stream =
        absl::StrCat(i % 3 == 0 ? "account-" : "ledger-", i % 2);
    REQUIRE(store
                .Append(stream, ExpectedVersion::Any(),
                        {Event(i % 5 == 0 ? "MoneyDeposited" : "InternalAudit",
                               R"({"amount":1})")})
                .ok());
  }
  auto head = store.HeadPosition();
  REQUIRE(head.ok());

  FeedQuery all;
  all.limit = 100;
  auto page = ReadFeed(store, bank, all);
  REQUIRE(page.ok());
  CHECK(page->items.size() == 6);  // i = 0, 5, 10, 15, 20, 25
  CHECK(page->next == *head);      // past the unpublished ones at the end
  CHECK(page->at_head);

  // Page by page with limit 4: the same events, none twice.
  FeedQuery paged;
  paged.limit = 4;
  std::vector<std::string> ids;
  for (int guard = 0; guard < 10; ++guard) {
    auto p = ReadFeed(store, bank, paged);
    REQUIRE(p.ok());
    for (const FeedItem& item : p->items) {
      ids.push_back(Text(Json(item.cloud_event), "id"));
    }
    paged.after = p->next;
    if (p->items.empty()) break;
  }
  CHECK(ids.size() == 6);
  CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == 6);

  // A subject and a category.
  FeedQuery by_subject;
  by_subject.subject = "0";
  auto s = ReadFeed(store, bank, by_subject);
  REQUIRE(s.ok());
  for (const FeedItem& item : s->items) {
    CHECK(Text(Json(item.cloud_event), "subject") == "0");
  }
  CHECK(s->items.size() == 3);  // i = 0, 10, 20
  FeedQuery by_category;
  by_category.category = "account";
  auto c = ReadFeed(store, bank, by_category);
  REQUIRE(c.ok());
  CHECK(c->items.size() == 2);  // i = 0, 15
  FeedQuery by_type;
  by_type.types = {"bank.account.opened.v1"};
  auto t = ReadFeed(store, bank, by_type);
  REQUIRE(t.ok());
  CHECK(t->items.empty());
  CHECK(t->next == *head);  // no rescan, no false lag

  // A small scan budget returns an empty page that still advances.
  FeedQuery budget;
  budget.types = {"bank.account.deposited.v2"};
  budget.limit = 1;
  budget.scan_budget = 1;
  budget.after = page->next;  // nothing after the head
  auto none = ReadFeed(store, bank, budget);
  REQUIRE(none.ok());
  CHECK(none->items.empty());
  budget.after = Position::Start();
  auto first = ReadFeed(store, bank, budget);
  REQUIRE(first.ok());
  CHECK(first->items.size() == 1);
  auto second =
      ReadFeed(store, bank, FeedQuery{first->next, 1, budget.types, "", "", 1});
  REQUIRE(second.ok());
  CHECK(second->items.empty());       // the next event is not a deposit...
  CHECK(first->next < second->next);  // ...and the cursor moved past it

  // Bad queries.
  for (int limit : {0, -1, kMaxFeedLimit + 1}) {
    FeedQuery bad;
    bad.limit = limit;
    CHECK(absl::IsInvalidArgument(ReadFeed(store, bank, bad).status()));
  }
  FeedQuery unknown;
  unknown.types = {"bank.nope.v1"};
  CHECK(absl::IsInvalidArgument(ReadFeed(store, bank, unknown).status()));
}

TEST_CASE("the feed does not skip a transaction that commits late",
          "[integration][pg]") {
  testing::TestSchema schema;
  auto store = schema.NewEventStore();
  const Publication bank = Bank();
  REQUIRE(store
              ->Append("account-1", ExpectedVersion::NoStream(),
                       {Event("AccountOpened")})
              .ok());
  // Follows the feed from q.after until it has `n` more items (a commit
  // becomes readable once no older transaction of the database, of any
  // test running beside this one, is still open: docs/event-store.md).
  FeedQuery q;
  std::vector<std::string> items;
  const auto follow = [&](size_t n) {
    return testing::Eventually([&] {
      auto page = ReadFeed(*store, bank, q);
      REQUIRE(page.ok());
      for (const FeedItem& item : page->items) {
        items.push_back(item.cloud_event);
      }
      q.after = page->next;
      return items.size() >= n;
    });
  };
  REQUIRE(follow(1));
  REQUIRE(items.size() == 1);
  items.clear();

  // A writer takes its transaction id first and stays open while two
  // others commit.
  pqxx::connection held(schema.url());
  pqxx::work held_tx(held);
  auto in_tx = store->InTransaction(held_tx);
  auto late = in_tx->Append("account-late", ExpectedVersion::NoStream(),
                            {Event("AccountOpened")});
  REQUIRE(late.ok());
  for (const char* stream : {"account-2", "account-3"}) {
    REQUIRE(store
                ->Append(stream, ExpectedVersion::NoStream(),
                         {Event("AccountOpened")})
                .ok());
  }
  auto while_open = ReadFeed(*store, bank, q);
  REQUIRE(while_open.ok());
  CHECK(while_open->items.empty());
  CHECK(while_open->next == q.after);  // the cursor waits for the late one

  held_tx.commit();
  REQUIRE(follow(3));
  REQUIRE(items.size() == 3);  // and not more: none twice
  CHECK(Text(Json(items[0]), "subject") == "late");
  CHECK(Text(Json(items[1]), "subject") == "2");
  CHECK(Text(Json(items[2]), "subject") == "3");
}

}  // namespace
}  // namespace cqrs::integration

namespace cqrs::integration {
namespace {

TEST_CASE("pages read ahead are the pages ReadFeed returns", "[integration]") {
  eventstore::InMemoryEventStore store;
  const Publication bank = Bank();
  for (int i = 0; i < 50; ++i) {
    REQUIRE(store
                .Append(absl::StrCat("account-", i),
                        ExpectedVersion::NoStream(),
                        {Event("AccountOpened"), Event("Audited"),
                         Event("MoneyDeposited", R"({"amount":7})")})
                .ok());
  }
  FeedReadAhead feed(&store, &bank);
  for (const std::string subject : {"", "7"}) {
    FeedQuery q;
    q.limit = 9;
    q.subject = subject;
    std::vector<std::string> ahead;
    std::vector<std::string> direct;
    for (int guard = 0; guard < 100; ++guard) {
      auto page = feed.Read(q);
      auto expected = ReadFeed(store, bank, q);
      REQUIRE(page.ok());
      REQUIRE(expected.ok());
      CHECK(page->next == expected->next);
      CHECK(page->at_head == expected->at_head);
      REQUIRE(page->items.size() == expected->items.size());
      for (size_t i = 0; i < page->items.size(); ++i) {
        CHECK(page->items[i].cloud_event == expected->items[i].cloud_event);
        ahead.push_back(page->items[i].cloud_event);
      }
      q.after = page->next;
      if (page->at_head) break;
    }
    CHECK(ahead.size() == (subject.empty() ? 100u : 2u));
  }
  // Events appended after a page was read ahead are in the pages after it.
  FeedQuery q;
  q.limit = 100;
  auto first = feed.Read(q);
  REQUIRE(first.ok());
  REQUIRE(first->items.size() == 100);
  REQUIRE(store
              .Append("account-new", ExpectedVersion::NoStream(),
                      {Event("AccountOpened")})
              .ok());
  q.after = first->next;
  auto second = feed.Read(q);
  REQUIRE(second.ok());
  REQUIRE(second->items.size() == 1);
  CHECK(Text(Json(second->items[0].cloud_event), "subject") == "new");
}

}  // namespace
}  // namespace cqrs::integration

// GET /events under load (issue 15 item 6): an app served in-process
// (cqrs::AppServer) against the test PostgreSQL, 16 writers appending
// 100,000 events of three published types and one unpublished type, some
// of them in transactions held open while later ones commit, and four
// consumers following the feed over HTTP page by page while that happens
// (everything, one type, one category, one subject). Each consumer must end
// up with exactly the published events that match its filter, each once, in
// the store's commit order, with per-stream versions in order and a `next`
// that never goes back.
//
// Threads record what they saw and what went wrong; the assertions run on
// the test's thread afterwards (Catch2 assertions are not thread-safe).
#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <optional>
#include <pqxx/pqxx>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "app/app.h"
#include "app/app_server.h"
#include "eventstore/position.h"
#include "framework/json_shape.h"
#include "integration/cloud_events.h"
#include "rapidjson/document.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace {

namespace json = cqrs::json;
using cqrs::eventstore::ExpectedVersion;
using cqrs::eventstore::NewEvent;
using cqrs::eventstore::Position;

struct Opened {
  std::string owner;
  static auto Json() {
    return json::Shape<Opened>().Field("owner", &Opened::owner);
  }
};
struct Deposited {
  int64_t amount = 0;
  static auto Json() {
    return json::Shape<Deposited>().Field("amount", &Deposited::amount);
  }
};
struct Noted {
  std::string text;
  static auto Json() {
    return json::Shape<Noted>().Field("text", &Noted::text,
                                      json::Length(1, 100));
  }
};
// Never published: the feed must pass over it.
struct Audited {
  int64_t n = 0;
  static auto Json() { return json::Shape<Audited>().Field("n", &Audited::n); }
};
struct Ledger {
  int64_t notes = 0;
};

constexpr int kWriters = 16;
constexpr int kTotalEvents = 100000;
// The last writer sends this many commands over HTTP (one event each); the
// others append the rest through the app's store.
constexpr int kCommandEvents = 400;
constexpr int kStoreWriters = kWriters - 1;
constexpr int kEventsPerStoreWriter =
    (kTotalEvents - kCommandEvents) / kStoreWriters;
static_assert(kEventsPerStoreWriter * kStoreWriters + kCommandEvents ==
              kTotalEvents);
// Writers 0..kHolders-1 append in transactions of their own, some of which
// stay open for a while after their appends.
constexpr int kHolders = 4;
constexpr int kStreamsPerWriter = 8;
constexpr int kCommandStreams = 20;
constexpr int kPageLimit = 1000;

// Generous: these bound a failing run on a loaded 2-core CI machine, never
// a passing one.
constexpr absl::Duration kDeadline = absl::Seconds(300);

// Stored name, published CloudEvents type ("" for the unpublished one).
struct TypeInfo {
  const char* stored;
  const char* cloud;
};
constexpr TypeInfo kTypes[] = {{"Opened", "stress.opened.v1"},
                               {"Deposited", "stress.deposited.v1"},
                               {"Noted", "stress.noted.v2"},
                               {"Audited", ""}};

std::string CloudTypeOf(const std::string& stored) {
  for (const TypeInfo& t : kTypes) {
    if (stored == t.stored) return t.cloud;
  }
  return "";
}

// The data of a stored event of kTypes[type].
std::string DataOf(int type, int n) {
  switch (type) {
    case 0:
      return json::Encode(Opened{absl::StrCat("owner ", n)});
    case 1:
      return json::Encode(Deposited{n});
    case 2:
      return json::Encode(Noted{absl::StrCat("note ", n)});
    default:
      return json::Encode(Audited{n});
  }
}

// Writer w's stream k: categories alternate, and streams 2j and 2j+1 share
// the subject "<w>x<j>", so a subject spans both categories.
std::string StreamOf(int writer, int k) {
  return absl::StrCat(k % 2 == 0 ? "account-" : "ledger-", writer, "x", k / 2);
}

// Where the store writers wait, a tenth of the way through, while the test
// ANALYZEs the events table. The table is empty when the writers' sessions
// first run the store's append function, and PostgreSQL caches that
// function's plans per session: without statistics, the generic plan of
// append_v3's event-id check for groups of events (`event_id = ANY
// (p_ids)`) can be a sequential scan, kept while the table grows, which
// made some runs take 40-60 s instead of 5 (autovacuum, which would
// replan, wakes up once a minute). Statistics invalidate those plans, and
// plans made from them use the index. Not what this test is about, so it
// sidesteps it; the store has the problem in production too (reported
// with this test).
class Gate {
 public:
  void Arrive() {
    arrived_.fetch_add(1);
    open_.WaitForNotification();
  }
  // For a writer that ends (failing) before it arrived.
  void Leave() { arrived_.fetch_add(1); }
  int arrived() const { return arrived_.load(); }
  void Open() { open_.Notify(); }

 private:
  std::atomic<int> arrived_{0};
  absl::Notification open_;
};

// What one writer appended: the stored types of each of its streams, by
// version (index 0 is version 1), and what went wrong.
struct WriterLog {
  std::map<std::string, std::vector<std::string>> types;
  std::vector<std::string> errors;
};

// Appends kEventsPerStoreWriter events through `store` in groups of 1..16
// events to random streams of its own. Holders run 1..3 appends per
// transaction of their own connection and keep one transaction in eight
// open for 10..100 ms before committing it, while the others commit.
void StoreWriter(int w, const std::string& url,
                 cqrs::eventstore::PostgresEventStore& store, Gate& gate,
                 WriterLog& log) {
  std::mt19937 rng(static_cast<uint32_t>(1000 + w));
  std::map<std::string, int64_t> versions;
  int left = kEventsPerStoreWriter;
  int n = 0;
  bool waited = false;
  // Between transactions: see Gate.
  const auto maybe_wait = [&] {
    if (!waited && left <= kEventsPerStoreWriter * 9 / 10) {
      waited = true;
      gate.Arrive();
    }
  };
  struct LeaveGate {
    Gate& gate;
    const bool& waited;
    ~LeaveGate() {
      if (!waited) gate.Leave();
    }
  } leave_gate{gate, waited};
  // The next group: stream, then events with their types.
  const auto next_group = [&](std::string* stream,
                              std::vector<std::string>* types) {
    *stream = StreamOf(w, static_cast<int>(rng() % kStreamsPerWriter));
    std::vector<NewEvent> events;
    const int size = std::min(left, 1 + static_cast<int>(rng() % 16));
    for (int i = 0; i < size; ++i) {
      const int type = static_cast<int>(rng() % 4);
      NewEvent e;
      e.event_type = kTypes[type].stored;
      e.data = DataOf(type, ++n);
      types->push_back(e.event_type);
      events.push_back(std::move(e));
    }
    left -= size;
    return events;
  };
  const auto record = [&](const std::string& stream,
                          const std::vector<std::string>& types) {
    std::vector<std::string>& all = log.types[stream];
    all.insert(all.end(), types.begin(), types.end());
    versions[stream] += static_cast<int64_t>(types.size());
  };

  if (w >= kHolders) {
    while (left > 0) {
      maybe_wait();
      std::string stream;
      std::vector<std::string> types;
      std::vector<NewEvent> events = next_group(&stream, &types);
      auto r = store.Append(stream, ExpectedVersion::Exactly(versions[stream]),
                            std::move(events));
      if (!r.ok()) {
        log.errors.push_back(absl::StrCat("writer ", w, " append to ", stream,
                                          ": ", r.status().ToString()));
        return;
      }
      record(stream, types);
    }
    return;
  }
  try {
    pqxx::connection conn(url);
    while (left > 0) {
      maybe_wait();
      pqxx::work tx(conn);
      auto in_tx = store.InTransaction(tx);
      std::vector<std::pair<std::string, std::vector<std::string>>> appended;
      const int appends = 1 + static_cast<int>(rng() % 3);
      for (int a = 0; a < appends && left > 0; ++a) {
        std::string stream;
        std::vector<std::string> types;
        std::vector<NewEvent> events = next_group(&stream, &types);
        // Versions of groups earlier in this transaction count too.
        int64_t expected = versions[stream];
        for (const auto& [s, t] : appended) {
          if (s == stream) expected += static_cast<int64_t>(t.size());
        }
        auto r = in_tx->Append(stream, ExpectedVersion::Exactly(expected),
                               std::move(events));
        if (!r.ok()) {
          log.errors.push_back(absl::StrCat("holder ", w, " append to ", stream,
                                            ": ", r.status().ToString()));
          return;
        }
        appended.emplace_back(stream, std::move(types));
      }
      if (rng() % 8 == 0) {
        // The fault under test, not a wait: this transaction stays open
        // while later ones commit, so its events commit late.
        std::this_thread::sleep_for(std::chrono::milliseconds(10 + rng() % 91));
      }
      tx.commit();
      for (const auto& [stream, types] : appended) record(stream, types);
      if (in_tx->last_appended().has_value()) {
        store.NotifyCommitted(*in_tx->last_appended(),
                              in_tx->appended_events());
      }
    }
  } catch (const std::exception& e) {
    log.errors.push_back(absl::StrCat("holder ", w, ": ", e.what()));
  }
}

// Sends kCommandEvents commands POST /ledgers/c<k>/note, one event each.
void CommandWriter(int port, const std::string& token, WriterLog& log) {
  auto client = cqrs::http_test::TestClient::Connect(port, absl::Seconds(60));
  if (!client.ok()) {
    log.errors.push_back(client.status().ToString());
    return;
  }
  (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(token));
  for (int i = 0; i < kCommandEvents; ++i) {
    const std::string id = absl::StrCat("c", i % kCommandStreams);
    auto r = (*client)->Send("POST", absl::StrCat("/ledgers/", id, "/note"),
                             json::Encode(Noted{absl::StrCat("command ", i)}),
                             {{"Content-Type", "application/json"}});
    if (!r.ok() || r->status != 200) {
      log.errors.push_back(
          absl::StrCat("command ", i, ": ",
                       r.ok() ? absl::StrCat(r->status, " ", r->body)
                              : r.status().ToString()));
      return;
    }
    log.types[absl::StrCat("ledger-", id)].push_back("Noted");
  }
}

// A CloudEvent as a consumer saw it.
struct Item {
  std::string id;
  std::string type;
  std::string subject;
  std::string category;
  int64_t version = 0;
  Position position;
};

struct Consumer {
  std::string name;
  std::string filter;  // query parameters after limit
  std::function<bool(const Item&)> matches;

  // Written by the consumer's thread, read after it ended.
  std::vector<Item> items;
  std::vector<std::string> errors;
  int requests = 0;
  Position last_next;
};

// Where the consumers stop: the position of the last event written, once
// the writers are done and it is readable.
class StopAt {
 public:
  void Set(Position p) {
    absl::MutexLock lock(&mu_);
    at_ = p;
  }
  std::optional<Position> Get() const {
    absl::MutexLock lock(&mu_);
    return at_;
  }

 private:
  mutable absl::Mutex mu_;
  std::optional<Position> at_ ABSL_GUARDED_BY(mu_);
};

// Follows GET /events?limit=kPageLimit<filter> from the start until `next`
// is the stop position, checking each page as it comes: items in strictly
// increasing positions after the cursor, `next` at or past the last of
// them and never behind the cursor.
void Follow(int port, const std::string& token, const StopAt& stop,
            Consumer& c) {
  auto client = cqrs::http_test::TestClient::Connect(port, absl::Seconds(60));
  if (!client.ok()) {
    c.errors.push_back(client.status().ToString());
    return;
  }
  (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(token));
  const absl::Time deadline = absl::Now() + kDeadline;
  Position after = Position::Start();
  bool first = true;
  while (true) {
    if (absl::Now() > deadline) {
      c.errors.push_back(absl::StrCat("no stop after ", c.requests,
                                      " requests, at ", after.ToToken()));
      return;
    }
    const std::optional<Position> stop_at = stop.Get();
    // An empty page waits on the server for the next commit (long-poll)
    // rather than the consumer sleeping between polls.
    std::string target =
        absl::StrCat("/events?wait=200&limit=", kPageLimit, c.filter);
    // The first request has no cursor: the start of the feed.
    if (!first) absl::StrAppend(&target, "&after=", after.ToToken());
    first = false;
    auto r = (*client)->Send("GET", target);
    ++c.requests;
    if (!r.ok() || r->status != 200) {
      c.errors.push_back(
          absl::StrCat(target, ": ",
                       r.ok() ? absl::StrCat(r->status, " ", r->body)
                              : r.status().ToString()));
      return;
    }
    rapidjson::Document doc;
    doc.Parse(r->body.c_str());
    if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("items") ||
        !doc["items"].IsArray() || !doc.HasMember("next") ||
        !doc["next"].IsString()) {
      c.errors.push_back(
          absl::StrCat(target, ": not a page: ", r->body.substr(0, 200)));
      return;
    }
    auto next = Position::FromToken(doc["next"].GetString());
    if (!next.ok()) {
      c.errors.push_back(absl::StrCat(target, ": bad next"));
      return;
    }
    Position previous = after;
    for (const auto& v : doc["items"].GetArray()) {
      Item item;
      item.id = v["id"].GetString();
      item.type = v["type"].GetString();
      item.subject = v["subject"].GetString();
      item.category = v["category"].GetString();
      item.version = v["streamversion"].GetInt64();
      auto position = Position::FromToken(v["position"].GetString());
      if (!position.ok() || *position <= previous) {
        c.errors.push_back(absl::StrCat(target, ": item ", item.id,
                                        " not after ", previous.ToToken()));
        return;
      }
      item.position = *position;
      previous = *position;
      c.items.push_back(std::move(item));
    }
    if (*next < previous) {
      c.errors.push_back(absl::StrCat(target, ": next ", next->ToToken(),
                                      " behind ", previous.ToToken()));
      return;
    }
    if (stop_at.has_value() && *stop_at < *next) {
      c.errors.push_back(absl::StrCat(target, ": next ", next->ToToken(),
                                      " past the last event ",
                                      stop_at->ToToken()));
      return;
    }
    after = *next;
    c.last_next = after;
    // Known before this request was sent and reached: nothing can follow.
    if (stop_at.has_value() && after == *stop_at) return;
  }
}

TEST_CASE(
    "consumers of GET /events get every published event once, in "
    "order, while 16 writers append 100,000 events",
    "[integration][pg]") {
  cqrs::testing::TestSchema schema(24);
  cqrs::App app("stress");
  app.Event<Opened>("Opened").Publish<Opened>("stress.opened");
  app.Event<Deposited>("Deposited").Publish<Deposited>("stress.deposited");
  app.Event<Noted>("Noted").Publish<Noted>("stress.noted", 2);
  app.Event<Audited>("Audited");
  auto& ledgers = app.Aggregate<Ledger, Noted>("ledger").On<Noted>(
      [](Ledger& l, const Noted&) { ++l.notes; });
  using Ledgers = cqrs::AggregateOf<Ledger, Noted>;
  app.Command<Noted>("POST", "/ledgers/{id}/note", ledgers,
                     [](const Ledger&, const Noted& n) -> Ledgers::Decision {
                       return Ledgers::Emit(n);
                     });
  REQUIRE(cqrs::MigrateApp(schema.pool(), schema.name()).ok());
  cqrs::ServeOptions options;
  options.schema = schema.name();
  auto server = cqrs::AppServer::Start(app, &schema.pool(), options);
  INFO(server.status().ToString());
  REQUIRE(server.ok());
  const int port = (*server)->port();
  const std::string token =
      cqrs::testing::CreateToken(schema.pool(), schema.name());
  cqrs::eventstore::PostgresEventStore& store = (*server)->store();

  // A subject written by a holder, in both categories.
  const std::string subject = "1x2";
  std::vector<Consumer> consumers(4);
  consumers[0].name = "all";
  consumers[0].matches = [](const Item&) { return true; };
  consumers[1].name = "type";
  consumers[1].filter = "&type=stress.noted.v2";
  consumers[1].matches = [](const Item& i) {
    return i.type == "stress.noted.v2";
  };
  consumers[2].name = "category";
  consumers[2].filter = "&category=ledger";
  consumers[2].matches = [](const Item& i) { return i.category == "ledger"; };
  consumers[3].name = "subject";
  consumers[3].filter = absl::StrCat("&subject=", subject);
  consumers[3].matches = [subject](const Item& i) {
    return i.subject == subject;
  };

  StopAt stop;
  Gate gate;
  std::vector<std::thread> readers;
  for (Consumer& c : consumers) {
    readers.emplace_back([&, port] { Follow(port, token, stop, c); });
  }
  std::vector<WriterLog> logs(kWriters);
  std::vector<std::thread> writers;
  for (int w = 0; w < kStoreWriters; ++w) {
    writers.emplace_back(
        [&, w] { StoreWriter(w, schema.url(), store, gate, logs[w]); });
  }
  writers.emplace_back([&, port] { CommandWriter(port, token, logs.back()); });
  // See Gate.
  const bool all_arrived = cqrs::testing::Eventually(
      [&] { return gate.arrived() == kStoreWriters; }, kDeadline);
  schema.Exec(absl::StrCat("ANALYZE ", schema.name(), ".events"));
  gate.Open();
  for (std::thread& t : writers) t.join();

  // The store's own commit order, read until every event is readable (a
  // commit is readable once no older transaction of the database, of any
  // test running beside this one, is open).
  std::vector<cqrs::eventstore::RecordedEvent> truth;
  Position at = Position::Start();
  const bool complete = cqrs::testing::Eventually(
      [&] {
        while (true) {
          auto page = store.ReadAll(at, 10000);
          if (!page.ok()) return false;
          if (page->events.empty()) break;
          at = page->next;
          for (auto& e : page->events) truth.push_back(std::move(e));
        }
        return truth.size() >= static_cast<size_t>(kTotalEvents);
      },
      kDeadline);
  stop.Set(at);
  for (std::thread& t : readers) t.join();

  for (const WriterLog& log : logs) {
    for (const std::string& e : log.errors) FAIL_CHECK(e);
  }
  CHECK(all_arrived);
  REQUIRE(complete);
  REQUIRE(truth.size() == static_cast<size_t>(kTotalEvents));

  // Commit order keeps every stream's versions in order, and the store
  // holds what the writers appended.
  std::map<std::string, std::vector<std::string>> written;
  for (const WriterLog& log : logs) {
    for (const auto& [stream, types] : log.types) written[stream] = types;
  }
  std::map<std::string, std::vector<std::string>> stored;
  long long out_of_order = 0;
  for (const auto& e : truth) {
    std::vector<std::string>& types = stored[e.stream_id];
    if (e.stream_version != static_cast<int64_t>(types.size()) + 1) {
      ++out_of_order;
    }
    types.push_back(e.event_type);
  }
  CHECK(out_of_order == 0);
  CHECK(stored == written);

  // The feed every consumer should have seen, before its filter.
  std::vector<Item> published;
  for (const auto& e : truth) {
    const std::string cloud = CloudTypeOf(e.event_type);
    if (cloud.empty()) continue;
    Item item;
    item.id = e.event_id;
    item.type = cloud;
    item.subject = std::string(cqrs::integration::SubjectOf(e.stream_id));
    item.category = std::string(cqrs::eventstore::CategoryOf(e.stream_id));
    item.version = e.stream_version;
    item.position = e.position;
    published.push_back(std::move(item));
  }
  REQUIRE(published.size() > 70000);  // three in four types are published

  for (const Consumer& c : consumers) {
    INFO("consumer " << c.name << " (" << c.requests << " requests)");
    for (const std::string& e : c.errors) FAIL_CHECK(e);
    std::vector<const Item*> expected;
    for (const Item& i : published) {
      if (c.matches(i)) expected.push_back(&i);
    }
    CHECK(!expected.empty());
    // Each id once.
    std::set<std::string> ids;
    size_t repeated = 0;
    for (const Item& i : c.items) {
      if (!ids.insert(i.id).second) ++repeated;
    }
    CHECK(repeated == 0);
    size_t skipped = 0;
    for (const Item* i : expected) skipped += ids.count(i->id) == 0 ? 1 : 0;
    CHECK(skipped == 0);
    // The same events in the same order, each as stored.
    CHECK(c.items.size() == expected.size());
    size_t first_difference = 0;
    while (first_difference < std::min(c.items.size(), expected.size())) {
      const Item& got = c.items[first_difference];
      const Item& want = *expected[first_difference];
      if (got.id != want.id || got.type != want.type ||
          got.subject != want.subject || got.category != want.category ||
          got.version != want.version || got.position != want.position) {
        break;
      }
      ++first_difference;
    }
    CHECK(first_difference == expected.size());
    // Past everything, filtered or not: no false lag, no rescan.
    CHECK(c.last_next.ToToken() == at.ToToken());
  }
}

}  // namespace

// The shared tail reader (integration/feed_hub.h) on the in-memory store:
// catch-up then live without a gap or a repeat, filters, long-polls, a
// subscriber that falls behind, shutdown. Through the real HTTP server and
// PostgreSQL: tests/app/app_server_test.cc and tests/integration/
// feed_stream_test.cc.
#include "integration/feed_hub.h"

#include <pqxx/pqxx>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "eventstore/in_memory_event_store.h"
#include "eventstore/postgres_event_store.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace cqrs::integration {
namespace {

using eventstore::ExpectedVersion;
using eventstore::NewEvent;
using eventstore::Position;

// What the server's StreamWriter does, minus the socket: everything written
// is "sent" at once unless the test holds the client still (`stalled`).
class RecordingWriter : public http::StreamWriter {
 public:
  bool Write(std::string data) override {
    std::function<void()> writable;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return false;
      text_ += data;
      if (stalled_) {
        buffered_ += data.size();
      } else if (on_writable_) {
        writable = std::exchange(on_writable_, nullptr);
      }
    }
    if (writable) writable();
    return true;
  }
  size_t buffered() const override {
    absl::MutexLock lock(&mu_);
    return buffered_;
  }
  void Close() override { End(); }
  bool closed() const override {
    absl::MutexLock lock(&mu_);
    return closed_;
  }
  void OnClose(std::function<void()> f) override {
    {
      absl::MutexLock lock(&mu_);
      if (!closed_) {
        on_close_ = std::move(f);
        return;
      }
    }
    f();
  }
  void OnWritable(size_t threshold, std::function<void()> f) override {
    {
      absl::MutexLock lock(&mu_);
      if (!closed_ && buffered_ > threshold) {
        on_writable_ = std::move(f);
        return;
      }
    }
    f();
  }

  void Stall() {
    absl::MutexLock lock(&mu_);
    stalled_ = true;
  }
  // The client went away.
  void End() {
    std::function<void()> on_close;
    std::function<void()> writable;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      closed_ = true;
      on_close = std::exchange(on_close_, nullptr);
      writable = std::exchange(on_writable_, nullptr);
    }
    if (writable) writable();
    if (on_close) on_close();
  }
  std::string text() const {
    absl::MutexLock lock(&mu_);
    return text_;
  }
  // The ids of the events received, in order.
  std::vector<std::string> Ids() const {
    std::vector<std::string> ids;
    for (absl::string_view line : absl::StrSplit(text(), '\n')) {
      if (absl::ConsumePrefix(&line, "id: ")) ids.emplace_back(line);
    }
    return ids;
  }
  // The event types received, in order.
  std::vector<std::string> Types() const {
    std::vector<std::string> types;
    for (absl::string_view line : absl::StrSplit(text(), '\n')) {
      if (absl::ConsumePrefix(&line, "event: ")) types.emplace_back(line);
    }
    return types;
  }

 private:
  mutable absl::Mutex mu_;
  std::string text_ ABSL_GUARDED_BY(mu_);
  size_t buffered_ ABSL_GUARDED_BY(mu_) = 0;
  bool stalled_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_close_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_writable_ ABSL_GUARDED_BY(mu_);
};

NewEvent Event(const std::string& type, const std::string& data = "{}") {
  NewEvent e;
  e.event_type = type;
  e.data = data;
  e.metadata = "{}";
  return e;
}

Publication Bank() {
  Publication p("/bank");
  REQUIRE(p.Add({"Opened", "bank.account.opened", 1, nullptr, ""}).ok());
  REQUIRE(p.Add({"Deposited", "bank.account.deposited", 1, nullptr, ""}).ok());
  return p;
}

FeedHubOptions Fast() {
  FeedHubOptions options;
  options.poll_interval = absl::Milliseconds(5);
  options.catch_up_page = 7;  // several pages for a short history
  return options;
}

// Appends `n` events to account-<i>: an Opened, then Deposited, with an
// unpublished Audited between each.
void Append(eventstore::EventStore& store, int first, int n) {
  for (int i = first; i < first + n; ++i) {
    REQUIRE(store
                .Append(absl::StrCat("account-", i), ExpectedVersion::Any(),
                        {Event("Opened"), Event("Audited"),
                         Event("Deposited", R"({"amount":5})")})
                .ok());
  }
}

// Every published event of the store in order: the ids a subscriber from
// the start must receive.
std::vector<std::string> AllIds(eventstore::EventStore& store,
                                const Publication& pub) {
  FeedQuery q;
  q.limit = kMaxFeedLimit;
  std::vector<std::string> ids;
  while (true) {
    auto page = ReadFeed(store, pub, q);
    REQUIRE(page.ok());
    for (const FeedItem& item : page->items) {
      ids.push_back(item.position.ToToken());
    }
    q.after = page->next;
    if (page->at_head) return ids;
  }
}

TEST_CASE(
    "a subscriber catches up, then follows live, without a gap or a "
    "repeat",
    "[integration]") {
  eventstore::InMemoryEventStore store;
  const Publication pub = Bank();
  Append(store, 0, 20);  // 40 published events, 60 in all
  FeedHub hub(&store, &pub, Fast());
  hub.Start();
  auto writer = std::make_shared<RecordingWriter>();
  hub.Subscribe(FeedQuery(), writer);
  CHECK(absl::StartsWith(writer->text(), "retry: 2000\n\n"));
  REQUIRE(testing::Eventually([&] { return hub.live_subscribers() == 1; }));
  CHECK(writer->Ids() == AllIds(store, pub));

  // Live: appended while it follows.
  for (int round = 0; round < 5; ++round) Append(store, 100 + round * 3, 3);
  const std::vector<std::string> all = AllIds(store, pub);
  REQUIRE(all.size() == 70);
  REQUIRE(testing::Eventually([&] { return writer->Ids().size() >= 70; }));
  CHECK(writer->Ids() == all);
  // Each frame is one event: id, event type, then the CloudEvent.
  CHECK(absl::StrContains(writer->text(),
                          "\nevent: bank.account.deposited.v1\ndata: {"));
  writer->End();
  CHECK(testing::Eventually([&] { return hub.subscribers() == 0; }));
}

TEST_CASE("a subscriber resumes after its cursor with its filters",
          "[integration]") {
  eventstore::InMemoryEventStore store;
  const Publication pub = Bank();
  Append(store, 0, 10);
  const std::vector<std::string> all = AllIds(store, pub);
  FeedHub hub(&store, &pub, Fast());
  hub.Start();

  auto resumed = std::make_shared<RecordingWriter>();
  FeedQuery from_middle;
  from_middle.after = *Position::FromToken(all[9]);
  hub.Subscribe(from_middle, resumed);

  auto deposits = std::make_shared<RecordingWriter>();
  FeedQuery only_deposits;
  only_deposits.types = {"bank.account.deposited.v1"};
  hub.Subscribe(only_deposits, deposits);

  auto one_account = std::make_shared<RecordingWriter>();
  FeedQuery subject;
  subject.subject = "12";
  hub.Subscribe(subject, one_account);

  REQUIRE(testing::Eventually([&] { return hub.live_subscribers() == 3; }));
  Append(store, 10, 5);  // account-10 .. account-14
  REQUIRE(testing::Eventually([&] { return deposits->Ids().size() == 15; }));
  REQUIRE(testing::Eventually([&] { return resumed->Ids().size() == 20; }));
  REQUIRE(testing::Eventually([&] { return one_account->Ids().size() == 2; }));
  const std::vector<std::string> now = AllIds(store, pub);
  CHECK(resumed->Ids() ==
        std::vector<std::string>(now.begin() + 10, now.end()));
  for (const std::string& type : deposits->Types()) {
    CHECK(type == "bank.account.deposited.v1");
  }
  CHECK(absl::StrContains(one_account->text(), R"("subject":"12")"));
  CHECK_FALSE(absl::StrContains(one_account->text(), R"("subject":"11")"));
}

TEST_CASE(
    "a live subscriber that falls too far behind is closed with a "
    "reason; the others go on",
    "[integration]") {
  eventstore::InMemoryEventStore store;
  const Publication pub = Bank();
  FeedHubOptions options = Fast();
  options.max_buffered_bytes = 4096;
  FeedHub hub(&store, &pub, options);
  hub.Start();
  auto stalled = std::make_shared<RecordingWriter>();
  auto reading = std::make_shared<RecordingWriter>();
  hub.Subscribe(FeedQuery(), stalled);
  hub.Subscribe(FeedQuery(), reading);
  REQUIRE(testing::Eventually([&] { return hub.live_subscribers() == 2; }));
  stalled->Stall();
  Append(store, 0, 50);
  REQUIRE(testing::Eventually([&] { return reading->Ids().size() == 100; }));
  REQUIRE(testing::Eventually([&] { return stalled->closed(); }));
  CHECK(absl::EndsWith(stalled->text(),
                       ": closed: this client fell too far behind; reconnect "
                       "with Last-Event-ID to resume\n\n"));
  CHECK(hub.subscribers() == 1);
  CHECK(reading->Ids() == AllIds(store, pub));
}

TEST_CASE(
    "a long-poll wakes when the tail passes its cursor, at its "
    "deadline, or at Stop()",
    "[integration]") {
  eventstore::InMemoryEventStore store;
  const Publication pub = Bank();
  Append(store, 0, 1);
  FeedHub hub(&store, &pub, Fast());
  hub.Start();
  auto head = store.HeadPosition();
  REQUIRE(head.ok());

  std::atomic<int> passed{0};
  REQUIRE(hub.WaitForEvents(*head, absl::Now() + absl::Seconds(60),
                            [&](FeedHub::WaitEnd end) {
                              if (end == FeedHub::WaitEnd::kPassed) ++passed;
                            }));
  Append(store, 1, 1);
  CHECK(testing::Eventually([&] { return passed.load() == 1; }));

  // Already passed: at once.
  REQUIRE(hub.WaitForEvents(Position::Start(), absl::Now() + absl::Seconds(60),
                            [&](FeedHub::WaitEnd end) {
                              if (end == FeedHub::WaitEnd::kPassed) ++passed;
                            }));
  CHECK(testing::Eventually([&] { return passed.load() == 2; }));

  std::atomic<bool> expired{false};
  auto now = store.HeadPosition();
  REQUIRE(now.ok());
  REQUIRE(hub.WaitForEvents(*now, absl::Now() + absl::Milliseconds(50),
                            [&](FeedHub::WaitEnd end) {
                              expired = end == FeedHub::WaitEnd::kDeadline;
                            }));
  CHECK(testing::Eventually([&] { return expired.load(); }));

  std::atomic<bool> stopped{false};
  REQUIRE(hub.WaitForEvents(*now, absl::Now() + absl::Seconds(60),
                            [&](FeedHub::WaitEnd end) {
                              stopped = end == FeedHub::WaitEnd::kStopping;
                            }));
  auto subscriber = std::make_shared<RecordingWriter>();
  hub.Subscribe(FeedQuery(), subscriber);
  hub.Stop();
  CHECK(stopped.load());
  CHECK(subscriber->closed());
  CHECK(absl::EndsWith(subscriber->text(),
                       ": closed: the server is shutting down; reconnect "
                       "with Last-Event-ID to resume\n\n"));
  CHECK_FALSE(hub.WaitForEvents(*now, absl::Now() + absl::Seconds(1),
                                [](FeedHub::WaitEnd) {}));
}

TEST_CASE("subscribers get a heartbeat comment", "[integration]") {
  eventstore::InMemoryEventStore store;
  const Publication pub = Bank();
  FeedHubOptions options = Fast();
  options.heartbeat = absl::Milliseconds(20);
  FeedHub hub(&store, &pub, options);
  hub.Start();
  auto writer = std::make_shared<RecordingWriter>();
  hub.Subscribe(FeedQuery(), writer);
  CHECK(testing::Eventually(
      [&] { return absl::StrContains(writer->text(), "\n\n:\n\n"); }));
}

// A hub on a PostgreSQL store, woken by its notifications only (the poll
// is 30 s away), with one live subscriber from the start.
struct PgHub {
  PgHub() {
    FeedHubOptions options;
    options.poll_interval = absl::Seconds(30);
    hub = std::make_unique<FeedHub>(store.get(), &pub, options,
                                    ChangeWaitOn(schema.url(), schema.name()));
    hub->Start();
    hub->Subscribe(FeedQuery(), writer);
    REQUIRE(testing::Eventually([&] { return hub->live_subscribers() == 1; }));
  }

  testing::TestSchema schema;
  std::unique_ptr<eventstore::PostgresEventStore> store =
      schema.NewEventStore();
  const Publication pub = Bank();
  std::shared_ptr<RecordingWriter> writer = std::make_shared<RecordingWriter>();
  std::unique_ptr<FeedHub> hub;
};

TEST_CASE(
    "on PostgreSQL, a live subscriber does not skip a transaction "
    "that commits late, and gets none twice",
    "[integration][pg]") {
  PgHub f;

  // A writer takes its transaction id first and stays open while others
  // commit: their events wait behind it.
  pqxx::connection held(f.schema.url());
  pqxx::work held_tx(held);
  auto in_tx = f.store->InTransaction(held_tx);
  REQUIRE(in_tx
              ->Append("account-late", ExpectedVersion::NoStream(),
                       {Event("Opened")})
              .ok());
  for (int i = 0; i < 3; ++i) Append(*f.store, i, 1);
  held_tx.commit();
  REQUIRE(testing::Eventually([&] { return f.writer->Ids().size() >= 7; }));
  const std::vector<std::string> all = AllIds(*f.store, f.pub);
  REQUIRE(all.size() == 7);
  CHECK(f.writer->Ids() == all);
  CHECK(absl::StrContains(f.writer->text(), R"("subject":"late")"));
}

TEST_CASE(
    "on PostgreSQL, the tail survives the loss of its notification "
    "connection",
    "[integration][pg]") {
  PgHub f;
  Append(*f.store, 0, 1);
  REQUIRE(testing::Eventually([&] { return f.writer->Ids().size() == 2; }));

  const std::string listener =
      absl::StrCat("application_name = 'cqrs listener ", f.schema.name(), "'");
  REQUIRE(f.schema.QueryInt("SELECT count(*) FROM pg_stat_activity WHERE " +
                            listener) == 1);
  f.schema.Exec(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE " +
      listener);
  // Reconnected (the kill is noticed at the next wait, within 200 ms)...
  REQUIRE(testing::Eventually([&] {
    return f.schema.QueryInt("SELECT count(*) FROM pg_stat_activity WHERE " +
                             listener) == 1;
  }));
  // ... and what commits from now on arrives long before the 30 s poll.
  Append(*f.store, 1, 2);
  REQUIRE(testing::Eventually([&] { return f.writer->Ids().size() == 6; }));
  CHECK(f.writer->Ids() == AllIds(*f.store, f.pub));
}

}  // namespace
}  // namespace cqrs::integration

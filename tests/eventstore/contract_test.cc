// The EventStore contract (eventstore/event_store.h), run against every
// implementation: each CONTRACT_TEST body becomes one test case per store.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "eventstore/event_store.h"
#include "eventstore/in_memory_event_store.h"
#include "eventstore/postgres_event_store.h"
#include "framework/json.h"
#include "framework/uuid.h"
#include "rapidjson/document.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace Catch {
template <>
struct StringMaker<cqrs::eventstore::Position> {
  static std::string convert(const cqrs::eventstore::Position& p) {
    return p.ToToken();
  }
};
}  // namespace Catch

namespace cqrs::eventstore {
namespace {

// Forwards to the store under test and remembers the newest position that an
// append reported. PostgresEventStore's ReadAll() and HeadPosition() show
// only transactions older than every running one, and other test processes
// share the cluster, so a read that must see every event so far first waits
// for that position (WaitUntilVisible).
class StoreUnderTest : public EventStore {
 public:
  // `store` must outlive this object.
  explicit StoreUnderTest(EventStore& store) : store_(store) {}

  // Waits up to a minute until HeadPosition() reaches every position an
  // append has reported; kDeadlineExceeded if it does not.
  absl::Status WaitUntilVisible() {
    Position newest;
    {
      absl::MutexLock lock(&mu_);
      newest = newest_;
    }
    absl::Status read = absl::OkStatus();
    Position head;
    const bool visible = testing::Eventually(
        [&] {
          absl::StatusOr<Position> now = store_.HeadPosition();
          if (!now.ok()) read = now.status();
          if (now.ok()) head = *now;
          return !now.ok() || head >= newest;
        },
        absl::Minutes(1));
    if (!read.ok()) return read;
    if (!visible) {
      return absl::DeadlineExceededError(
          absl::StrCat("HeadPosition() stays at ", head.ToToken(),
                       " while an append returned ", newest.ToToken()));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<AppendResult> Append(absl::string_view stream_id,
                                      ExpectedVersion expected,
                                      std::vector<NewEvent> events) override {
    absl::StatusOr<AppendResult> result =
        store_.Append(stream_id, expected, std::move(events));
    if (result.ok()) {
      absl::MutexLock lock(&mu_);
      newest_ = std::max(newest_, result->position);
    }
    return result;
  }
  absl::StatusOr<std::vector<RecordedEvent>> ReadStream(
      absl::string_view stream_id, Direction direction, int64_t from_version,
      int limit) override {
    return store_.ReadStream(stream_id, direction, from_version, limit);
  }
  absl::StatusOr<ReadAllResult> ReadAll(Position after, int limit) override {
    return store_.ReadAll(after, limit);
  }
  absl::StatusOr<ReadAllResult> ReadCategory(absl::string_view category,
                                             Position after,
                                             int limit) override {
    return store_.ReadCategory(category, after, limit);
  }
  absl::StatusOr<StreamInfo> GetStreamInfo(
      absl::string_view stream_id) override {
    return store_.GetStreamInfo(stream_id);
  }
  absl::Status DeleteStream(absl::string_view stream_id,
                            ExpectedVersion expected) override {
    return store_.DeleteStream(stream_id, expected);
  }
  absl::Status SaveSnapshot(const Snapshot& snapshot) override {
    return store_.SaveSnapshot(snapshot);
  }
  absl::StatusOr<Snapshot> LoadSnapshot(absl::string_view stream_id) override {
    return store_.LoadSnapshot(stream_id);
  }
  absl::StatusOr<Position> HeadPosition() override {
    return store_.HeadPosition();
  }

 private:
  EventStore& store_;
  absl::Mutex mu_;
  Position newest_ ABSL_GUARDED_BY(mu_);
};

// Defines `void name(StoreUnderTest& store)` and runs it once on a fresh
// InMemoryEventStore and once on a PostgresEventStore in a schema of its own.
#define CONTRACT_TEST(name, title)                              \
  void name(StoreUnderTest& store);                             \
  TEST_CASE("InMemoryEventStore: " title, "[eventstore]") {     \
    InMemoryEventStore store;                                   \
    StoreUnderTest under_test(store);                           \
    name(under_test);                                           \
  }                                                             \
  TEST_CASE("PostgresEventStore: " title, "[eventstore][pg]") { \
    cqrs::testing::TestSchema schema;                           \
    std::unique_ptr<EventStore> store = schema.NewEventStore(); \
    StoreUnderTest under_test(*store);                          \
    name(under_test);                                           \
  }                                                             \
  void name(StoreUnderTest& store)

absl::Status StatusOf(const absl::Status& status) { return status; }
template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& result) {
  return result.status();
}

// Macros rather than functions so that failures point at the caller's line.
#define REQUIRE_OK(expr)                                    \
  do {                                                      \
    const absl::Status require_ok_status_ = StatusOf(expr); \
    INFO(require_ok_status_);                               \
    REQUIRE(require_ok_status_.ok());                       \
  } while (false)

#define CHECK_CODE(expr, expected_code)                     \
  do {                                                      \
    const absl::Status check_code_status_ = StatusOf(expr); \
    INFO(check_code_status_);                               \
    CHECK(check_code_status_.code() == (expected_code));    \
  } while (false)

constexpr int kMaxLimit = kMaxReadLimit;

NewEvent Event(std::string type, std::string data = "{}") {
  NewEvent event;
  event.event_id = NewUuid();
  event.event_type = std::move(type);
  event.data = std::move(data);
  return event;
}

// `count` events with data {"i": first_i}, {"i": first_i + 1}, ...
std::vector<NewEvent> Events(int count, int first_i = 1) {
  std::vector<NewEvent> events;
  for (int i = 0; i < count; ++i) {
    events.push_back(
        Event("Tested", absl::StrCat(R"({"i":)", first_i + i, "}")));
  }
  return events;
}

std::vector<std::string> IdsOf(const std::vector<NewEvent>& events) {
  std::vector<std::string> ids;
  for (const NewEvent& e : events) ids.push_back(e.event_id);
  return ids;
}

std::vector<std::string> IdsOf(const std::vector<RecordedEvent>& events) {
  std::vector<std::string> ids;
  for (const RecordedEvent& e : events) ids.push_back(e.event_id);
  return ids;
}

std::vector<int64_t> VersionsOf(const std::vector<RecordedEvent>& events) {
  std::vector<int64_t> versions;
  for (const RecordedEvent& e : events) versions.push_back(e.stream_version);
  return versions;
}

std::vector<int64_t> Range(int64_t from, int64_t to) {
  std::vector<int64_t> out;
  if (from <= to) {
    for (int64_t v = from; v <= to; ++v) out.push_back(v);
  } else {
    for (int64_t v = from; v >= to; --v) out.push_back(v);
  }
  return out;
}

// Semantic JSON equality: PostgreSQL's jsonb does not keep key order or
// whitespace.
bool JsonEquals(const std::string& a, const std::string& b) {
  rapidjson::Document da;
  rapidjson::Document db;
  da.Parse(a.c_str(), a.size());
  db.Parse(b.c_str(), b.size());
  return !da.HasParseError() && !db.HasParseError() && da == db;
}

AppendResult AppendOk(StoreUnderTest& store, absl::string_view stream_id,
                      ExpectedVersion expected, std::vector<NewEvent> events) {
  INFO("append to " << stream_id << ", expected " << expected.ToString());
  absl::StatusOr<AppendResult> result =
      store.Append(stream_id, expected, std::move(events));
  REQUIRE_OK(result);
  CHECK_FALSE(result->already_stored);
  return *std::move(result);
}

std::vector<RecordedEvent> ReadStreamOk(StoreUnderTest& store,
                                        absl::string_view stream_id,
                                        Direction direction,
                                        int64_t from_version, int limit) {
  absl::StatusOr<std::vector<RecordedEvent>> events =
      store.ReadStream(stream_id, direction, from_version, limit);
  REQUIRE_OK(events);
  return *std::move(events);
}

std::vector<RecordedEvent> ReadWholeStream(StoreUnderTest& store,
                                           absl::string_view stream_id) {
  return ReadStreamOk(store, stream_id, Direction::kForward, 1, kMaxLimit);
}

// Every event after `after` in commit order, page by page.
std::vector<RecordedEvent> ReadAllEvents(StoreUnderTest& store,
                                         Position after = Position::Start(),
                                         int page_size = kMaxLimit) {
  REQUIRE_OK(store.WaitUntilVisible());
  std::vector<RecordedEvent> all;
  for (;;) {
    absl::StatusOr<ReadAllResult> page = store.ReadAll(after, page_size);
    REQUIRE_OK(page);
    if (page->events.empty()) {
      CHECK(page->next == after);
      return all;
    }
    REQUIRE(page->events.size() <= static_cast<size_t>(page_size));
    REQUIRE(page->next == page->events.back().position);
    REQUIRE(after < page->next);
    after = page->next;
    for (RecordedEvent& e : page->events) all.push_back(std::move(e));
  }
}

Position HeadOk(StoreUnderTest& store) {
  REQUIRE_OK(store.WaitUntilVisible());
  absl::StatusOr<Position> head = store.HeadPosition();
  REQUIRE_OK(head);
  return *head;
}

// What "the store is unchanged" compares.
struct StoreState {
  Position head;
  std::vector<std::string> event_ids;  // commit order
  std::vector<Position> positions;
};

StoreState Capture(StoreUnderTest& store) {
  StoreState state;
  state.head = HeadOk(store);
  for (const RecordedEvent& e : ReadAllEvents(store)) {
    state.event_ids.push_back(e.event_id);
    state.positions.push_back(e.position);
  }
  return state;
}

#define CHECK_UNCHANGED(store, before)                           \
  do {                                                           \
    const StoreState check_unchanged_now_ = Capture(store);      \
    CHECK(check_unchanged_now_.head == (before).head);           \
    CHECK(check_unchanged_now_.event_ids == (before).event_ids); \
    CHECK(check_unchanged_now_.positions == (before).positions); \
  } while (false)

int64_t StreamVersion(StoreUnderTest& store, absl::string_view stream_id) {
  absl::StatusOr<StreamInfo> info = store.GetStreamInfo(stream_id);
  if (absl::IsNotFound(info.status())) return 0;
  REQUIRE_OK(info);
  return info->version;
}

bool WithinAMinuteOf(absl::Time t, absl::Time from, absl::Time to) {
  return t >= from - absl::Minutes(1) && t <= to + absl::Minutes(1);
}

// ---------------------------------------------------------------------------
// Appending and reading back.

CONTRACT_TEST(AppendStoresEventsAsGiven,
              "append to a new stream stores the events from version 1") {
  std::vector<NewEvent> events = {
      Event("Opened", R"({"owner":"ann","limits":{"daily":100}})"),
      Event("Deposited", R"({"amount":10})"),
      Event("Deposited", R"({"amount":5, "note":"\u00e9t\u00e9"})")};
  events[1].schema_version = 3;
  events[2].metadata = R"({"correlation_id":"c-1","causation_id":"x"})";

  const absl::Time before = absl::Now();
  const AppendResult result =
      AppendOk(store, "account-1", ExpectedVersion::NoStream(), events);
  const absl::Time after = absl::Now();
  CHECK(result.stream_id == "account-1");
  CHECK(result.first_version == 1);
  CHECK(result.last_version == 3);

  const std::vector<RecordedEvent> read = ReadWholeStream(store, "account-1");
  REQUIRE(read.size() == 3);
  for (size_t i = 0; i < read.size(); ++i) {
    INFO("event " << i);
    CHECK(read[i].event_id == events[i].event_id);
    CHECK(read[i].stream_id == "account-1");
    CHECK(read[i].stream_version == static_cast<int64_t>(i) + 1);
    CHECK(read[i].event_type == events[i].event_type);
    CHECK(read[i].schema_version == events[i].schema_version);
    CHECK(JsonEquals(read[i].data, events[i].data));
    CHECK(JsonEquals(read[i].metadata, events[i].metadata));
    CHECK(WithinAMinuteOf(read[i].recorded_at, before, after));
  }
  // One append is one transaction, in position order.
  CHECK(read[0].position < read[1].position);
  CHECK(read[1].position < read[2].position);
  CHECK(read[0].position.transaction_id == read[2].position.transaction_id);
  CHECK(result.position == read[2].position);

  absl::StatusOr<StreamInfo> info = store.GetStreamInfo("account-1");
  REQUIRE_OK(info);
  CHECK(info->stream_id == "account-1");
  CHECK(info->version == 3);

  CHECK(IdsOf(ReadAllEvents(store)) == IdsOf(events));
}

CONTRACT_TEST(AppendContinuesTheStream,
              "appends continue the stream's versions and the global order") {
  const AppendResult first =
      AppendOk(store, "order-7", ExpectedVersion::NoStream(), Events(2));
  const AppendResult other =
      AppendOk(store, "order-8", ExpectedVersion::NoStream(), Events(1));
  const AppendResult second =
      AppendOk(store, "order-7", ExpectedVersion::Exactly(2), Events(3, 3));

  CHECK(second.first_version == 3);
  CHECK(second.last_version == 5);
  CHECK(first.position < other.position);
  CHECK(other.position < second.position);
  CHECK(first.position.transaction_id != second.position.transaction_id);

  const std::vector<RecordedEvent> read = ReadWholeStream(store, "order-7");
  CHECK(VersionsOf(read) == Range(1, 5));
  for (const RecordedEvent& e : read) {
    CHECK(JsonEquals(e.data, absl::StrCat(R"({"i":)", e.stream_version, "}")));
  }
  CHECK(StreamVersion(store, "order-7") == 5);
  CHECK(StreamVersion(store, "order-8") == 1);
}

CONTRACT_TEST(AppendGeneratesMissingIds,
              "append generates ids for events without one") {
  std::vector<NewEvent> events = Events(3);
  events[0].event_id.clear();
  events[2].event_id.clear();
  AppendOk(store, "gen-1", ExpectedVersion::Any(), events);

  const std::vector<RecordedEvent> read = ReadWholeStream(store, "gen-1");
  REQUIRE(read.size() == 3);
  CHECK(IsUuid(read[0].event_id));
  CHECK(IsUuid(read[2].event_id));
  CHECK(read[1].event_id == events[1].event_id);
  const std::vector<std::string> ids = IdsOf(read);
  CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == 3);
}

CONTRACT_TEST(StreamIdsAreExact, "stream ids are stored and compared exactly") {
  const std::vector<std::string> ids = {
      "case-1",
      "Case-1",
      "case-1 ",
      " case-1",
      "it's-\"quoted\"",
      "percent-%_\\",
      "unicode-\xc3\xbcn\xc3\xaf\xc3\xa7\xc3\xb8"
      "d\xc3\xa9",
      std::string(kMaxStreamIdLength, 'x')};
  std::vector<std::string> event_ids;
  for (size_t i = 0; i < ids.size(); ++i) {
    INFO("stream '" << ids[i] << "'");
    std::vector<NewEvent> events = Events(static_cast<int>(i) + 1);
    const AppendResult result =
        AppendOk(store, ids[i], ExpectedVersion::NoStream(), events);
    CHECK(result.stream_id == ids[i]);
    CHECK(result.last_version == static_cast<int64_t>(i) + 1);
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    INFO("stream '" << ids[i] << "'");
    const std::vector<RecordedEvent> read = ReadWholeStream(store, ids[i]);
    CHECK(read.size() == i + 1);
    for (const RecordedEvent& e : read) CHECK(e.stream_id == ids[i]);
    CHECK(StreamVersion(store, ids[i]) == static_cast<int64_t>(i) + 1);
  }
  CHECK_CODE(store.GetStreamInfo("CASE-1"), absl::StatusCode::kNotFound);
  CHECK_CODE(store.GetStreamInfo("case-"), absl::StatusCode::kNotFound);
  CHECK_CODE(store.GetStreamInfo("percent-%"), absl::StatusCode::kNotFound);
}

CONTRACT_TEST(EventTypesAreStoredExactly,
              "event types are stored exactly, up to the limit") {
  std::vector<NewEvent> events = {Event("Type with spaces"),
                                  Event("types.are/free-form:\xc3\xa9"),
                                  Event(std::string(kMaxEventTypeLength, 't'))};
  AppendOk(store, "types-1", ExpectedVersion::Any(), events);
  const std::vector<RecordedEvent> read = ReadWholeStream(store, "types-1");
  REQUIRE(read.size() == 3);
  for (size_t i = 0; i < 3; ++i)
    CHECK(read[i].event_type == events[i].event_type);
}

// ---------------------------------------------------------------------------
// Expected versions.

// Appends two events that must conflict with a stream at `actual`, and checks
// that nothing was written.
void CheckConflict(StoreUnderTest& store, absl::string_view stream_id,
                   ExpectedVersion expected, int64_t actual) {
  INFO("stream " << stream_id << ", expected " << expected.ToString());
  const StoreState before = Capture(store);
  absl::StatusOr<AppendResult> result =
      store.Append(stream_id, expected, Events(2));
  CHECK_CODE(result, absl::StatusCode::kAborted);
  const std::optional<int64_t> reported =
      ConflictActualVersion(result.status());
  REQUIRE(reported.has_value());
  CHECK(*reported == actual);
  CHECK(StreamVersion(store, stream_id) == actual);
  CHECK_UNCHANGED(store, before);
}

CONTRACT_TEST(ExpectedAny, "expected version any") {
  AppendResult r = AppendOk(store, "any-1", ExpectedVersion::Any(), Events(2));
  CHECK(r.first_version == 1);
  r = AppendOk(store, "any-1", ExpectedVersion::Any(), Events(3));
  CHECK(r.first_version == 3);
  CHECK(r.last_version == 5);
  CHECK(StreamVersion(store, "any-1") == 5);
}

CONTRACT_TEST(ExpectedNoStream, "expected version no stream") {
  const AppendResult r =
      AppendOk(store, "nostream-1", ExpectedVersion::NoStream(), Events(2));
  CHECK(r.first_version == 1);
  CHECK(r.last_version == 2);
  CheckConflict(store, "nostream-1", ExpectedVersion::NoStream(), 2);
  CheckConflict(store, "nostream-1", ExpectedVersion::Exactly(0), 2);
  CHECK(ExpectedVersion::Exactly(0).kind() == ExpectedVersion::Kind::kNoStream);
}

CONTRACT_TEST(ExpectedStreamExists, "expected version stream exists") {
  CheckConflict(store, "exists-1", ExpectedVersion::StreamExists(), 0);
  CHECK_CODE(store.GetStreamInfo("exists-1"), absl::StatusCode::kNotFound);
  CHECK_CODE(store.ReadStream("exists-1", Direction::kForward, 1, 10),
             absl::StatusCode::kNotFound);

  AppendOk(store, "exists-1", ExpectedVersion::NoStream(), Events(1));
  const AppendResult r =
      AppendOk(store, "exists-1", ExpectedVersion::StreamExists(), Events(2));
  CHECK(r.first_version == 2);
  CHECK(r.last_version == 3);
}

CONTRACT_TEST(ExpectedExactly, "expected version exactly n") {
  CheckConflict(store, "exactly-1", ExpectedVersion::Exactly(1), 0);
  CheckConflict(store, "exactly-1", ExpectedVersion::Exactly(5), 0);

  AppendOk(store, "exactly-1", ExpectedVersion::Exactly(0), Events(3));
  const AppendResult r =
      AppendOk(store, "exactly-1", ExpectedVersion::Exactly(3), Events(1));
  CHECK(r.first_version == 4);
  CHECK(r.last_version == 4);

  CheckConflict(store, "exactly-1", ExpectedVersion::Exactly(3), 4);
  CheckConflict(store, "exactly-1", ExpectedVersion::Exactly(5), 4);
  CheckConflict(store, "exactly-1", ExpectedVersion::Exactly(1), 4);
  CheckConflict(store, "exactly-1", ExpectedVersion::Exactly(1000), 4);

  AppendOk(store, "exactly-1", ExpectedVersion::Exactly(4), Events(1));
  CHECK(StreamVersion(store, "exactly-1") == 5);
}

CONTRACT_TEST(ConflictOnlyCarriesVersionOnConflicts,
              "ConflictActualVersion is empty for other errors") {
  AppendOk(store, "cav-1", ExpectedVersion::Any(), Events(1));
  absl::StatusOr<AppendResult> bad =
      store.Append("", ExpectedVersion::Any(), Events(1));
  CHECK_FALSE(bad.ok());
  CHECK_FALSE(ConflictActualVersion(bad.status()).has_value());
  CHECK_FALSE(ConflictActualVersion(absl::OkStatus()).has_value());
  CHECK_FALSE(
      ConflictActualVersion(absl::AbortedError("no payload")).has_value());
}

CONTRACT_TEST(NegativeExactVersionsAreRefused,
              "a negative exact version is kInvalidArgument and changes "
              "nothing") {
  AppendOk(store, "neg-1", ExpectedVersion::NoStream(), Events(2));
  const StoreState before = Capture(store);
  for (int64_t v : {-1, -2, -7}) {
    INFO("Exactly(" << v << ")");
    REQUIRE(ExpectedVersion::Exactly(v).kind() ==
            ExpectedVersion::Kind::kExactly);
    CHECK_CODE(store.Append("neg-1", ExpectedVersion::Exactly(v), Events(1)),
               absl::StatusCode::kInvalidArgument);
    CHECK_CODE(store.Append("neg-1", ExpectedVersion::Exactly(v), Events(2)),
               absl::StatusCode::kInvalidArgument);
    CHECK_CODE(store.Append("neg-2", ExpectedVersion::Exactly(v), Events(1)),
               absl::StatusCode::kInvalidArgument);
    CHECK_CODE(store.DeleteStream("neg-1", ExpectedVersion::Exactly(v)),
               absl::StatusCode::kInvalidArgument);
  }
  CHECK_UNCHANGED(store, before);
  CHECK(StreamVersion(store, "neg-1") == 2);
  CHECK_CODE(store.GetStreamInfo("neg-2"), absl::StatusCode::kNotFound);

  // The stream still takes its true version.
  AppendOk(store, "neg-1", ExpectedVersion::Exactly(2), Events(1));
  REQUIRE_OK(store.DeleteStream("neg-1", ExpectedVersion::Exactly(3)));
}

// ---------------------------------------------------------------------------
// Atomicity and idempotency.

CONTRACT_TEST(FailedAppendWritesNothing,
              "a failed multi-event append writes none of its events") {
  AppendOk(store, "atom-1", ExpectedVersion::NoStream(), Events(2));
  const std::vector<NewEvent> elsewhere = Events(1);
  AppendOk(store, "atom-2", ExpectedVersion::NoStream(), elsewhere);
  const StoreState before = Capture(store);

  // The third event's id belongs to another stream's event.
  std::vector<NewEvent> events = Events(3, 3);
  events[2].event_id = elsewhere[0].event_id;
  CHECK_CODE(store.Append("atom-1", ExpectedVersion::Exactly(2), events),
             absl::StatusCode::kAlreadyExists);
  CHECK_UNCHANGED(store, before);
  CHECK(StreamVersion(store, "atom-1") == 2);

  // The same call to a new stream must not create it.
  CHECK_CODE(store.Append("atom-3", ExpectedVersion::NoStream(), events),
             absl::StatusCode::kAlreadyExists);
  CHECK_CODE(store.GetStreamInfo("atom-3"), absl::StatusCode::kNotFound);
  CHECK_UNCHANGED(store, before);

  // The ids of the events that were not written are still free.
  events.pop_back();
  const AppendResult r =
      AppendOk(store, "atom-1", ExpectedVersion::Exactly(2), events);
  CHECK(r.first_version == 3);
  CHECK(IdsOf(ReadStreamOk(store, "atom-1", Direction::kForward, 3, 10)) ==
        IdsOf(events));
}

void CheckRetry(StoreUnderTest& store, absl::string_view stream_id,
                ExpectedVersion expected, std::vector<NewEvent> events,
                const AppendResult& original) {
  INFO("retry on " << stream_id << ", expected " << expected.ToString());
  const StoreState before = Capture(store);
  absl::StatusOr<AppendResult> retry =
      store.Append(stream_id, expected, std::move(events));
  REQUIRE_OK(retry);
  CHECK(retry->already_stored);
  CHECK(retry->stream_id == original.stream_id);
  CHECK(retry->first_version == original.first_version);
  CHECK(retry->last_version == original.last_version);
  CHECK(retry->position == original.position);
  CHECK_UNCHANGED(store, before);
}

void CheckIdConflict(StoreUnderTest& store, absl::string_view stream_id,
                     ExpectedVersion expected, std::vector<NewEvent> events) {
  INFO("append to " << stream_id << " of ids " << IdsOf(events)[0] << "...");
  const StoreState before = Capture(store);
  const int64_t version = StreamVersion(store, stream_id);
  CHECK_CODE(store.Append(stream_id, expected, std::move(events)),
             absl::StatusCode::kAlreadyExists);
  CHECK_UNCHANGED(store, before);
  CHECK(StreamVersion(store, stream_id) == version);
}

CONTRACT_TEST(RetryWithSameIdsReturnsOriginalResult,
              "a retry with the same event ids returns the original result") {
  const std::vector<NewEvent> events = Events(3);
  AppendOk(store, "idem-0", ExpectedVersion::Any(), Events(2));
  const AppendResult original =
      AppendOk(store, "idem-1", ExpectedVersion::NoStream(), events);

  // Whatever `expected` says.
  CheckRetry(store, "idem-1", ExpectedVersion::NoStream(), events, original);
  CheckRetry(store, "idem-1", ExpectedVersion::Any(), events, original);
  CheckRetry(store, "idem-1", ExpectedVersion::StreamExists(), events,
             original);
  CheckRetry(store, "idem-1", ExpectedVersion::Exactly(3), events, original);
  CheckRetry(store, "idem-1", ExpectedVersion::Exactly(42), events, original);

  // UUIDs compare case-insensitively.
  std::vector<NewEvent> upper = events;
  for (NewEvent& e : upper) absl::AsciiStrToUpper(&e.event_id);
  CheckRetry(store, "idem-1", ExpectedVersion::NoStream(), upper, original);

  // Still the original result after the stream moved on.
  AppendOk(store, "idem-1", ExpectedVersion::Exactly(3), Events(2));
  CheckRetry(store, "idem-1", ExpectedVersion::NoStream(), events, original);

  const std::vector<RecordedEvent> read = ReadWholeStream(store, "idem-1");
  CHECK(VersionsOf(read) == Range(1, 5));
  const std::vector<std::string> all = IdsOf(ReadAllEvents(store));
  for (const NewEvent& e : events) {
    CHECK(std::count(all.begin(), all.end(), e.event_id) == 1);
  }
  CHECK(all.size() == 7);
}

CONTRACT_TEST(RetryOfSingleEvent, "a single-event append is retryable") {
  const std::vector<NewEvent> events = Events(1);
  const AppendResult original =
      AppendOk(store, "idem-single", ExpectedVersion::Any(), events);
  AppendOk(store, "idem-single", ExpectedVersion::Any(), Events(1));
  CheckRetry(store, "idem-single", ExpectedVersion::Any(), events, original);
  CHECK(StreamVersion(store, "idem-single") == 2);
}

CONTRACT_TEST(InexactRetryIsAnIdConflict,
              "reusing stored ids other than as an exact retry is "
              "kAlreadyExists") {
  const std::vector<NewEvent> a = Events(3);
  AppendOk(store, "idem-1", ExpectedVersion::NoStream(), a);
  AppendOk(store, "idem-2", ExpectedVersion::NoStream(), Events(1));
  const NewEvent fresh = Event("Fresh");
  const NewEvent fresh2 = Event("Fresh");

  SECTION("partial overlap") {
    CheckIdConflict(store, "idem-1", ExpectedVersion::Any(),
                    {a[0], a[1], fresh});
    CheckIdConflict(store, "idem-1", ExpectedVersion::Any(), {a[0], fresh});
    CheckIdConflict(store, "idem-1", ExpectedVersion::Any(),
                    {a[0], a[1], a[2], fresh});
  }
  SECTION("different stream") {
    CheckIdConflict(store, "idem-2", ExpectedVersion::Any(), a);
    CheckIdConflict(store, "idem-new", ExpectedVersion::NoStream(), a);
    CHECK_CODE(store.GetStreamInfo("idem-new"), absl::StatusCode::kNotFound);
  }
  SECTION("different order") {
    CheckIdConflict(store, "idem-1", ExpectedVersion::Any(),
                    {a[1], a[0], a[2]});
    CheckIdConflict(store, "idem-1", ExpectedVersion::Any(),
                    {a[0], a[2], a[1]});
    CheckIdConflict(store, "idem-1", ExpectedVersion::Any(),
                    {a[2], a[1], a[0]});
  }
  SECTION("not consecutive") {
    CheckIdConflict(store, "idem-1", ExpectedVersion::Any(), {a[0], a[2]});
  }
  SECTION("stored id in a later event") {
    CheckIdConflict(store, "idem-1", ExpectedVersion::Any(), {fresh, a[1]});
    CheckIdConflict(store, "idem-1", ExpectedVersion::Exactly(3),
                    {fresh, fresh2, a[0]});
    CheckIdConflict(store, "idem-new", ExpectedVersion::NoStream(),
                    {fresh, a[2]});
    CHECK_CODE(store.GetStreamInfo("idem-new"), absl::StatusCode::kNotFound);
  }
  // None of these calls stored `fresh`, so it can still be appended.
  const AppendResult r =
      AppendOk(store, "idem-1", ExpectedVersion::Exactly(3), {fresh, fresh2});
  CHECK(r.first_version == 4);
  CHECK(IdsOf(ReadAllEvents(store)).size() == 6);
}

// The order of an append's checks: a stored event id decides before a
// deleted stream or a version conflict does.
CONTRACT_TEST(StoredIdIsCheckedBeforeDeletedStreamAndVersion,
              "reusing a stored event id is kAlreadyExists even on a deleted "
              "stream or at a wrong version") {
  const std::vector<NewEvent> a = Events(2);
  AppendOk(store, "check-a", ExpectedVersion::NoStream(), a);
  const std::vector<NewEvent> d = Events(2);
  const AppendResult d_original =
      AppendOk(store, "check-d", ExpectedVersion::NoStream(), d);
  REQUIRE_OK(store.DeleteStream("check-d", ExpectedVersion::Exactly(2)));
  AppendOk(store, "check-v", ExpectedVersion::NoStream(), Events(1));
  const NewEvent fresh = Event("Fresh");
  const NewEvent fresh2 = Event("Fresh");

  // A stored id that is not the call's first: not kFailedPrecondition ...
  CheckIdConflict(store, "check-d", ExpectedVersion::Exactly(2), {fresh, a[1]});
  CheckIdConflict(store, "check-d", ExpectedVersion::Any(), {fresh, a[0]});
  CheckIdConflict(store, "check-d", ExpectedVersion::Any(), {fresh, d[1]});
  // ... and not kAborted ...
  CheckIdConflict(store, "check-v", ExpectedVersion::Exactly(5), {fresh, a[1]});
  CheckIdConflict(store, "check-v", ExpectedVersion::NoStream(),
                  {fresh, fresh2, d[1]});
  // ... nor either when both apply.
  CheckIdConflict(store, "check-d", ExpectedVersion::Exactly(7), {fresh, d[0]});
  // A stored first id that is not an exact retry, as a single event too.
  CheckIdConflict(store, "check-d", ExpectedVersion::Exactly(2), {a[1]});
  CheckIdConflict(store, "check-v", ExpectedVersion::Exactly(5), {a[0], fresh});
  // An exact retry of the deleted stream's append still gets its result.
  CheckRetry(store, "check-d", ExpectedVersion::Exactly(9), d, d_original);

  // With fresh ids, the deleted stream and the version decide.
  CHECK_CODE(
      store.Append("check-d", ExpectedVersion::Exactly(7), {fresh, fresh2}),
      absl::StatusCode::kFailedPrecondition);
  const absl::StatusOr<AppendResult> conflict =
      store.Append("check-v", ExpectedVersion::Exactly(5), {fresh, fresh2});
  CHECK_CODE(conflict, absl::StatusCode::kAborted);
  CHECK(ConflictActualVersion(conflict.status()) == std::optional<int64_t>(1));
  // None of these calls stored `fresh`.
  const AppendResult r =
      AppendOk(store, "check-v", ExpectedVersion::Exactly(1), {fresh, fresh2});
  CHECK(r.first_version == 2);
}

// ---------------------------------------------------------------------------
// Reading streams.

CONTRACT_TEST(ReadStreamForwardAndBackward,
              "ReadStream forward and backward with from_version and limit") {
  // Interleave with another stream so that versions and positions differ.
  AppendOk(store, "read-1", ExpectedVersion::NoStream(), Events(4, 1));
  AppendOk(store, "read-2", ExpectedVersion::NoStream(), Events(2, 100));
  AppendOk(store, "read-1", ExpectedVersion::Exactly(4), Events(3, 5));
  AppendOk(store, "read-2", ExpectedVersion::Exactly(2), Events(2, 102));
  AppendOk(store, "read-1", ExpectedVersion::Exactly(7), Events(3, 8));

  auto versions = [&](Direction direction, int64_t from, int limit) {
    INFO("from " << from << " limit " << limit);
    return VersionsOf(ReadStreamOk(store, "read-1", direction, from, limit));
  };
  const Direction fwd = Direction::kForward;
  const Direction back = Direction::kBackward;
  const int64_t kEnd = std::numeric_limits<int64_t>::max();

  CHECK(versions(fwd, 1, kMaxLimit) == Range(1, 10));
  CHECK(versions(fwd, 1, 1) == Range(1, 1));
  CHECK(versions(fwd, 4, 3) == Range(4, 6));
  CHECK(versions(fwd, 8, 100) == Range(8, 10));
  CHECK(versions(fwd, 10, 5) == Range(10, 10));
  CHECK(versions(fwd, 11, 5).empty());
  CHECK(versions(fwd, kEnd, 5).empty());

  CHECK(versions(back, kEnd, kMaxLimit) == Range(10, 1));
  CHECK(versions(back, kEnd, 3) == Range(10, 8));
  CHECK(versions(back, 10, 1) == Range(10, 10));
  CHECK(versions(back, 100, 2) == Range(10, 9));
  CHECK(versions(back, 5, 10) == Range(5, 1));
  CHECK(versions(back, 6, 2) == Range(6, 5));
  CHECK(versions(back, 1, 10) == Range(1, 1));

  // Every event read is the stream's own, with its own data.
  for (Direction d : {fwd, back}) {
    for (const RecordedEvent& e :
         ReadStreamOk(store, "read-1", d, d == fwd ? 1 : kEnd, kMaxLimit)) {
      CHECK(e.stream_id == "read-1");
      CHECK(
          JsonEquals(e.data, absl::StrCat(R"({"i":)", e.stream_version, "}")));
    }
  }
  // Forward reads are in position order too.
  const std::vector<RecordedEvent> all = ReadWholeStream(store, "read-1");
  for (size_t i = 1; i < all.size(); ++i) {
    CHECK(all[i - 1].position < all[i].position);
  }
  CHECK(VersionsOf(ReadWholeStream(store, "read-2")) == Range(1, 4));

  CHECK_CODE(store.ReadStream("read-3", fwd, 1, 10),
             absl::StatusCode::kNotFound);
  CHECK_CODE(store.ReadStream("read-3", back, kEnd, 10),
             absl::StatusCode::kNotFound);
}

CONTRACT_TEST(GetStreamInfoReportsVersion, "GetStreamInfo") {
  CHECK_CODE(store.GetStreamInfo("info-1"), absl::StatusCode::kNotFound);
  AppendOk(store, "info-1", ExpectedVersion::Any(), Events(1));
  AppendOk(store, "info-2", ExpectedVersion::Any(), Events(4));
  AppendOk(store, "info-1", ExpectedVersion::Any(), Events(2));

  absl::StatusOr<StreamInfo> info = store.GetStreamInfo("info-1");
  REQUIRE_OK(info);
  CHECK(info->stream_id == "info-1");
  CHECK(info->version == 3);
  info = store.GetStreamInfo("info-2");
  REQUIRE_OK(info);
  CHECK(info->stream_id == "info-2");
  CHECK(info->version == 4);
  CHECK_CODE(store.GetStreamInfo("info"), absl::StatusCode::kNotFound);
}

// ---------------------------------------------------------------------------
// The global order.

CONTRACT_TEST(ReadAllPagesThroughEverything,
              "ReadAll pages through every event exactly once in order") {
  // Appends of 1 to 4 events, round robin over five streams.
  std::vector<std::string> expected_ids;
  std::vector<AppendResult> appends;
  std::vector<std::vector<std::string>> append_ids;
  absl::flat_hash_map<std::string, std::pair<std::string, int64_t>> where;
  for (int i = 0; i < 15; ++i) {
    const std::string stream = absl::StrCat("all-", i % 5);
    std::vector<NewEvent> events = Events(1 + i % 4);
    const AppendResult r =
        AppendOk(store, stream, ExpectedVersion::Any(), events);
    for (size_t k = 0; k < events.size(); ++k) {
      expected_ids.push_back(events[k].event_id);
      where[events[k].event_id] = {stream,
                                   r.first_version + static_cast<int64_t>(k)};
    }
    appends.push_back(r);
    append_ids.push_back(IdsOf(events));
  }
  REQUIRE(expected_ids.size() == 36);
  REQUIRE_OK(store.WaitUntilVisible());

  for (int page_size : {1, 3, 7, 35, 36, 37, kMaxLimit}) {
    INFO("page size " << page_size);
    std::vector<RecordedEvent> seen;
    Position after = Position::Start();
    int pages = 0;
    for (;;) {
      absl::StatusOr<ReadAllResult> page = store.ReadAll(after, page_size);
      REQUIRE_OK(page);
      if (page->events.empty()) {
        CHECK(page->next == after);
        break;
      }
      ++pages;
      REQUIRE(pages <= 36);
      CHECK(page->events.size() <= static_cast<size_t>(page_size));
      // Only the last page may be short.
      if (seen.size() + page->events.size() < expected_ids.size()) {
        CHECK(page->events.size() == static_cast<size_t>(page_size));
      }
      REQUIRE(page->next == page->events.back().position);
      // Resume through the client-facing token.
      absl::StatusOr<Position> resumed =
          Position::FromToken(page->next.ToToken());
      REQUIRE_OK(resumed);
      REQUIRE(*resumed == page->next);
      after = *resumed;
      for (RecordedEvent& e : page->events) seen.push_back(std::move(e));
    }

    CHECK(IdsOf(seen) == expected_ids);
    for (size_t i = 1; i < seen.size(); ++i) {
      CHECK(seen[i - 1].position < seen[i].position);
    }
    for (const RecordedEvent& e : seen) {
      auto it = where.find(e.event_id);
      REQUIRE(it != where.end());
      CHECK(e.stream_id == it->second.first);
      CHECK(e.stream_version == it->second.second);
    }
  }

  // Each append's result position is its last event's position, and an
  // append's events are adjacent in the order.
  const std::vector<RecordedEvent> all = ReadAllEvents(store);
  size_t index = 0;
  for (size_t a = 0; a < appends.size(); ++a) {
    INFO("append " << a);
    std::vector<std::string> ids;
    for (size_t k = 0; k < append_ids[a].size(); ++k) {
      ids.push_back(all[index + k].event_id);
    }
    CHECK(ids == append_ids[a]);
    index += append_ids[a].size();
    CHECK(all[index - 1].position == appends[a].position);
  }

  // Resuming from the middle returns exactly the rest.
  const std::vector<RecordedEvent> rest =
      ReadAllEvents(store, all[19].position);
  CHECK(IdsOf(rest) == std::vector<std::string>(expected_ids.begin() + 20,
                                                expected_ids.end()));
  CHECK(ReadAllEvents(store, all.back().position).empty());
}

CONTRACT_TEST(ReadCategoryFiltersByCategory,
              "ReadCategory returns one category in commit order") {
  // stream -> category: the part before the first '-'.
  const std::vector<std::pair<std::string, bool>> streams = {
      {"account-1", true},   {"accounting-1", false}, {"account-2", true},
      {"order-1", false},    {"account", true},       {"Account-3", false},
      {"account-x-y", true}, {"accounts-1", false},   {"acc_unt-1", false},
      {"account_1", false},  {"xaccount-1", false}};
  std::vector<std::string> expected;
  Position order_position;
  for (int round = 0; round < 2; ++round) {
    for (const auto& [stream, in_category] : streams) {
      std::vector<NewEvent> events = Events(1 + round);
      const AppendResult r =
          AppendOk(store, stream, ExpectedVersion::Any(), events);
      if (in_category) {
        for (const NewEvent& e : events) expected.push_back(e.event_id);
      }
      if (stream == "order-1" && round == 0) order_position = r.position;
    }
  }

  auto read_category = [&](absl::string_view category, Position after,
                           int page_size) {
    INFO("category '" << category << "', page size " << page_size);
    REQUIRE_OK(store.WaitUntilVisible());
    std::vector<RecordedEvent> seen;
    for (int pages = 0;; ++pages) {
      REQUIRE(pages <= 100);
      absl::StatusOr<ReadAllResult> page =
          store.ReadCategory(category, after, page_size);
      REQUIRE_OK(page);
      if (page->events.empty()) {
        CHECK(page->next == after);
        break;
      }
      CHECK(page->events.size() <= static_cast<size_t>(page_size));
      REQUIRE(page->next == page->events.back().position);
      REQUIRE(after < page->next);
      after = page->next;
      for (RecordedEvent& e : page->events) seen.push_back(std::move(e));
    }
    return seen;
  };

  for (int page_size : {1, 2, 5, kMaxLimit}) {
    const std::vector<RecordedEvent> seen =
        read_category("account", Position::Start(), page_size);
    CHECK(IdsOf(seen) == expected);
    for (size_t i = 1; i < seen.size(); ++i) {
      CHECK(seen[i - 1].position < seen[i].position);
    }
    for (const RecordedEvent& e : seen) {
      CHECK(CategoryOf(e.stream_id) == "account");
    }
  }

  // Starting after an event of another category.
  std::vector<std::string> later;
  for (const RecordedEvent& e : ReadAllEvents(store, order_position)) {
    if (CategoryOf(e.stream_id) == "account") later.push_back(e.event_id);
  }
  // Round 0 after order-1: "account" and "account-x-y"; round 1: all four.
  CHECK(later.size() == 2 + 4 * 2);
  CHECK(IdsOf(read_category("account", order_position, 3)) == later);

  CHECK(read_category("order", Position::Start(), kMaxLimit).size() == 3);
  CHECK(read_category("acc_unt", Position::Start(), kMaxLimit).size() == 3);
  CHECK(read_category("account_1", Position::Start(), kMaxLimit).size() == 3);
  // Categories are exact: no prefix or pattern matching, case-sensitive.
  for (const char* category :
       {"acc", "accoun_", "acc%", "%", "_", "accoun%", "ACCOUNT", "nothing"}) {
    CHECK(read_category(category, Position::Start(), kMaxLimit).empty());
  }
}

CONTRACT_TEST(HeadPositionTracksNewestEvent, "HeadPosition") {
  CHECK(HeadOk(store) == Position::Start());
  CHECK(ReadAllEvents(store).empty());

  const AppendResult first =
      AppendOk(store, "head-1", ExpectedVersion::Any(), Events(3));
  CHECK(HeadOk(store) == first.position);

  const AppendResult second =
      AppendOk(store, "head-2", ExpectedVersion::Any(), Events(1));
  CHECK(HeadOk(store) == second.position);
  CHECK(first.position < second.position);

  CHECK_CODE(store.Append("head-1", ExpectedVersion::NoStream(), Events(1)),
             absl::StatusCode::kAborted);
  CHECK(HeadOk(store) == second.position);

  const std::vector<RecordedEvent> all = ReadAllEvents(store);
  REQUIRE(all.size() == 4);
  CHECK(all.back().position == HeadOk(store));
  CHECK(ReadAllEvents(store, HeadOk(store)).empty());
}

// ---------------------------------------------------------------------------
// Soft delete.

CONTRACT_TEST(DeletedStreamReadsAsNotFound,
              "a deleted stream reads as not found and refuses appends") {
  const std::vector<NewEvent> events = Events(2);
  AppendOk(store, "del-1", ExpectedVersion::NoStream(), events);
  AppendOk(store, "del-2", ExpectedVersion::NoStream(), Events(1));
  const std::vector<RecordedEvent> all_before = ReadAllEvents(store);

  REQUIRE_OK(store.DeleteStream("del-1", ExpectedVersion::Exactly(2)));

  CHECK_CODE(store.ReadStream("del-1", Direction::kForward, 1, 10),
             absl::StatusCode::kNotFound);
  CHECK_CODE(store.ReadStream("del-1", Direction::kBackward,
                              std::numeric_limits<int64_t>::max(), 10),
             absl::StatusCode::kNotFound);
  CHECK_CODE(store.GetStreamInfo("del-1"), absl::StatusCode::kNotFound);

  const StoreState before = Capture(store);
  for (ExpectedVersion expected :
       {ExpectedVersion::Any(), ExpectedVersion::NoStream(),
        ExpectedVersion::StreamExists(), ExpectedVersion::Exactly(2)}) {
    INFO("expected " << expected.ToString());
    CHECK_CODE(store.Append("del-1", expected, Events(1)),
               absl::StatusCode::kFailedPrecondition);
  }
  CHECK_UNCHANGED(store, before);

  // The events stay in the global and category order.
  CHECK(IdsOf(ReadAllEvents(store)) == IdsOf(all_before));
  absl::StatusOr<ReadAllResult> category =
      store.ReadCategory("del", Position::Start(), kMaxLimit);
  REQUIRE_OK(category);
  CHECK(category->events.size() == 3);

  CHECK_CODE(store.DeleteStream("del-1", ExpectedVersion::Any()),
             absl::StatusCode::kNotFound);

  // Other streams are untouched.
  CHECK(StreamVersion(store, "del-2") == 1);
  AppendOk(store, "del-2", ExpectedVersion::Exactly(1), Events(1));
}

CONTRACT_TEST(DeleteStreamChecksExpectedVersion,
              "DeleteStream checks the expected version") {
  AppendOk(store, "del-1", ExpectedVersion::NoStream(), Events(3));

  for (ExpectedVersion expected :
       {ExpectedVersion::NoStream(), ExpectedVersion::Exactly(2),
        ExpectedVersion::Exactly(4)}) {
    INFO("expected " << expected.ToString());
    const absl::Status status = store.DeleteStream("del-1", expected);
    CHECK_CODE(status, absl::StatusCode::kAborted);
    CHECK(ConflictActualVersion(status) == std::optional<int64_t>(3));
    CHECK(StreamVersion(store, "del-1") == 3);
  }

  SECTION("any") {
    REQUIRE_OK(store.DeleteStream("del-1", ExpectedVersion::Any()));
  }
  SECTION("stream exists") {
    REQUIRE_OK(store.DeleteStream("del-1", ExpectedVersion::StreamExists()));
  }
  SECTION("exactly") {
    REQUIRE_OK(store.DeleteStream("del-1", ExpectedVersion::Exactly(3)));
  }
  CHECK_CODE(store.GetStreamInfo("del-1"), absl::StatusCode::kNotFound);
}

CONTRACT_TEST(DeleteMissingStreamIsNotFound,
              "DeleteStream on a missing stream is kNotFound") {
  AppendOk(store, "del-1", ExpectedVersion::NoStream(), Events(1));
  const StoreState before = Capture(store);
  for (ExpectedVersion expected :
       {ExpectedVersion::Any(), ExpectedVersion::NoStream(),
        ExpectedVersion::StreamExists(), ExpectedVersion::Exactly(1)}) {
    INFO("expected " << expected.ToString());
    CHECK_CODE(store.DeleteStream("del-2", expected),
               absl::StatusCode::kNotFound);
    CHECK_CODE(store.DeleteStream("del", expected),
               absl::StatusCode::kNotFound);
  }
  CHECK_UNCHANGED(store, before);
  CHECK(StreamVersion(store, "del-1") == 1);
}

CONTRACT_TEST(IsDeletedStreamTellsDeletedFromMissing,
              "reads of a deleted stream are kNotFound marked as deleted, "
              "of a missing one unmarked") {
  AppendOk(store, "gone-1", ExpectedVersion::NoStream(), Events(2));
  AppendOk(store, "kept-1", ExpectedVersion::NoStream(), Events(1));
  REQUIRE_OK(store.DeleteStream("gone-1", ExpectedVersion::Exactly(2)));
  const int64_t kEnd = std::numeric_limits<int64_t>::max();

  auto reads_of = [&](absl::string_view stream_id) {
    return std::vector<absl::Status>{
        StatusOf(store.ReadStream(stream_id, Direction::kForward, 1, 10)),
        StatusOf(store.ReadStream(stream_id, Direction::kBackward, kEnd, 10)),
        StatusOf(store.GetStreamInfo(stream_id))};
  };
  for (const absl::Status& status : reads_of("gone-1")) {
    INFO(status);
    CHECK(absl::IsNotFound(status));
    CHECK(IsDeletedStream(status));
  }
  // Never had events, including a prefix of the deleted stream's id.
  for (absl::string_view missing : {"never-1", "gone-", "gone"}) {
    INFO(missing);
    for (const absl::Status& status : reads_of(missing)) {
      INFO(status);
      CHECK(absl::IsNotFound(status));
      CHECK_FALSE(IsDeletedStream(status));
    }
  }
  CHECK_FALSE(IsDeletedStream(absl::OkStatus()));
  CHECK_FALSE(IsDeletedStream(store.GetStreamInfo("kept-1").status()));
  CHECK_FALSE(IsDeletedStream(
      store.Append("gone-1", ExpectedVersion::Any(), Events(1)).status()));
}

// ---------------------------------------------------------------------------
// Snapshots.

Snapshot MakeSnapshot(std::string stream_id, int64_t version, std::string state,
                      int schema_version = 1) {
  Snapshot snapshot;
  snapshot.stream_id = std::move(stream_id);
  snapshot.stream_version = version;
  snapshot.schema_version = schema_version;
  snapshot.state = std::move(state);
  return snapshot;
}

Snapshot LoadOk(StoreUnderTest& store, absl::string_view stream_id) {
  absl::StatusOr<Snapshot> snapshot = store.LoadSnapshot(stream_id);
  REQUIRE_OK(snapshot);
  return *std::move(snapshot);
}

CONTRACT_TEST(SnapshotsSaveLoadAndReplace, "snapshots") {
  AppendOk(store, "snap-1", ExpectedVersion::Any(), Events(6));
  AppendOk(store, "snap-2", ExpectedVersion::Any(), Events(2));
  CHECK_CODE(store.LoadSnapshot("snap-1"), absl::StatusCode::kNotFound);

  const absl::Time before = absl::Now();
  Snapshot saved = MakeSnapshot("snap-1", 3, R"({"balance":30,"n":[1,2]})", 2);
  saved.created_at = absl::FromUnixSeconds(1000);  // the store sets it
  REQUIRE_OK(store.SaveSnapshot(saved));
  const absl::Time after = absl::Now();

  Snapshot loaded = LoadOk(store, "snap-1");
  CHECK(loaded.stream_id == "snap-1");
  CHECK(loaded.stream_version == 3);
  CHECK(loaded.schema_version == 2);
  CHECK(JsonEquals(loaded.state, saved.state));
  CHECK(WithinAMinuteOf(loaded.created_at, before, after));
  CHECK_CODE(store.LoadSnapshot("snap-2"), absl::StatusCode::kNotFound);

  // A newer one replaces it.
  REQUIRE_OK(
      store.SaveSnapshot(MakeSnapshot("snap-1", 5, R"({"balance":50})")));
  loaded = LoadOk(store, "snap-1");
  CHECK(loaded.stream_version == 5);
  CHECK(loaded.schema_version == 1);
  CHECK(JsonEquals(loaded.state, R"({"balance":50})"));

  // An older one is ignored.
  REQUIRE_OK(
      store.SaveSnapshot(MakeSnapshot("snap-1", 4, R"({"balance":40})")));
  loaded = LoadOk(store, "snap-1");
  CHECK(loaded.stream_version == 5);
  CHECK(JsonEquals(loaded.state, R"({"balance":50})"));

  // One at the same version replaces it (e.g. the state's layout changed).
  REQUIRE_OK(store.SaveSnapshot(
      MakeSnapshot("snap-1", 5, R"({"balance":50,"layout":2})", 2)));
  loaded = LoadOk(store, "snap-1");
  CHECK(loaded.stream_version == 5);
  CHECK(loaded.schema_version == 2);
  CHECK(JsonEquals(loaded.state, R"({"balance":50,"layout":2})"));

  // Streams have their own snapshots.
  REQUIRE_OK(
      store.SaveSnapshot(MakeSnapshot("snap-2", 1, R"({"other":true})")));
  CHECK(LoadOk(store, "snap-2").stream_version == 1);
  CHECK(LoadOk(store, "snap-1").stream_version == 5);

  // Bad snapshots are refused and change nothing.
  const std::vector<Snapshot> bad = {
      MakeSnapshot("snap-1", 0, "{}"),
      MakeSnapshot("snap-1", -1, "{}"),
      MakeSnapshot("snap-1", 9, "{}", 0),
      MakeSnapshot("snap-1", 9, "[]"),
      MakeSnapshot("snap-1", 9, "not json"),
      MakeSnapshot("snap-1", 9, "{} {}"),
      MakeSnapshot("snap-1", 9, R"({"a":"\u0000"})"),
      MakeSnapshot("", 9, "{}"),
      MakeSnapshot(std::string(kMaxStreamIdLength + 1, 's'), 9, "{}"),
      MakeSnapshot("snap\n1", 9, "{}")};
  for (const Snapshot& snapshot : bad) {
    INFO("stream '" << snapshot.stream_id.substr(0, 20) << "' version "
                    << snapshot.stream_version << " schema "
                    << snapshot.schema_version << " state " << snapshot.state);
    CHECK_CODE(store.SaveSnapshot(snapshot),
               absl::StatusCode::kInvalidArgument);
  }
  loaded = LoadOk(store, "snap-1");
  CHECK(loaded.stream_version == 5);
  CHECK(loaded.schema_version == 2);
  CHECK(JsonEquals(loaded.state, R"({"balance":50,"layout":2})"));

  // Snapshots are not events.
  CHECK(ReadAllEvents(store).size() == 8);
}

CONTRACT_TEST(SnapshotStateIsKeptVerbatim,
              "a snapshot's state is returned byte for byte as saved") {
  AppendOk(store, "verbatim-1", ExpectedVersion::NoStream(), Events(6));
  const std::vector<std::string> states = {
      R"({"a":1,"a":2})",
      R"({"b":{"x":1,"x":[1,2]},"b":null,"a":0})",
      "  {\"z\" :  1 ,\n\t\"a\":[ 1 ,2 ] ,\"m\":{ } }\n ",
      R"({"z":1,"y":2,"a":{"c":3,"b":4}})",
      R"({"e":"\u00e9t\u00e9","q":"\"\/","n":1.50,"x":1E2,"i":-0})",
      R"({"pair":"\ud83d\ude00","raw":"é"})"};
  int64_t version = 1;
  for (const std::string& state : states) {
    INFO("state " << state);
    REQUIRE_OK(store.SaveSnapshot(MakeSnapshot("verbatim-1", version, state)));
    const Snapshot loaded = LoadOk(store, "verbatim-1");
    CHECK(loaded.stream_version == version);
    CHECK(loaded.state == state);
    ++version;
  }
}

CONTRACT_TEST(DeletedStreamHasNoSnapshot,
              "deleting a stream deletes its snapshot, and a deleted stream "
              "takes none") {
  AppendOk(store, "dsnap-1", ExpectedVersion::NoStream(), Events(3));
  AppendOk(store, "dsnap-2", ExpectedVersion::NoStream(), Events(1));
  AppendOk(store, "dsnap-3", ExpectedVersion::NoStream(), Events(1));
  REQUIRE_OK(store.SaveSnapshot(MakeSnapshot("dsnap-1", 3, R"({"n":3})")));
  REQUIRE_OK(store.SaveSnapshot(MakeSnapshot("dsnap-2", 1, R"({"n":1})")));
  REQUIRE(LoadOk(store, "dsnap-1").stream_version == 3);

  REQUIRE_OK(store.DeleteStream("dsnap-1", ExpectedVersion::Exactly(3)));
  CHECK_CODE(store.LoadSnapshot("dsnap-1"), absl::StatusCode::kNotFound);
  // Neither at the deleted version nor at a newer one.
  for (int64_t version : {3, 4}) {
    INFO("version " << version);
    CHECK_CODE(store.SaveSnapshot(MakeSnapshot("dsnap-1", version, "{}")),
               absl::StatusCode::kFailedPrecondition);
    CHECK_CODE(store.LoadSnapshot("dsnap-1"), absl::StatusCode::kNotFound);
  }
  // A stream deleted without a snapshot takes none either.
  REQUIRE_OK(store.DeleteStream("dsnap-3", ExpectedVersion::Any()));
  CHECK_CODE(store.SaveSnapshot(MakeSnapshot("dsnap-3", 1, "{}")),
             absl::StatusCode::kFailedPrecondition);
  CHECK_CODE(store.LoadSnapshot("dsnap-3"), absl::StatusCode::kNotFound);

  // Other streams keep theirs.
  const Snapshot other = LoadOk(store, "dsnap-2");
  CHECK(other.stream_version == 1);
  CHECK(other.state == R"({"n":1})");
}

// ---------------------------------------------------------------------------
// Bad input: kInvalidArgument and nothing written.

// A JSON object `depth` levels deep: an object holding depth - 1 arrays.
std::string NestedJson(int depth) {
  return absl::StrCat(R"({"a":)", std::string(depth - 1, '['),
                      std::string(depth - 1, ']'), "}");
}

struct BadAppend {
  std::string what;
  std::string stream_id;
  std::vector<NewEvent> events;
};

std::vector<BadAppend> BadAppends() {
  std::vector<BadAppend> cases;
  auto add = [&cases](std::string what, std::vector<NewEvent> events,
                      std::string stream_id = "bad-1") {
    cases.push_back({std::move(what), std::move(stream_id), std::move(events)});
  };
  // The bad event comes after good ones, so that a partial write would show.
  auto with_bad_last = [](auto mutate) {
    std::vector<NewEvent> events = Events(3);
    mutate(events.back());
    return events;
  };

  add("empty stream id", Events(1), "");
  add("201-character stream id", Events(1),
      std::string(kMaxStreamIdLength + 1, 's'));
  add("stream id with newline", Events(1), "bad\n1");
  add("stream id with NUL", Events(1),
      std::string("bad\0"
                  "1",
                  5));
  add("stream id with DEL", Events(1),
      "bad\x7f"
      "1");

  add("empty event type",
      with_bad_last([](NewEvent& e) { e.event_type = ""; }));
  add("201-character event type", with_bad_last([](NewEvent& e) {
        e.event_type = std::string(kMaxEventTypeLength + 1, 't');
      }));
  add("event type with control character",
      with_bad_last([](NewEvent& e) { e.event_type = "Bad\tType"; }));
  add("schema version 0",
      with_bad_last([](NewEvent& e) { e.schema_version = 0; }));

  const std::vector<std::string> not_objects = {"[]",
                                                "[{}]",
                                                "\"text\"",
                                                "42",
                                                "null",
                                                "",
                                                "{",
                                                R"({"a":})",
                                                "{} trailing",
                                                "{}{}",
                                                R"({"a":"\u0000"})",
                                                R"({"\u0000":1})",
                                                "{\"a\":\"\xff\"}"};
  for (const std::string& json : not_objects) {
    add(absl::StrCat("data ", json),
        with_bad_last([&json](NewEvent& e) { e.data = json; }));
    add(absl::StrCat("metadata ", json),
        with_bad_last([&json](NewEvent& e) { e.metadata = json; }));
  }

  // Nesting is limited (framework/json.h), well below what makes
  // PostgreSQL's jsonb parser fail with "stack depth limit exceeded".
  for (int depth : {kMaxJsonDepth + 1, 50000}) {
    const std::string deep = NestedJson(depth);
    add(absl::StrCat("data nested ", depth, " deep"),
        with_bad_last([&deep](NewEvent& e) { e.data = deep; }));
    add(absl::StrCat("metadata nested ", depth, " deep"),
        with_bad_last([&deep](NewEvent& e) { e.metadata = deep; }));
  }

  const std::vector<std::string> not_uuids = {
      "not-a-uuid",
      "0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f",
      "0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f60",
      "0192f3c45b6a7c8d9e0fa1b2c3d4e5f6",
      "0192f3g4-5b6a-7c8d-9e0f-a1b2c3d4e5f6",
      "{0192f3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f6}"};
  for (const std::string& id : not_uuids) {
    add(absl::StrCat("event id ", id),
        with_bad_last([&id](NewEvent& e) { e.event_id = id; }));
  }

  std::vector<NewEvent> duplicate = Events(3);
  duplicate[2].event_id = duplicate[0].event_id;
  add("duplicate ids in one call", duplicate);
  std::vector<NewEvent> duplicate_case = Events(2);
  duplicate_case[1].event_id =
      absl::AsciiStrToUpper(duplicate_case[0].event_id);
  add("duplicate ids differing in case", duplicate_case);

  add("no events", {});
  add("10001 events", Events(static_cast<int>(kMaxEventsPerAppend) + 1));

  // 17 events of 1 MiB each: every event is fine, the total is not.
  const std::string mib_of_json =
      absl::StrCat(R"({"pad":")", std::string(1024 * 1024 - 10, 'x'), R"("})");
  std::vector<NewEvent> large;
  for (int i = 0; i < 17; ++i) large.push_back(Event("Large", mib_of_json));
  add("more than 16 MiB", std::move(large));
  std::vector<NewEvent> large_metadata = Events(2);
  large_metadata[1].metadata =
      absl::StrCat(R"({"pad":")", std::string(kMaxAppendBytes, 'm'), R"("})");
  add("more than 16 MiB of metadata", std::move(large_metadata));
  return cases;
}

CONTRACT_TEST(BadAppendsAreRefused,
              "bad appends are kInvalidArgument and write nothing") {
  AppendOk(store, "bad-1", ExpectedVersion::NoStream(), Events(2));
  AppendOk(store, "bad-2", ExpectedVersion::NoStream(), Events(1));
  const StoreState before = Capture(store);
  REQUIRE(before.event_ids.size() == 3);

  for (BadAppend& bad : BadAppends()) {
    INFO(bad.what);
    for (ExpectedVersion expected :
         {ExpectedVersion::Any(), ExpectedVersion::Exactly(2)}) {
      INFO("expected " << expected.ToString());
      CHECK_CODE(store.Append(bad.stream_id, expected, bad.events),
                 absl::StatusCode::kInvalidArgument);
    }
  }
  CHECK_UNCHANGED(store, before);
  CHECK(StreamVersion(store, "bad-1") == 2);
  CHECK(StreamVersion(store, "bad-2") == 1);
}

CONTRACT_TEST(LimitsAreInclusive, "input at the limits is accepted") {
  const std::string long_id(kMaxStreamIdLength, 'l');
  std::vector<NewEvent> events = Events(static_cast<int>(kMaxEventsPerAppend));
  events[0].event_type = std::string(kMaxEventTypeLength, 't');
  const AppendResult r =
      AppendOk(store, long_id, ExpectedVersion::NoStream(), events);
  CHECK(r.last_version == static_cast<int64_t>(kMaxEventsPerAppend));

  const std::vector<RecordedEvent> read =
      ReadStreamOk(store, long_id, Direction::kForward, 1, kMaxLimit);
  CHECK(read.size() == static_cast<size_t>(kMaxLimit));
  CHECK(IdsOf(read) == IdsOf(events));
  CHECK(read.front().event_type == events[0].event_type);

  NewEvent deep = Event("Deep", NestedJson(kMaxJsonDepth));
  deep.metadata = NestedJson(kMaxJsonDepth);
  AppendOk(store, "deep-1", ExpectedVersion::NoStream(), {deep});
  const std::vector<RecordedEvent> deep_read = ReadWholeStream(store, "deep-1");
  REQUIRE(deep_read.size() == 1);
  CHECK(JsonEquals(deep_read[0].data, deep.data));
  CHECK(JsonEquals(deep_read[0].metadata, deep.metadata));

  // About 14 MiB in two events: under the 16 MiB limit.
  const std::string seven_mib =
      absl::StrCat(R"({"pad":")", std::string(7 * 1024 * 1024, 'x'), R"("})");
  const AppendResult big =
      AppendOk(store, "big-1", ExpectedVersion::NoStream(),
               {Event("Big", seven_mib), Event("Big", seven_mib)});
  CHECK(big.last_version == 2);
  const std::vector<RecordedEvent> big_read = ReadWholeStream(store, "big-1");
  REQUIRE(big_read.size() == 2);
  CHECK(JsonEquals(big_read[1].data, seven_mib));
}

CONTRACT_TEST(BadReadsAreRefused,
              "bad reads are kInvalidArgument and change nothing") {
  AppendOk(store, "bad-1", ExpectedVersion::NoStream(), Events(2));
  const StoreState before = Capture(store);
  const auto kInvalid = absl::StatusCode::kInvalidArgument;

  for (int limit : {0, -1, kMaxLimit + 1, std::numeric_limits<int>::min()}) {
    INFO("limit " << limit);
    for (Direction d : {Direction::kForward, Direction::kBackward}) {
      CHECK_CODE(store.ReadStream("bad-1", d, 1, limit), kInvalid);
    }
    CHECK_CODE(store.ReadAll(Position::Start(), limit), kInvalid);
    CHECK_CODE(store.ReadCategory("bad", Position::Start(), limit), kInvalid);
  }

  const std::vector<std::string> bad_ids = {
      "", std::string(kMaxStreamIdLength + 1, 's'), "bad\n1",
      std::string("bad\0"
                  "1",
                  5)};
  for (const std::string& id : bad_ids) {
    INFO("stream id of " << id.size() << " characters");
    CHECK_CODE(store.ReadStream(id, Direction::kForward, 1, 10), kInvalid);
    CHECK_CODE(store.GetStreamInfo(id), kInvalid);
    CHECK_FALSE(store.DeleteStream(id, ExpectedVersion::Any()).ok());
  }
  CHECK_UNCHANGED(store, before);
  CHECK(StreamVersion(store, "bad-1") == 2);
}

// Byte strings that are not UTF-8 (RFC 3629), each with what is wrong.
std::vector<std::pair<std::string, std::string>> NotUtf8() {
  return {{"byte 0xff", "\xff"},
          {"encoded surrogate U+D800", "\xed\xa0\x80"},
          {"overlong '/'", "\xc0\xaf"},
          {"overlong 3-byte NUL", "\xe0\x80\x80"},
          {"lone continuation byte", "\x80"},
          {"truncated 2-byte sequence", "x\xc3"},
          {"above U+10FFFF", "\xf4\x90\x80\x80"}};
}

CONTRACT_TEST(NonUtf8IsRefused,
              "stream ids, event types and categories must be UTF-8") {
  AppendOk(store, "utf-1", ExpectedVersion::NoStream(), Events(1));
  REQUIRE_OK(store.SaveSnapshot(MakeSnapshot("utf-1", 1, "{}")));
  const StoreState before = Capture(store);
  const auto kInvalid = absl::StatusCode::kInvalidArgument;

  for (const auto& [what, bytes] : NotUtf8()) {
    INFO(what);
    for (const std::string& id : {bytes, absl::StrCat("utf-", bytes)}) {
      CHECK_CODE(store.Append(id, ExpectedVersion::Any(), Events(1)), kInvalid);
      CHECK_CODE(store.Append(id, ExpectedVersion::NoStream(), Events(2)),
                 kInvalid);
      CHECK_CODE(store.ReadStream(id, Direction::kForward, 1, 10), kInvalid);
      CHECK_CODE(store.GetStreamInfo(id), kInvalid);
      CHECK_CODE(store.DeleteStream(id, ExpectedVersion::Any()), kInvalid);
      CHECK_CODE(store.SaveSnapshot(MakeSnapshot(id, 1, "{}")), kInvalid);
      CHECK_CODE(store.LoadSnapshot(id), kInvalid);
      CHECK_CODE(store.ReadCategory(id, Position::Start(), 10), kInvalid);
    }
    for (int count : {1, 3}) {
      std::vector<NewEvent> events = Events(count);
      events.back().event_type = absl::StrCat("Type", bytes);
      CHECK_CODE(store.Append("utf-1", ExpectedVersion::Exactly(1), events),
                 kInvalid);
      CHECK_CODE(store.Append("utf-2", ExpectedVersion::NoStream(), events),
                 kInvalid);
    }
  }
  CHECK_UNCHANGED(store, before);
  CHECK(StreamVersion(store, "utf-1") == 1);
  CHECK_CODE(store.GetStreamInfo("utf-2"), absl::StatusCode::kNotFound);
  CHECK(LoadOk(store, "utf-1").stream_version == 1);

  // Well-formed UTF-8 of every length, up to U+10FFFF, is accepted.
  const std::string id =
      "\xc3\xa9\xe2\x82\xac\xef\xbf\xbf\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf-1";
  std::vector<NewEvent> events = Events(2);
  events[1].event_type = absl::StrCat("Type", id);
  AppendOk(store, id, ExpectedVersion::NoStream(), events);
  const std::vector<RecordedEvent> read = ReadWholeStream(store, id);
  REQUIRE(read.size() == 2);
  CHECK(read[0].stream_id == id);
  CHECK(read[1].event_type == events[1].event_type);
  REQUIRE_OK(store.WaitUntilVisible());
  absl::StatusOr<ReadAllResult> category =
      store.ReadCategory(CategoryOf(id), Position::Start(), 10);
  REQUIRE_OK(category);
  CHECK(IdsOf(category->events) == IdsOf(events));
}

CONTRACT_TEST(BadCategoriesAreRefused,
              "ReadCategory refuses a category no stream id can have") {
  const std::string longest(kMaxStreamIdLength, 'c');
  AppendOk(store, longest, ExpectedVersion::NoStream(), Events(1));
  AppendOk(store, "cat-1", ExpectedVersion::NoStream(), Events(1));
  REQUIRE_OK(store.WaitUntilVisible());

  const std::vector<std::string> bad = {
      "",        std::string(kMaxStreamIdLength + 1, 'c'),
      "cat\n",   "cat\x01",
      "cat\x7f", std::string("c\0t", 3),
      "cat\xff", "\xed\xa0\x80",
      "\xc0\xaf"};
  for (const std::string& category : bad) {
    INFO("category of " << category.size() << " bytes");
    CHECK_CODE(store.ReadCategory(category, Position::Start(), 10),
               absl::StatusCode::kInvalidArgument);
  }

  // At the limit: a stream id without '-' is its own category.
  absl::StatusOr<ReadAllResult> page =
      store.ReadCategory(longest, Position::Start(), 10);
  REQUIRE_OK(page);
  REQUIRE(page->events.size() == 1);
  CHECK(page->events[0].stream_id == longest);
  page = store.ReadCategory("cat", Position::Start(), 10);
  REQUIRE_OK(page);
  CHECK(page->events.size() == 1);
}

CONTRACT_TEST(LoneSurrogatesAreRefused,
              "JSON strings with a lone surrogate escape are refused in data, "
              "metadata and snapshot state") {
  AppendOk(store, "sur-1", ExpectedVersion::NoStream(), Events(1));
  REQUIRE_OK(store.SaveSnapshot(MakeSnapshot("sur-1", 1, R"({"ok":1})")));
  const StoreState before = Capture(store);
  const auto kInvalid = absl::StatusCode::kInvalidArgument;

  const std::vector<std::string> bad = {
      R"({"s":"\ud800"})",         R"({"s":"\udc00"})",
      R"({"s":"x\udfffy"})",       R"({"\udc00":1})",
      R"({"a":[{"s":"\udbff"}]})", R"({"s":"\udc00\ud800"})",
      R"({"s":"\ud800\u0041"})"};
  for (const std::string& json : bad) {
    INFO(json);
    for (int count : {1, 2}) {
      std::vector<NewEvent> events = Events(count);
      events.back().data = json;
      CHECK_CODE(store.Append("sur-1", ExpectedVersion::Exactly(1), events),
                 kInvalid);
      CHECK_CODE(store.Append("sur-2", ExpectedVersion::NoStream(), events),
                 kInvalid);
      events = Events(count);
      events.back().metadata = json;
      CHECK_CODE(store.Append("sur-1", ExpectedVersion::Exactly(1), events),
                 kInvalid);
      CHECK_CODE(store.Append("sur-2", ExpectedVersion::Any(), events),
                 kInvalid);
    }
    CHECK_CODE(store.SaveSnapshot(MakeSnapshot("sur-1", 1, json)), kInvalid);
    CHECK_CODE(store.SaveSnapshot(MakeSnapshot("sur-1", 2, json)), kInvalid);
  }
  CHECK_UNCHANGED(store, before);
  CHECK(StreamVersion(store, "sur-1") == 1);
  CHECK_CODE(store.GetStreamInfo("sur-2"), absl::StatusCode::kNotFound);
  const Snapshot kept = LoadOk(store, "sur-1");
  CHECK(kept.stream_version == 1);
  CHECK(kept.state == R"({"ok":1})");

  // A surrogate pair is one character (U+1F600) and fine everywhere.
  const std::string pair = R"({"s":"\ud83d\ude00"})";
  NewEvent event = Event("Paired", pair);
  event.metadata = pair;
  AppendOk(store, "sur-1", ExpectedVersion::Exactly(1), {event});
  const std::vector<RecordedEvent> read = ReadWholeStream(store, "sur-1");
  REQUIRE(read.size() == 2);
  CHECK(JsonEquals(read[1].data, pair));
  CHECK(JsonEquals(read[1].metadata, pair));
  REQUIRE_OK(store.SaveSnapshot(MakeSnapshot("sur-1", 2, pair)));
  CHECK(LoadOk(store, "sur-1").state == pair);
}

// ---------------------------------------------------------------------------
// Concurrency: the store is shared by all threads of a process.

CONTRACT_TEST(ConcurrentOptimisticAppends,
              "concurrent appends with expected versions never lose events") {
  constexpr int kThreads = 4;
  constexpr int kAppendsPerThread = 15;
  absl::Mutex mu;
  std::vector<std::string> errors;      // guarded by mu
  std::vector<std::string> stored_ids;  // guarded by mu
  std::vector<int64_t> first_versions;  // guarded by mu
  int conflicts = 0;                    // guarded by mu

  auto worker = [&] {
    for (int done = 0; done < kAppendsPerThread;) {
      absl::StatusOr<StreamInfo> info = store.GetStreamInfo("race-1");
      if (!info.ok() && !absl::IsNotFound(info.status())) {
        absl::MutexLock lock(&mu);
        errors.push_back(info.status().ToString());
        return;
      }
      const int64_t version = info.ok() ? info->version : 0;
      std::vector<NewEvent> events = Events(1 + done % 2);
      absl::StatusOr<AppendResult> r =
          store.Append("race-1", ExpectedVersion::Exactly(version), events);
      absl::MutexLock lock(&mu);
      if (r.ok()) {
        ++done;
        for (const NewEvent& e : events) stored_ids.push_back(e.event_id);
        first_versions.push_back(r->first_version);
        if (r->first_version != version + 1 || r->already_stored) {
          errors.push_back(absl::StrCat(
              "append at ", version, " got first version ", r->first_version));
        }
      } else if (absl::IsAborted(r.status())) {
        ++conflicts;
        const std::optional<int64_t> actual = ConflictActualVersion(r.status());
        if (!actual.has_value() || *actual == version) {
          errors.push_back(absl::StrCat("conflict at ", version,
                                        " reports actual version ",
                                        actual.value_or(-1)));
        }
      } else {
        errors.push_back(r.status().ToString());
        return;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker);
  for (std::thread& thread : threads) thread.join();

  absl::MutexLock lock(&mu);
  INFO("conflicts: " << conflicts);
  CHECK(errors == std::vector<std::string>{});
  // Each successful append got its own versions; none overlapped.
  std::sort(first_versions.begin(), first_versions.end());
  CHECK(std::adjacent_find(first_versions.begin(), first_versions.end()) ==
        first_versions.end());

  const std::vector<RecordedEvent> read = ReadWholeStream(store, "race-1");
  CHECK(VersionsOf(read) == Range(1, static_cast<int64_t>(stored_ids.size())));
  std::vector<std::string> read_ids = IdsOf(read);
  std::sort(read_ids.begin(), read_ids.end());
  std::sort(stored_ids.begin(), stored_ids.end());
  CHECK(read_ids == stored_ids);
  size_t expected_count = 0;
  for (int i = 0; i < kAppendsPerThread; ++i) {
    expected_count += kThreads * (1 + i % 2);
  }
  CHECK(stored_ids.size() == expected_count);
}

CONTRACT_TEST(ReadAllDuringConcurrentAppends,
              "a reader resuming from next sees every concurrently appended "
              "event exactly once") {
  constexpr int kWriters = 4;
  constexpr int kAppendsPerWriter = 40;
  absl::Mutex mu;
  std::vector<std::string> errors;                     // guarded by mu
  std::vector<std::vector<std::string>> appended_ids;  // guarded by mu
  std::atomic<int> writers_running{kWriters};

  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < kAppendsPerWriter; ++i) {
        std::vector<NewEvent> events = Events(1 + i % 3);
        // Two writers share each stream, so versions interleave.
        absl::StatusOr<AppendResult> r = store.Append(
            absl::StrCat("conc-", w % 2), ExpectedVersion::Any(), events);
        absl::MutexLock lock(&mu);
        if (!r.ok()) {
          errors.push_back(r.status().ToString());
          break;
        }
        appended_ids.push_back(IdsOf(events));
      }
      writers_running.fetch_sub(1);
    });
  }

  int total = 0;
  for (int i = 0; i < kAppendsPerWriter; ++i) total += kWriters * (1 + i % 3);

  // Read while the writers run, resuming from each page's next.
  std::vector<RecordedEvent> seen;
  std::vector<std::string> read_errors;
  Position after = Position::Start();
  auto read_page = [&] {
    absl::StatusOr<ReadAllResult> page = store.ReadAll(after, 7);
    if (!page.ok()) {
      read_errors.push_back(page.status().ToString());
      return false;
    }
    if (page->events.empty()) return false;
    after = page->next;
    for (RecordedEvent& e : page->events) seen.push_back(std::move(e));
    return true;
  };
  REQUIRE(testing::Eventually(
      [&] {
        while (read_page()) {
        }
        return writers_running.load() == 0;
      },
      absl::Minutes(2), absl::Milliseconds(1)));
  for (std::thread& writer : writers) writer.join();
  // Then the rest, once every append is visible.
  REQUIRE_OK(store.WaitUntilVisible());
  while (read_page()) {
  }

  absl::MutexLock lock(&mu);
  CHECK(errors == std::vector<std::string>{});
  CHECK(read_errors == std::vector<std::string>{});
  size_t appended = 0;
  for (const auto& ids : appended_ids) appended += ids.size();
  REQUIRE(appended == static_cast<size_t>(total));

  // Nothing skipped, nothing twice, in order.
  CHECK(seen.size() == appended);
  absl::flat_hash_map<std::string, size_t> index_of;
  for (size_t i = 0; i < seen.size(); ++i) {
    CHECK(index_of.emplace(seen[i].event_id, i).second);
    if (i > 0) CHECK(seen[i - 1].position < seen[i].position);
  }
  // Each append is adjacent and in order; each stream's versions ascend.
  for (const auto& ids : appended_ids) {
    auto first = index_of.find(ids[0]);
    REQUIRE(first != index_of.end());
    for (size_t k = 1; k < ids.size(); ++k) {
      auto it = index_of.find(ids[k]);
      REQUIRE(it != index_of.end());
      CHECK(it->second == first->second + k);
    }
  }
  std::map<std::string, int64_t> last_version;
  for (const RecordedEvent& e : seen) {
    CHECK(e.stream_version == last_version[e.stream_id] + 1);
    last_version[e.stream_id] = e.stream_version;
  }
}

CONTRACT_TEST(DeleteAndConcurrentAppendNeverBothSucceed,
              "a delete and a concurrent append never both succeed") {
  constexpr int kTrials = 200;
  int delete_won = 0;
  int append_won = 0;
  int both_won = 0;
  int neither_won = 0;
  // The first few trials that went wrong, and how.
  std::vector<std::string> disagreements;
  for (int trial = 0; trial < kTrials; ++trial) {
    const std::string stream = absl::StrCat("race-", trial);
    AppendOk(store, stream, ExpectedVersion::NoStream(), Events(1));
    const NewEvent raced = Event("Raced");

    absl::Status deleted;
    absl::StatusOr<AppendResult> appended;
    std::atomic<int> arrived{0};
    auto start_together = [&arrived] {
      arrived.fetch_add(1);
      while (arrived.load() < 2) std::this_thread::yield();
    };
    std::thread deleter([&] {
      start_together();
      deleted = store.DeleteStream(stream, ExpectedVersion::Exactly(1));
    });
    std::thread appender([&] {
      start_together();
      appended = store.Append(stream, ExpectedVersion::Exactly(1), {raced});
    });
    deleter.join();
    appender.join();

    std::string disagreement;
    const absl::StatusOr<StreamInfo> info = store.GetStreamInfo(stream);
    if (deleted.ok() && appended.ok()) {
      ++both_won;
    } else if (deleted.ok()) {
      ++delete_won;
      // A retry of the append would return it if any of it were stored.
      const absl::Status retry =
          store.Append(stream, ExpectedVersion::Any(), {raced}).status();
      if (appended.status().code() != absl::StatusCode::kFailedPrecondition) {
        disagreement =
            absl::StrCat("the append lost with ", appended.status().ToString());
      } else if (!IsDeletedStream(info.status())) {
        disagreement = absl::StrCat("stream info after the delete: ",
                                    info.status().ToString());
      } else if (retry.code() != absl::StatusCode::kFailedPrecondition) {
        disagreement =
            absl::StrCat("retry of the lost append: ", retry.ToString());
      }
    } else if (appended.ok()) {
      ++append_won;
      absl::StatusOr<std::vector<RecordedEvent>> last = store.ReadStream(
          stream, Direction::kBackward, std::numeric_limits<int64_t>::max(), 1);
      if (ConflictActualVersion(deleted) != std::optional<int64_t>(2)) {
        disagreement =
            absl::StrCat("the delete lost with ", deleted.ToString());
      } else if (appended->last_version != 2 || appended->already_stored) {
        disagreement =
            absl::StrCat("the append got version ", appended->last_version);
      } else if (!info.ok() || info->version != 2) {
        disagreement = absl::StrCat("stream info after the append: ",
                                    info.status().ToString());
      } else if (!last.ok() || last->size() != 1 ||
                 (*last)[0].event_id != raced.event_id) {
        disagreement = "the stream does not end with the appended event";
      }
    } else {
      ++neither_won;
      if (neither_won == 1) {
        disagreement = absl::StrCat("neither won: ", deleted.ToString(), "; ",
                                    appended.status().ToString());
      }
    }
    if (!disagreement.empty() && disagreements.size() < 5) {
      disagreements.push_back(
          absl::StrCat("trial ", trial, ": ", disagreement));
    }
  }
  INFO("delete won " << delete_won << ", append won " << append_won
                     << ", neither " << neither_won << " of " << kTrials);
  CHECK(both_won == 0);
  CHECK(neither_won == 0);
  CHECK(disagreements == std::vector<std::string>{});
}

}  // namespace
}  // namespace cqrs::eventstore

// GET /events/stream under load (issue 15): 200 Server-Sent Events clients
// on one app server, one of which stops reading. The others receive every
// event in commit order, the stalled one is closed with a final comment,
// and the server's memory stays bounded.
#include <atomic>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "app/app.h"
#include "app/app_server.h"
#include "framework/json_shape.h"
#include "tests/framework/http/client.h"
#include "tests/support/api_key.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CQRS_SANITIZER_ALLOCATOR 1
// From every sanitizer's runtime (GCC ships no header declaring it).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CQRS_SANITIZER_ALLOCATOR 1
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif
#endif

namespace {

namespace json = cqrs::json;
using cqrs::http_test::TestClient;

struct Noted {
  static constexpr char kName[] = "Noted";
  std::string note;
  static auto Json() {
    return json::Shape<Noted>().Field("note", &Noted::note,
                                      json::Length(0, 4096));
  }
};

// The memory this process holds, in KiB: its resident set size
// (/proc/self/status VmRSS), or, in a sanitizer build, the bytes its heap
// has allocated and not freed: there the resident set also holds freed
// blocks kept in quarantine, red zones and shadow memory, and grows with
// the traffic, not with what the server keeps.
int64_t MemoryKib() {
#ifdef CQRS_SANITIZER_ALLOCATOR
  return static_cast<int64_t>(__sanitizer_get_current_allocated_bytes() / 1024);
#else
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "VmRSS:")) {
      int64_t kib = 0;
      std::vector<absl::string_view> parts =
          absl::StrSplit(rest, absl::ByAnyChar(" \t"), absl::SkipEmpty());
      if (!parts.empty() && absl::SimpleAtoi(parts[0], &kib)) return kib;
    }
  }
  return -1;
#endif
}

// What one reading client saw; written by its thread only, read after join.
struct Received {
  std::vector<std::string> ids;
  std::string error;
};

// Reads `client`'s stream until it holds `want` event ids or fails; counts
// ids as they arrive (`progress`) so the writer can pace itself.
void ReadAll(TestClient& client, size_t want, Received* out,
             std::atomic<size_t>* progress) {
  std::string pending;
  while (out->ids.size() < want) {
    absl::StatusOr<std::string> part = client.ReadStream(absl::Seconds(60));
    if (!part.ok()) {
      out->error = part.status().ToString();
      return;
    }
    pending += *part;
    size_t end;
    while ((end = pending.find("\n\n")) != std::string::npos) {
      absl::string_view block(pending.data(), end);
      for (absl::string_view line : absl::StrSplit(block, '\n')) {
        if (absl::ConsumePrefix(&line, "id: ")) {
          out->ids.emplace_back(line);
          progress->fetch_add(1);
        }
      }
      pending.erase(0, end + 2);
    }
  }
}

TEST_CASE(
    "200 event-stream clients on one server, one stalled: the others "
    "get every event in order, the stalled one is closed, memory stays "
    "bounded",
    "[app][pg]") {
  cqrs::testing::TestSchema schema(8);
  cqrs::App app("notes");
  app.Event<Noted>(Noted::kName).Publish<Noted>("notes.noted");
  REQUIRE(cqrs::MigrateApp(schema.pool(), schema.name()).ok());
  cqrs::ServeOptions options;
  options.schema = schema.name();
  options.event_stream.max_buffered_bytes = 64 << 10;
  auto server = cqrs::AppServer::Start(app, &schema.pool(), options);
  REQUIRE(server.ok());
  const std::string token =
      cqrs::testing::CreateToken(schema.pool(), schema.name());

  constexpr int kClients = 200;
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    auto client = i == 0 ? TestClient::ConnectSmallWindow((*server)->port())
                         : TestClient::Connect((*server)->port());
    REQUIRE(client.ok());
    (*client)->SetDefaultHeaders(cqrs::testing::BearerHeader(token));
    auto head = (*client)->OpenStream("/events/stream");
    REQUIRE(head.ok());
    REQUIRE(head->status == 200);
    clients.push_back(*std::move(client));
  }
  cqrs::integration::FeedHub* hub = (*server)->event_hub();
  REQUIRE(hub != nullptr);
  // Each subscriber reads one catch-up page first (on two threads), then
  // joins the live fan-out.
  const bool all_live = cqrs::testing::Eventually(
      [&] { return hub->live_subscribers() == kClients; }, absl::Minutes(2));
  INFO("subscribers " << hub->subscribers() << ", live "
                      << hub->live_subscribers());
  REQUIRE(all_live);
  const int64_t memory_before = MemoryKib();

  // Events of about 1 KiB; the stalled client needs a few hundred to fall
  // 64 KiB (plus what the kernel buffers) behind.
  constexpr size_t kEvents = 2000;
  std::atomic<size_t> progress{0};
  std::vector<Received> received(kClients);
  std::vector<std::thread> readers;
  for (int i = 1; i < kClients; ++i) {
    readers.emplace_back(
        [&, i] { ReadAll(*clients[i], kEvents, &received[i], &progress); });
  }
  // Once the server has closed the stalled client, it drains it: the
  // server's last write, the reason, waits for room in the client's
  // buffers, and gives up after its write timeout (30 s) if the client
  // never reads. So the drainer gives its socket a large receive buffer
  // first: through the small one, every kilobyte costs a wake-up of this
  // thread, which on a loaded machine can add up to more than those 30 s.
  std::string stalled;
  std::string stalled_end;  // how the drainer's last read ended
  std::thread drainer([&] {
    if (!cqrs::testing::Eventually(
            [&] { return hub->subscribers() == kClients - 1; },
            absl::Seconds(120))) {
      return;
    }
    clients[0]->GrowReceiveBuffer();
    while (true) {
      absl::StatusOr<std::string> part =
          clients[0]->ReadStream(absl::Seconds(60));
      if (!part.ok()) {
        stalled_end = part.status().ToString();
        break;
      }
      stalled += *part;
    }
  });
  const std::string note(1000, 'n');
  int64_t peak_memory = memory_before;
  for (size_t sent = 0; sent < kEvents; sent += 20) {
    std::vector<cqrs::eventstore::NewEvent> batch(20);
    for (auto& e : batch) {
      e.event_type = Noted::kName;
      e.data = json::Encode(Noted{note});
      e.metadata = "{}";
    }
    REQUIRE((*server)
                ->store()
                .Append(absl::StrCat("note-", sent % 7),
                        cqrs::eventstore::ExpectedVersion::Any(),
                        std::move(batch))
                .ok());
    // Paced by the readers, so that only the stalled client falls behind.
    REQUIRE(cqrs::testing::Eventually(
        [&] {
          return progress.load() >= (sent + 20) * (kClients - 1) ||
                 !received[1].error.empty();
        },
        absl::Seconds(60)));
    peak_memory = std::max(peak_memory, MemoryKib());
  }
  for (auto& reader : readers) reader.join();
  drainer.join();

  // Every reading client got all events, once each, in the same order.
  CHECK(std::set<std::string>(received[1].ids.begin(), received[1].ids.end())
            .size() == kEvents);
  for (int i = 1; i < kClients; ++i) {
    INFO("client " << i << ": " << received[i].error);
    REQUIRE(received[i].error.empty());
    REQUIRE(received[i].ids.size() == kEvents);
    CHECK(received[i].ids == received[1].ids);
  }
  // The stalled client was closed: what it could still read ended with the
  // reason, then the stream's end.
  CHECK(hub->subscribers() == kClients - 1);
  INFO("the stalled client's last read: "
       << stalled_end << "; its last bytes: "
       << stalled.substr(stalled.size() -
                         std::min<size_t>(stalled.size(), 200)));
  CHECK(absl::EndsWith(stalled,
                       ": closed: this client fell too far behind; "
                       "reconnect with Last-Event-ID to resume\n\n"));
  // /metrics says so.
  auto scraper = TestClient::Connect((*server)->port());
  REQUIRE(scraper.ok());
  auto metrics = (*scraper)->Send("GET", "/metrics", "",
                                  cqrs::testing::BearerHeader(token));
  REQUIRE(metrics.ok());
  CHECK(absl::StrContains(
      metrics->body, "cqrs_event_stream_closed_total{reason=\"too_slow\"} 1"));
  CHECK(absl::StrContains(
      metrics->body,
      absl::StrCat("cqrs_event_stream_subscribers ", kClients - 1)));
  CHECK(absl::StrContains(
      metrics->body, absl::StrCat("cqrs_event_stream_events_sent_total ")));
  // What the server holds for 200 clients and 2 MB of events: bounded by
  // the per-client limit, not by what the stalled client missed.
  const int64_t growth_kib = peak_memory - memory_before;
  WARN("event stream: memory before " << memory_before << " KiB, peak "
                                      << peak_memory << " KiB (+" << growth_kib
                                      << " KiB)");
  CHECK(growth_kib < 64 * 1024);
}

}  // namespace

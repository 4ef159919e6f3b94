// The webhook deliverer (integration/webhook_deliverer.h) on PostgreSQL,
// delivering to a receiver on the framework's own HTTP server: signatures,
// filters, stream order, retries and Retry-After, parking and replay, 410
// and continuous failure disabling an endpoint, and a standby taking over
// from an owner whose session ended. The receiver nobody here wrote (the
// official standardwebhooks package, chaos, SIGKILL of the app):
// tests/node/webhooks.test.mjs.
#include "integration/webhook_deliverer.h"

#include <pqxx/pqxx>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "eventstore/postgres_event_store.h"
#include "framework/http/router.h"
#include "framework/http/server.h"
#include "framework/json.h"
#include "framework/metrics.h"
#include "integration/webhook_signature.h"
#include "integration/webhook_store.h"
#include "rapidjson/document.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace cqrs::integration {
namespace {

using eventstore::ExpectedVersion;
using eventstore::NewEvent;

constexpr char kSecret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Received {
  std::string hook;
  std::string id;
  std::string timestamp;
  std::string signature;
  std::string body;
  std::string stream;  // from the CloudEvent: category-subject
  int64_t version = 0;
  absl::Time at;
};

// An HTTP receiver at POST /hook/{name}: records every request and answers
// what `answer(name, request number for this event)` says.
class Receiver {
 public:
  struct Answer {
    int status = 200;
    std::string retry_after;
  };
  using AnswerFn = std::function<Answer(const Received&, int nth)>;

  Receiver() {
    router_.Add("POST", "/hook/{name}", [this](const http::Request& request) {
      Received r;
      r.hook = std::string(request.PathParam("name"));
      r.id = std::string(request.Header("webhook-id").value_or(""));
      r.timestamp =
          std::string(request.Header("webhook-timestamp").value_or(""));
      r.signature =
          std::string(request.Header("webhook-signature").value_or(""));
      r.body = request.body();
      r.at = absl::Now();
      rapidjson::Document doc;
      doc.Parse(r.body.data(), r.body.size());
      if (!doc.HasParseError() && doc.IsObject()) {
        r.stream = absl::StrCat(doc["category"].GetString(), "-",
                                doc["subject"].GetString());
        r.version = doc["streamversion"].GetInt64();
      }
      Answer answer;
      {
        absl::MutexLock lock(&mu_);
        const int nth = ++tries_[r.hook + "/" + r.id];
        if (answer_) answer = answer_(r, nth);
        received_.push_back(r);
      }
      http::Response response;
      response.status = answer.status;
      response.content_type = "text/plain";
      if (!answer.retry_after.empty()) {
        response.headers.push_back({"Retry-After", answer.retry_after});
      }
      return response;
    });
    http::ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    auto server = http::Server::Create(options, &router_);
    REQUIRE(server.ok());
    server_ = *std::move(server);
    REQUIRE(server_->Start().ok());
  }

  std::string Url(const std::string& hook) const {
    return absl::StrCat("http://127.0.0.1:", server_->port(), "/hook/", hook);
  }
  void SetAnswer(AnswerFn fn) {
    absl::MutexLock lock(&mu_);
    answer_ = std::move(fn);
  }
  std::vector<Received> Of(const std::string& hook) const {
    absl::MutexLock lock(&mu_);
    std::vector<Received> out;
    for (const Received& r : received_) {
      if (r.hook == hook) out.push_back(r);
    }
    return out;
  }
  // Distinct event ids received by `hook` with a 2xx answer... or at all:
  // ids whose requests arrived.
  std::set<std::string> Ids(const std::string& hook) const {
    std::set<std::string> ids;
    for (const Received& r : Of(hook)) ids.insert(r.id);
    return ids;
  }

 private:
  http::Router router_;
  std::unique_ptr<http::Server> server_;
  mutable absl::Mutex mu_;
  AnswerFn answer_ ABSL_GUARDED_BY(mu_);
  std::vector<Received> received_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> tries_ ABSL_GUARDED_BY(mu_);
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

struct Fixture {
  Fixture() : store(schema.NewEventStore()), publication(Bank()) {
    REQUIRE(WebhookStore::Migrate(schema.pool(), schema.name()).ok());
  }

  // An endpoint whose cursor is at the start of the log.
  void AddEndpoint(const std::string& id, const std::string& url,
                   const std::string& types = "{}") {
    pqxx::connection conn(schema.url());
    pqxx::work tx(conn);
    tx.exec_params(absl::StrCat("INSERT INTO ", schema.name(),
                                ".webhook_endpoints (id, url, types, secret, "
                                "cursor) VALUES ($1, $2, $3::text[], $4, "
                                "'0.0')"),
                   id, url, types, std::string(kSecret));
    tx.commit();
  }

  WebhookDelivererOptions Options() {
    WebhookDelivererOptions options;
    options.schema = schema.name();
    options.allow_networks = {"127.0.0.0/8"};
    options.retry_schedule = {absl::ZeroDuration(), absl::Milliseconds(10),
                              absl::Milliseconds(20)};
    options.jitter = 0;
    options.attempt_timeout = absl::Seconds(5);
    options.poll_interval = absl::Milliseconds(20);
    options.takeover_interval = absl::Milliseconds(50);
    return options;
  }

  std::unique_ptr<WebhookDeliverer> Deliverer(WebhookDelivererOptions o) {
    auto d = WebhookDeliverer::Create(&schema.pool(), store.get(), &publication,
                                      std::move(o));
    REQUIRE(d.ok());
    return *std::move(d);
  }

  // Appends Opened then `deposits` Deposited events to account-<i>.
  void Account(int i, int deposits) {
    std::vector<NewEvent> events = {Event("Opened")};
    for (int d = 0; d < deposits; ++d) {
      events.push_back(Event("Deposited", R"({"amount":5})"));
    }
    REQUIRE(store
                ->Append(absl::StrCat("account-", i), ExpectedVersion::Any(),
                         events)
                .ok());
  }

  testing::TestSchema schema;
  std::unique_ptr<eventstore::PostgresEventStore> store;
  Publication publication;
};

// Whether, per stream, the first arrival of each version is in version
// order.
bool InStreamOrder(const std::vector<Received>& received) {
  std::map<std::string, int64_t> last;
  std::set<std::string> seen;
  for (const Received& r : received) {
    if (!seen.insert(r.id).second) continue;  // a repeat
    int64_t& at = last[r.stream];
    if (r.version <= at) return false;
    at = r.version;
  }
  return true;
}

TEST_CASE(
    "every matching event is delivered signed, with its id, in stream "
    "order",
    "[integration][pg]") {
  Fixture f;
  Receiver receiver;
  f.AddEndpoint("wh_all", receiver.Url("all"));
  f.AddEndpoint("wh_deposits", receiver.Url("deposits"),
                "{bank.account.deposited}");
  for (int i = 0; i < 20; ++i) f.Account(i, 4);  // 100 events, 80 deposits
  MetricsRegistry metrics;
  WebhookDelivererOptions options = f.Options();
  options.metrics = &metrics;
  auto deliverer = f.Deliverer(options);
  deliverer->Start();
  REQUIRE(testing::Eventually([&] {
    return receiver.Ids("all").size() == 100 &&
           receiver.Ids("deposits").size() == 80;
  }));
  // Live: appended while it delivers.
  for (int i = 20; i < 30; ++i) f.Account(i, 1);
  REQUIRE(
      testing::Eventually([&] { return receiver.Ids("all").size() == 120; }));
  for (const std::string hook : {"all", "deposits"}) {
    const std::vector<Received> got = receiver.Of(hook);
    CHECK(InStreamOrder(got));
    for (const Received& r : got) {
      rapidjson::Document doc;
      doc.Parse(r.body.data(), r.body.size());
      REQUIRE(doc.IsObject());
      CHECK(r.id == doc["id"].GetString());
      const int64_t ts = std::stoll(r.timestamp);
      CHECK(std::abs(ts - absl::ToUnixSeconds(absl::Now())) < 120);
      absl::StatusOr<std::string> expected =
          SignWebhook(kSecret, r.id, ts, r.body);
      REQUIRE(expected.ok());
      CHECK(r.signature == *expected);
      if (hook == std::string("deposits")) {
        CHECK(std::string(doc["type"].GetString()) ==
              "bank.account.deposited.v1");
      }
    }
  }
  // Delivered rows are gone; the counters have them.
  REQUIRE(testing::Eventually([&] {
    return f.schema.QueryInt(absl::StrCat("SELECT count(*) FROM ",
                                          f.schema.name(),
                                          ".webhook_deliveries")) == 0 &&
           f.schema.QueryInt(absl::StrCat("SELECT sum(delivered) FROM ",
                                          f.schema.name(),
                                          ".webhook_endpoints")) == 210;
  }));
  // What /metrics shows.
  const std::string text = metrics.Render();
  CHECK_THAT(text, Catch::Contains("cqrs_webhook_attempts_total{endpoint="
                                   "\"wh_all\",outcome=\"success\"} 120"));
  CHECK_THAT(text, Catch::Contains("cqrs_webhook_attempts_total{endpoint="
                                   "\"wh_deposits\",outcome=\"success\"} "
                                   "90"));
  CHECK_THAT(
      text, Catch::Contains("cqrs_webhook_delivery_latency_seconds_count 210"));
  REQUIRE(testing::Eventually([&] {
    const std::string now = metrics.Render();
    return now.find("cqrs_webhook_lag_events{endpoint=\"wh_all\"} 0") !=
               std::string::npos &&
           now.find("cqrs_webhook_endpoint_enabled{endpoint=\"wh_all\"} 1") !=
               std::string::npos;
  }));
}

TEST_CASE(
    "a failing delivery is retried, then parked with its stream behind "
    "it; replaying sends them in order",
    "[integration][pg]") {
  Fixture f;
  Receiver receiver;
  f.AddEndpoint("wh_a", receiver.Url("a"));
  // account-0's second event fails until the receiver is fixed.
  std::atomic<bool> fixed{false};
  receiver.SetAnswer([&](const Received& r, int) {
    if (!fixed && r.stream == "account-0" && r.version == 2) {
      return Receiver::Answer{500, ""};
    }
    return Receiver::Answer{200, ""};
  });
  f.Account(0, 3);  // 4 events: v2 fails, v3 and v4 wait behind it
  f.Account(1, 3);
  auto deliverer = f.Deliverer(f.Options());
  deliverer->Start();
  REQUIRE(testing::Eventually([&] {
    return f.schema.QueryInt(
               absl::StrCat("SELECT count(*) FROM ", f.schema.name(),
                            ".webhook_deliveries WHERE state = 'parked'")) == 1;
  }));
  REQUIRE(testing::Eventually([&] { return receiver.Ids("a").size() == 6; }));
  // account-1 went on; account-0 stopped at its parked event.
  std::vector<int64_t> versions0;
  for (const Received& r : receiver.Of("a")) {
    if (r.stream == "account-0") versions0.push_back(r.version);
  }
  CHECK(versions0 == std::vector<int64_t>{1, 2, 2, 2});  // three attempts
  CHECK(f.schema.QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", f.schema.name(),
            ".webhook_attempts WHERE outcome = 'http_error' AND status = "
            "500")) == 3);

  fixed = true;
  pqxx::connection conn(f.schema.url());
  pqxx::work tx(conn);
  tx.exec(absl::StrCat("UPDATE ", f.schema.name(),
                       ".webhook_deliveries SET state = 'pending', attempts "
                       "= 0, next_attempt_at = now() WHERE state = 'parked'"));
  tx.exec(absl::StrCat("UPDATE ", f.schema.name(),
                       ".webhook_endpoints SET revision = revision + 1"));
  tx.commit();
  REQUIRE(testing::Eventually([&] { return receiver.Ids("a").size() == 8; }));
  versions0.clear();
  for (const Received& r : receiver.Of("a")) {
    if (r.stream == "account-0") versions0.push_back(r.version);
  }
  CHECK(versions0 == std::vector<int64_t>{1, 2, 2, 2, 2, 3, 4});
}

TEST_CASE("Retry-After on 429 is honoured", "[integration][pg]") {
  Fixture f;
  Receiver receiver;
  f.AddEndpoint("wh_a", receiver.Url("a"));
  receiver.SetAnswer([](const Received&, int nth) {
    return nth == 1 ? Receiver::Answer{429, "1"} : Receiver::Answer{200, ""};
  });
  f.Account(0, 0);
  auto deliverer = f.Deliverer(f.Options());
  deliverer->Start();
  REQUIRE(testing::Eventually([&] { return receiver.Of("a").size() == 2; }));
  const std::vector<Received> got = receiver.Of("a");
  CHECK(got[0].id == got[1].id);
  // The schedule says 10 ms; the receiver asked for a second.
  CHECK(got[1].at - got[0].at >= absl::Milliseconds(950));
}

TEST_CASE(
    "410 Gone disables the endpoint and nothing more is sent to it; an "
    "endpoint failing too long is disabled",
    "[integration][pg]") {
  Fixture f;
  Receiver receiver;
  f.AddEndpoint("wh_gone", receiver.Url("gone"));
  f.AddEndpoint("wh_failing", receiver.Url("failing"));
  f.AddEndpoint("wh_ok", receiver.Url("ok"));
  receiver.SetAnswer([](const Received& r, int) {
    if (r.hook == "gone") return Receiver::Answer{410, ""};
    if (r.hook == "failing") return Receiver::Answer{500, ""};
    return Receiver::Answer{200, ""};
  });
  WebhookDelivererOptions options = f.Options();
  options.retry_schedule = std::vector<absl::Duration>(
      50, absl::Milliseconds(20));  // never parks within the test
  options.disable_after = absl::Milliseconds(300);
  options.concurrency = 1;
  auto deliverer = f.Deliverer(options);
  f.Account(0, 0);
  deliverer->Start();
  auto reason = [&](const std::string& id) {
    pqxx::connection conn(f.schema.url());
    pqxx::nontransaction tx(conn);
    const pqxx::row r = tx.exec_params1(
        absl::StrCat("SELECT enabled, coalesce(disabled_reason, '') FROM ",
                     f.schema.name(), ".webhook_endpoints WHERE id = $1"),
        id);
    return r[0].as<bool>() ? std::string("enabled") : r[1].as<std::string>();
  };
  REQUIRE(testing::Eventually([&] { return reason("wh_gone") == "gone"; }));
  REQUIRE(
      testing::Eventually([&] { return reason("wh_failing") == "failing"; }));
  CHECK(receiver.Of("gone").size() == 1);
  const size_t failing_requests = receiver.Of("failing").size();
  CHECK(failing_requests >= 2);
  // More events: the enabled endpoint gets them, the disabled ones do not.
  for (int i = 1; i <= 5; ++i) f.Account(i, 0);
  REQUIRE(testing::Eventually([&] { return receiver.Ids("ok").size() == 6; }));
  CHECK(receiver.Of("gone").size() == 1);
  CHECK(receiver.Of("failing").size() == failing_requests);
  // Their events keep their place: enabling resumes them.
  receiver.SetAnswer([](const Received&, int) {
    return Receiver::Answer{200, ""};
  });
  f.schema.Exec(absl::StrCat(
      "UPDATE ", f.schema.name(),
      ".webhook_endpoints SET enabled = true, disabled_reason = NULL, "
      "failing_since = NULL, revision = revision + 1"));
  REQUIRE(testing::Eventually([&] {
    return receiver.Ids("gone").size() == 6 &&
           receiver.Ids("failing").size() == 6;
  }));
  CHECK(InStreamOrder(receiver.Of("gone")));
}

TEST_CASE(
    "a standby takes over when the owner's session ends; repeats carry "
    "the original webhook-id",
    "[integration][pg]") {
  Fixture f;
  Receiver receiver;
  f.AddEndpoint("wh_a", receiver.Url("a"));
  auto first = f.Deliverer(f.Options());
  auto second = f.Deliverer(f.Options());
  first->Start();
  REQUIRE(testing::Eventually([&] { return first->owner(); }));
  second->Start();
  for (int i = 0; i < 10; ++i) f.Account(i, 2);
  REQUIRE(testing::Eventually([&] { return receiver.Ids("a").size() == 30; }));
  CHECK_FALSE(second->owner());
  // The owner's session ends as if its process had died.
  f.schema.Exec(absl::StrCat(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
      "application_name = 'cqrs webhooks ",
      f.schema.name(), "'"));
  REQUIRE(testing::Eventually([&] { return second->owner(); }));
  first->Stop();
  for (int i = 10; i < 20; ++i) f.Account(i, 2);
  REQUIRE(testing::Eventually([&] { return receiver.Ids("a").size() == 60; }));
  const std::vector<Received> got = receiver.Of("a");
  CHECK(InStreamOrder(got));
  std::map<std::string, std::string> body_of;
  for (const Received& r : got) {
    auto [it, first_time] = body_of.emplace(r.id, r.body);
    if (!first_time) CHECK(it->second == r.body);
  }
}

}  // namespace
}  // namespace cqrs::integration

namespace cqrs::integration {
namespace {

TEST_CASE(
    "deliveries go on when the database sessions are killed mid-way; "
    "nothing is lost",
    "[integration][pg]") {
  Fixture f;
  Receiver receiver;
  f.AddEndpoint("wh_a", receiver.Url("a"));
  for (int i = 0; i < 40; ++i) f.Account(i, 4);  // 200 events
  auto deliverer = f.Deliverer(f.Options());
  deliverer->Start();
  // Kill every pool session (queueing, outcome writes) and the owner's
  // session several times while it delivers.
  int kills = 0;
  while (receiver.Ids("a").size() < 200 && kills < 5) {
    const size_t before = receiver.Ids("a").size();
    REQUIRE(
        testing::Eventually([&] { return receiver.Ids("a").size() > before; }));
    f.schema.TerminatePoolSessions();
    f.schema.Exec(absl::StrCat(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
        "application_name = 'cqrs webhooks ",
        f.schema.name(), "'"));
    ++kills;
  }
  for (int i = 40; i < 50; ++i) f.Account(i, 0);
  REQUIRE(testing::Eventually([&] { return receiver.Ids("a").size() == 210; }));
  CHECK(InStreamOrder(receiver.Of("a")));
  CHECK(kills > 0);
  // Every outcome is written in the end: no delivery left waiting.
  CHECK(testing::Eventually([&] {
    return f.schema.QueryInt(absl::StrCat("SELECT count(*) FROM ",
                                          f.schema.name(),
                                          ".webhook_deliveries")) == 0;
  }));
}

}  // namespace
}  // namespace cqrs::integration

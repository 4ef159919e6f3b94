// Webhook endpoints and the administration of their deliveries
// (integration/webhook_store.h) on PostgreSQL: every method, and bad input
// refused with nothing stored.
#include "integration/webhook_store.h"

#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "framework/error_code.h"
#include "integration/cloud_events.h"
#include "rapidjson/document.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace cqrs::integration {
namespace {

using eventstore::ExpectedVersion;
using eventstore::NewEvent;
using eventstore::Position;

Publication Bank() {
  Publication p("https://bank.example/");
  REQUIRE(p.Add({"AccountOpened", "bank.account.opened", 1, nullptr, ""}).ok());
  REQUIRE(
      p.Add({"MoneyDeposited", "bank.account.deposited", 2, nullptr, ""}).ok());
  return p;
}

// A migrated schema with an event store and a webhook store.
struct Fixture {
  Fixture() : publication(Bank()) {
    events = schema.NewEventStore();
    REQUIRE(WebhookStore::Migrate(schema.pool(), schema.name()).ok());
    WebhookStoreOptions options;
    options.publication = &publication;
    options.events = events.get();
    options.rotation_grace = absl::Hours(2);
    auto made = WebhookStore::Create(&schema.pool(), schema.name(), options);
    REQUIRE(made.ok());
    store = *std::move(made);
  }

  Position Append(const std::string& stream, int count = 1) {
    std::vector<NewEvent> batch(count);
    for (NewEvent& e : batch) {
      e.event_type = "AccountOpened";
      e.data = "{}";
    }
    auto r = events->Append(stream, ExpectedVersion::Any(), std::move(batch));
    REQUIRE(r.ok());
    // Readers (and so the head) see it once no older transaction of the
    // cluster is open: other tests run beside this one.
    REQUIRE(cqrs::testing::Eventually([&] {
      auto head = events->HeadPosition();
      return head.ok() && *head >= r->position;
    }));
    return r->position;
  }

  long long Count(const std::string& table) {
    return schema.QueryInt(
        absl::StrCat("SELECT count(*) FROM ", schema.name(), ".", table));
  }

  // A delivery row for `endpoint` in `state`, as the deliverer writes it.
  void InsertDelivery(const std::string& endpoint, int n,
                      const std::string& state) {
    schema.Exec(absl::StrCat(
        "INSERT INTO ", schema.name(),
        ".webhook_deliveries (endpoint_id, event_id, position, stream_id, "
        "stream_version, event_type, recorded_at, body, state, attempts, "
        "last_status, last_error, parked_at) VALUES ('",
        endpoint, "', '00000000-0000-0000-0000-", absl::StrFormat("%012d", n),
        "', '1.", n, "', 'account-", n % 2, "', ", n,
        ", 'bank.account.opened.v1', now() - interval '", 100 - n,
        " seconds', '{}', '", state, "', ", state == "parked" ? 8 : 1,
        ", 500, 'boom', ", state == "parked" ? "now()" : "NULL", ")"));
  }

  cqrs::testing::TestSchema schema;
  Publication publication;
  std::unique_ptr<eventstore::PostgresEventStore> events;
  std::unique_ptr<WebhookStore> store;
};

rapidjson::Document Json(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  REQUIRE(!d.HasParseError());
  return d;
}

TEST_CASE("webhook endpoints are added, listed, changed and deleted",
          "[integration][webhooks][pg]") {
  Fixture f;
  const Position head = f.Append("account-1", 3);
  WebhookEndpointInput input;
  input.url = "https://127.0.0.1/in";
  input.types = {"bank.account.opened.v1", "bank.account.deposited"};
  input.categories = {"account"};
  input.description = "the ledger";
  auto made = f.store->Add(input);
  REQUIRE(made.ok());
  const WebhookEndpoint& e = made->endpoint;
  CHECK(absl::StartsWith(e.id, "wh_"));
  CHECK(e.id.size() == 3 + 16);
  CHECK(absl::StartsWith(made->secret, "whsec_"));
  CHECK(made->secret == e.secret);
  CHECK(e.url == input.url);
  CHECK(e.types == input.types);
  CHECK(e.categories == input.categories);
  CHECK(e.description == "the ledger");
  CHECK(e.enabled);
  CHECK(e.cursor == head);  // starts at the head
  CHECK(e.revision == 1);
  CHECK(e.previous_secret.empty());

  auto second = f.store->Add({"http://127.0.0.1:9000/x", {}, {}, ""});
  REQUIRE(second.ok());
  auto all = f.store->List();
  REQUIRE(all.ok());
  REQUIRE(all->size() == 2);
  CHECK((*all)[0].id == e.id);  // oldest first
  CHECK((*all)[1].id == second->endpoint.id);

  auto got = f.store->Get(e.id);
  REQUIRE(got.ok());
  CHECK(got->secret == made->secret);
  CHECK(got->types == input.types);

  WebhookEndpointPatch patch;
  patch.url = "https://127.0.0.1/v2";
  patch.types = std::vector<std::string>{};
  auto updated = f.store->Update(e.id, patch);
  REQUIRE(updated.ok());
  CHECK(updated->url == "https://127.0.0.1/v2");
  CHECK(updated->types.empty());
  CHECK(updated->categories == input.categories);  // unset: stays
  CHECK(updated->description == "the ledger");
  CHECK(updated->revision == 2);
  CHECK(updated->updated_at >= e.updated_at);

  auto disabled = f.store->Disable(e.id);
  REQUIRE(disabled.ok());
  CHECK_FALSE(disabled->enabled);
  CHECK(disabled->disabled_reason == "manual");
  CHECK(disabled->disabled_at.has_value());
  CHECK(disabled->revision == 3);
  CHECK(f.store->Disable(e.id, "sleepy").status().code() ==
        absl::StatusCode::kInvalidArgument);
  f.schema.Exec(absl::StrCat("UPDATE ", f.schema.name(),
                             ".webhook_endpoints SET failing_since = now()"));
  auto enabled = f.store->Enable(e.id);
  REQUIRE(enabled.ok());
  CHECK(enabled->enabled);
  CHECK(enabled->disabled_reason.empty());
  CHECK_FALSE(enabled->disabled_at.has_value());
  CHECK_FALSE(enabled->failing_since.has_value());
  CHECK(enabled->revision == 4);

  auto rotated = f.store->RotateSecret(e.id);
  REQUIRE(rotated.ok());
  CHECK(absl::StartsWith(rotated->secret, "whsec_"));
  CHECK(rotated->secret != made->secret);
  CHECK(rotated->endpoint.previous_secret == made->secret);
  REQUIRE(rotated->endpoint.previous_secret_until.has_value());
  const absl::Duration left =
      *rotated->endpoint.previous_secret_until - absl::Now();
  CHECK(left > absl::Hours(1));
  CHECK(left <= absl::Hours(2) + absl::Seconds(5));
  CHECK(rotated->endpoint.revision == 5);

  // JSON: no secret but the one shown; the state and the cursor.
  rapidjson::Document doc = Json(WebhookEndpointJson(rotated->endpoint));
  CHECK(std::string(doc["state"].GetString()) == "enabled");
  CHECK(std::string(doc["cursor"].GetString()) == head.ToToken());
  CHECK(doc["previous_secret_expires_at"].IsString());
  CHECK_FALSE(doc.HasMember("secret"));
  CHECK_FALSE(absl::StrContains(WebhookEndpointPageJson(*all), "whsec_"));
  doc = Json(WebhookEndpointJson(rotated->endpoint, nullptr, rotated->secret));
  CHECK(std::string(doc["secret"].GetString()) == rotated->secret);

  REQUIRE(f.store->Delete(e.id).ok());
  auto gone = f.store->Get(e.id);
  CHECK(gone.status().code() == absl::StatusCode::kNotFound);
  CHECK(ErrorCodeOf(gone.status()) == "webhook_not_found");
  CHECK(f.store->Delete(e.id).code() == absl::StatusCode::kNotFound);
  CHECK(f.Count("webhook_endpoints") == 1);
}

TEST_CASE("unknown webhook ids are kNotFound everywhere",
          "[integration][webhooks][pg]") {
  Fixture f;
  const std::string id = "wh_0000000000000000";
  const auto not_found = [](const absl::Status& s) {
    return s.code() == absl::StatusCode::kNotFound &&
           ErrorCodeOf(s) == "webhook_not_found";
  };
  CHECK(not_found(f.store->Get(id).status()));
  CHECK(not_found(f.store->Stats(id).status()));
  CHECK(not_found(f.store->Update(id, {}).status()));
  CHECK(not_found(f.store->Delete(id)));
  CHECK(not_found(f.store->Disable(id).status()));
  CHECK(not_found(f.store->Enable(id).status()));
  CHECK(not_found(f.store->RotateSecret(id).status()));
  CHECK(not_found(f.store->Attempts(id, 10).status()));
  CHECK(not_found(f.store->Replay(id, Position::Start()).status()));
  CHECK(not_found(f.store->ReplayFrom(id, absl::Now()).status()));
  CHECK(not_found(f.store->Parked(id, 10).status()));
  CHECK(not_found(f.store->ReplayParked(id).status()));
  CHECK(not_found(f.store->SkipParked(id).status()));
}

TEST_CASE("bad endpoints are refused and nothing is stored",
          "[integration][webhooks][pg]") {
  Fixture f;
  auto good = f.store->Add({"https://ok.example/", {}, {}, ""});
  REQUIRE(good.ok());
  const std::string many_types_entry = "bank.account.opened.v1";
  struct Bad {
    const char* why;
    WebhookEndpointInput input;
  };
  const std::vector<Bad> bad = {
      {"ftp", {"ftp://files.example/x", {}, {}, ""}},
      {"no scheme", {"127.0.0.1/x", {}, {}, ""}},
      {"no host", {"http:///path", {}, {}, ""}},
      {"empty host", {"https://", {}, {}, ""}},
      {"port only", {"https://:8080/", {}, {}, ""}},
      {"user info", {"https://user:pass@127.0.0.1/", {}, {}, ""}},
      {"space", {"https://127.0.0.1/a b", {}, {}, ""}},
      {"newline", {"https://127.0.0.1/\n", {}, {}, ""}},
      {"empty", {"", {}, {}, ""}},
      {"long url",
       {absl::StrCat("https://127.0.0.1/", std::string(2048, 'a')),
        {},
        {},
        ""}},
      {"unknown type",
       {"https://127.0.0.1/", {"bank.account.closed.v1"}, {}, ""}},
      {"unknown version",
       {"https://127.0.0.1/", {"bank.account.opened.v2"}, {}, ""}},
      {"stored type", {"https://127.0.0.1/", {"AccountOpened"}, {}, ""}},
      {"empty type", {"https://127.0.0.1/", {""}, {}, ""}},
      {"upper category", {"https://127.0.0.1/", {}, {"Account"}, ""}},
      {"dotted category", {"https://127.0.0.1/", {}, {"a.b"}, ""}},
      {"comma category", {"https://127.0.0.1/", {}, {"a,b"}, ""}},
      {"empty category", {"https://127.0.0.1/", {}, {""}, ""}},
      {"long category", {"https://127.0.0.1/", {}, {std::string(65, 'a')}, ""}},
      {"long description",
       {"https://127.0.0.1/", {}, {}, std::string(1001, 'd')}},
      {"too many types",
       {"https://127.0.0.1/",
        std::vector<std::string>(101, many_types_entry),
        {},
        ""}},
      {"too many categories",
       {"https://127.0.0.1/", {}, std::vector<std::string>(101, "c"), ""}},
  };
  for (const Bad& b : bad) {
    INFO(b.why);
    auto refused = f.store->Add(b.input);
    CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(ErrorCodeOf(refused.status()) == "invalid_request");
    WebhookEndpointPatch patch;
    patch.url = b.input.url;
    if (b.input.url == "https://127.0.0.1/") patch.url.reset();
    if (!b.input.types.empty()) patch.types = b.input.types;
    if (!b.input.categories.empty()) patch.categories = b.input.categories;
    if (!b.input.description.empty()) patch.description = b.input.description;
    auto not_changed = f.store->Update(good->endpoint.id, patch);
    CHECK(not_changed.status().code() == absl::StatusCode::kInvalidArgument);
  }
  // The message names the field.
  CHECK(absl::StrContains(
      f.store->Add({"ftp://x/", {}, {}, ""}).status().message(), "url"));
  CHECK(absl::StrContains(
      f.store->Add({"https://x/", {"nope.v1"}, {}, ""}).status().message(),
      "types"));
  CHECK(f.Count("webhook_endpoints") == 1);
  auto same = f.store->Get(good->endpoint.id);
  REQUIRE(same.ok());
  CHECK(same->revision == 1);
  CHECK(same->url == "https://ok.example/");

  // At the bounds: accepted.
  auto edge = f.store->Add({absl::StrCat("https://127.0.0.1/",
                                         std::string(kMaxWebhookUrl - 18, 'a')),
                            std::vector<std::string>(100, many_types_entry),
                            std::vector<std::string>(100, std::string(64, 'c')),
                            std::string(1000, 'd')});
  CHECK(edge.ok());
  CHECK(f.store->Add({"http://[::1]:8080/x", {}, {}, ""}).ok());
  CHECK(f.store->Add({"HTTPS://Hooks.Example", {}, {}, ""}).ok());
}

TEST_CASE("the URL check of the options is asked, and its refusal is 400",
          "[integration][webhooks][pg]") {
  cqrs::testing::TestSchema schema;
  const Publication publication = Bank();
  auto events = schema.NewEventStore();
  REQUIRE(WebhookStore::Migrate(schema.pool(), schema.name()).ok());
  std::vector<std::string> asked;
  WebhookStoreOptions options;
  options.publication = &publication;
  options.events = events.get();
  options.check_url = [&](absl::string_view url) -> absl::Status {
    asked.emplace_back(url);
    if (absl::StrContains(url, "10.0.0.1")) {
      return absl::PermissionDeniedError("10.0.0.1 is a private address");
    }
    return absl::OkStatus();
  };
  auto store = WebhookStore::Create(&schema.pool(), schema.name(), options);
  REQUIRE(store.ok());
  CHECK((*store)->Add({"https://127.0.0.1/", {}, {}, ""}).ok());
  auto refused = (*store)->Add({"http://10.0.0.1/", {}, {}, ""});
  CHECK(ErrorCodeOf(refused.status()) == "invalid_request");
  CHECK(absl::StrContains(refused.status().message(), "private address"));
  CHECK(asked ==
        std::vector<std::string>{"https://127.0.0.1/", "http://10.0.0.1/"});
  CHECK(schema.QueryInt(absl::StrCat("SELECT count(*) FROM ", schema.name(),
                                     ".webhook_endpoints")) == 1);
  // Create() refuses missing parts and an unmigrated schema.
  WebhookStoreOptions none;
  CHECK(WebhookStore::Create(&schema.pool(), schema.name(), none)
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  cqrs::testing::TestSchema bare;
  CHECK(WebhookStore::Create(&bare.pool(), bare.name(), options)
            .status()
            .code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("replay moves the cursor back or forward, never past the head",
          "[integration][webhooks][pg]") {
  Fixture f;
  const Position first = f.Append("account-1");
  auto made = f.store->Add({"https://127.0.0.1/", {}, {}, ""});
  REQUIRE(made.ok());
  const std::string id = made->endpoint.id;
  CHECK(made->endpoint.cursor == first);

  auto back = f.store->Replay(id, Position::Start());
  REQUIRE(back.ok());
  CHECK(back->cursor == Position::Start());
  CHECK(back->revision == 2);

  Position beyond = first;
  beyond.global_position += 1000;
  auto refused = f.store->Replay(id, beyond);
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(ErrorCodeOf(refused.status()) == "invalid_request");
  auto same = f.store->Get(id);
  REQUIRE(same.ok());
  CHECK(same->cursor == Position::Start());
  CHECK(same->revision == 2);

  auto forward = f.store->Replay(id, first);
  REQUIRE(forward.ok());
  CHECK(forward->cursor == first);

  // From a time: just before the first event recorded at or after it.
  f.schema.Exec(absl::StrCat("UPDATE ", f.schema.name(),
                             ".events SET recorded_at = now() - interval "
                             "'1 hour'"));
  const absl::Time between = absl::Now() - absl::Minutes(30);
  const Position second = f.Append("account-2", 2);
  auto from_time = f.store->ReplayFrom(id, between);
  REQUIRE(from_time.ok());
  CHECK(from_time->cursor < second);
  CHECK(first <= from_time->cursor);
  auto read = f.events->ReadAll(from_time->cursor, 10);
  REQUIRE(read.ok());
  REQUIRE(read->events.size() == 2);
  CHECK(read->events[0].stream_id == "account-2");
  CHECK(read->events[1].position == second);

  auto from_before_all = f.store->ReplayFrom(id, between - absl::Hours(2));
  REQUIRE(from_before_all.ok());
  read = f.events->ReadAll(from_before_all->cursor, 10);
  REQUIRE(read.ok());
  CHECK(read->events.size() == 3);

  // A time after every event: the head.
  auto from_future = f.store->ReplayFrom(id, absl::Now() + absl::Hours(1));
  REQUIRE(from_future.ok());
  CHECK(from_future->cursor == second);
}

TEST_CASE("stats, attempts and parked deliveries",
          "[integration][webhooks][pg]") {
  Fixture f;
  auto made = f.store->Add({"https://127.0.0.1/", {}, {}, ""});
  REQUIRE(made.ok());
  auto other = f.store->Add({"https://other.example/", {}, {}, ""});
  REQUIRE(other.ok());
  const std::string id = made->endpoint.id;

  auto empty = f.store->Stats(id);
  REQUIRE(empty.ok());
  CHECK(empty->pending == 0);
  CHECK(empty->parked == 0);
  CHECK_FALSE(empty->oldest_pending_at.has_value());

  for (int n = 1; n <= 3; ++n) f.InsertDelivery(id, n, "parked");
  for (int n = 4; n <= 5; ++n) f.InsertDelivery(id, n, "pending");
  f.InsertDelivery(other->endpoint.id, 6, "parked");
  f.schema.Exec(absl::StrCat(
      "UPDATE ", f.schema.name(),
      ".webhook_endpoints SET delivered = 7, failed_attempts = 9, "
      "last_success_at = now(), last_failure_at = now() WHERE id = '",
      id, "'"));
  for (int n = 1; n <= 5; ++n) {
    f.schema.Exec(absl::StrCat(
        "INSERT INTO ", f.schema.name(),
        ".webhook_attempts (endpoint_id, event_id, attempt, attempted_at, "
        "duration_ms, status, outcome, error) VALUES ('",
        id, "', '00000000-0000-0000-0000-00000000000", n, "', ", n, ", now(), ",
        10 * n, ", ", n == 5 ? "200" : "NULL", ", '",
        n == 5 ? "success" : "timeout", "', ", n == 5 ? "NULL" : "'slow'",
        ")"));
  }

  auto stats = f.store->Stats(id);
  REQUIRE(stats.ok());
  CHECK(stats->pending == 2);
  CHECK(stats->parked == 3);
  CHECK(stats->delivered == 7);
  CHECK(stats->failed_attempts == 9);
  CHECK(stats->last_success_at.has_value());
  CHECK(stats->last_failure_at.has_value());
  REQUIRE(stats->oldest_pending_at.has_value());
  // Row 4 (recorded 96 s ago), not row 5 (95 s ago) nor a parked one: its
  // own time, read back the way the store reads it (no wall clock here).
  CHECK(absl::ToUnixMicros(*stats->oldest_pending_at) ==
        f.schema.QueryInt(absl::StrCat(
            "SELECT (extract(epoch FROM recorded_at) * 1000000)::bigint FROM ",
            f.schema.name(),
            ".webhook_deliveries WHERE event_id = "
            "'00000000-0000-0000-0000-000000000004'")));
  rapidjson::Document doc = Json(WebhookEndpointJson(made->endpoint, &*stats));
  CHECK(doc["stats"]["parked"].GetInt64() == 3);
  CHECK(doc["stats"]["oldest_pending_at"].IsString());

  auto attempts = f.store->Attempts(id, 3);
  REQUIRE(attempts.ok());
  REQUIRE(attempts->size() == 3);
  CHECK((*attempts)[0].attempt == 5);  // newest first
  CHECK((*attempts)[0].status == 200);
  CHECK((*attempts)[0].outcome == "success");
  CHECK((*attempts)[0].error.empty());
  CHECK((*attempts)[0].duration == absl::Milliseconds(50));
  CHECK((*attempts)[1].status == 0);
  CHECK((*attempts)[1].error == "slow");
  doc = Json(WebhookAttemptsJson(*attempts));
  CHECK(doc["items"][0]["duration_ms"].GetInt64() == 50);
  CHECK(doc["items"][1]["status"].IsNull());
  CHECK(f.store->Attempts(id, 0).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(f.store->Attempts(id, 1001).status().code() ==
        absl::StatusCode::kInvalidArgument);

  auto parked = f.store->Parked(id, 100);
  REQUIRE(parked.ok());
  REQUIRE(parked->size() == 3);
  // Streams in the order first queued (account-1, then account-0), each
  // in stream order.
  CHECK((*parked)[0].stream_version == 1);
  CHECK((*parked)[1].stream_version == 3);
  CHECK((*parked)[2].stream_version == 2);
  CHECK((*parked)[0].type == "bank.account.opened.v1");
  CHECK((*parked)[0].attempts == 8);
  CHECK((*parked)[0].last_status == 500);
  CHECK((*parked)[0].last_error == "boom");
  CHECK((*parked)[0].position.ToToken() == "1.1");
  doc = Json(ParkedDeliveriesJson(*parked));
  CHECK(std::string(doc["items"][2]["stream_id"].GetString()) == "account-0");
  REQUIRE(f.store->Parked(id, 2).ok());
  CHECK(f.store->Parked(id, 2)->size() == 2);

  auto replayed = f.store->ReplayParked(id);
  REQUIRE(replayed.ok());
  CHECK(*replayed == 3);
  CHECK(f.schema.QueryInt(absl::StrCat(
            "SELECT count(*) FROM ", f.schema.name(),
            ".webhook_deliveries WHERE endpoint_id = '", id,
            "' AND state = 'pending' AND attempts = 0 AND parked_at IS NULL "
            "AND next_attempt_at <= now()")) == 3);
  CHECK(f.store->Get(id)->revision == 2);
  // The other endpoint's parked row stays.
  CHECK(f.store->Stats(other->endpoint.id)->parked == 1);
  CHECK(*f.store->ReplayParked(id) == 0);

  f.schema.Exec(absl::StrCat("UPDATE ", f.schema.name(),
                             ".webhook_deliveries SET state = 'parked', "
                             "parked_at = now() WHERE endpoint_id = '",
                             id, "' AND stream_version <= 2"));
  auto skipped = f.store->SkipParked(id);
  REQUIRE(skipped.ok());
  CHECK(*skipped == 2);
  CHECK(f.store->Stats(id)->pending == 3);
  CHECK(f.store->Stats(id)->parked == 0);
  CHECK(f.store->Stats(other->endpoint.id)->parked == 1);

  // Deleting an endpoint deletes its deliveries and attempts.
  REQUIRE(f.store->Delete(id).ok());
  CHECK(f.Count("webhook_deliveries") == 1);
  CHECK(f.Count("webhook_attempts") == 0);
}

}  // namespace
}  // namespace cqrs::integration

// HttpCommandRunner and the metadata it stamps: who sent the command
// (the request's principal, or "anonymous") in every event it appends.
#include "commands/http_command.h"

#include <string>
#include <variant>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "commands/aggregate.h"
#include "commands/command_metadata.h"
#include "commands/idempotency.h"
#include "eventstore/in_memory_event_store.h"
#include "framework/http/message.h"
#include "rapidjson/document.h"

namespace cqrs::commands {
namespace {

struct Ticked {};
using TickEvent = std::variant<Ticked>;
struct Ticks {
  int64_t count = 0;
};
using TickType = AggregateType<Ticks, TickEvent>;

const EventRegistry<TickEvent>& Registry() {
  static const EventRegistry<TickEvent>* registry = [] {
    auto* r = new EventRegistry<TickEvent>();
    EventCodec<Ticked> ticked;
    ticked.name = "Ticked";
    ticked.to_json = [](const Ticked&) { return std::string("{}"); };
    ticked.from_json = [](absl::string_view) -> absl::StatusOr<Ticked> {
      return Ticked{};
    };
    REQUIRE(r->Register(std::move(ticked)).ok());
    return r;
  }();
  return *registry;
}

TickType::Options TickOptions() {
  TickType::Options o;
  o.category = "tick";
  o.registry = &Registry();
  o.apply = [](Ticks& t, const TickEvent&) { ++t.count; };
  return o;
}

// Appends two events to tick-<id> per run.
HttpCommandRunner::Command TickTwice(const TickType& ticks,
                                     const std::string& id) {
  return [&ticks, id](
             eventstore::EventStore& store,
             const CommandContext& ctx) -> absl::StatusOr<http::Response> {
    auto out = ticks.Execute(store, id, ctx.metadata, ctx.execute,
                             [](const Ticks&, int64_t) {
                               return absl::StatusOr<std::vector<TickEvent>>(
                                   std::vector<TickEvent>{Ticked{}, Ticked{}});
                             });
    if (!out.ok()) return out.status();
    return http::JsonResponse(200,
                              absl::StrCat("{\"version\":", out->version, "}"));
  };
}

http::Request Post(const std::string& target, http::HeaderList headers = {}) {
  auto request =
      http::Request::Create("POST", target, std::move(headers), "{}");
  REQUIRE(request.ok());
  return *std::move(request);
}

http::Principal Key(std::string id) {
  http::Principal p;
  p.id = std::move(id);
  p.scopes = {"commands"};
  return p;
}

// The string member `name` of each event's metadata in `stream`; "<none>"
// where it is missing.
std::vector<std::string> MetadataMember(eventstore::EventStore& store,
                                        const std::string& stream,
                                        const char* name) {
  auto events =
      store.ReadStream(stream, eventstore::Direction::kForward, 1, 100);
  REQUIRE(events.ok());
  std::vector<std::string> out;
  for (const eventstore::RecordedEvent& e : *events) {
    rapidjson::Document doc;
    doc.Parse(e.metadata.data(), e.metadata.size());
    REQUIRE(doc.IsObject());
    auto it = doc.FindMember(name);
    out.push_back(it != doc.MemberEnd() && it->value.IsString()
                      ? it->value.GetString()
                      : "<none>");
  }
  return out;
}

TEST_CASE("command metadata JSON: members in order, actor always",
          "[commands]") {
  CommandMetadata m;
  m.command_id = "c";
  m.correlation_id = "r";
  m.causation_id = "e";
  // No actor given: the event still names one.
  CHECK(m.ToJson() ==
        R"({"command_id":"c","correlation_id":"r","causation_id":"e",)"
        R"("actor":"anonymous"})");
  m.actor = "process:transfer_process";
  m.on_behalf_of = "0123456789ab";
  CHECK(m.ToJson() ==
        R"({"command_id":"c","correlation_id":"r","causation_id":"e",)"
        R"("actor":"process:transfer_process","on_behalf_of":"0123456789ab"})");
  // Escaped by the writer, never spliced in.
  m.actor = "a\"b";
  m.on_behalf_of.clear();
  CHECK(m.ToJson() ==
        R"({"command_id":"c","correlation_id":"r","causation_id":"e",)"
        R"("actor":"a\"b"})");

  const CommandMetadata fresh = CommandMetadata::ForCommand("", "0123456789ab");
  CHECK(!fresh.command_id.empty());
  CHECK(!fresh.correlation_id.empty());
  CHECK(fresh.correlation_id != fresh.command_id);
  CHECK(fresh.causation_id == fresh.command_id);
  CHECK(fresh.actor == "0123456789ab");
  CHECK(fresh.on_behalf_of.empty());
}

TEST_CASE("an HTTP command's events name the caller's key as actor",
          "[commands]") {
  eventstore::InMemoryEventStore store;
  InMemoryIdempotencyStore idempotency(&store);
  HttpCommandRunner runner(&store, &idempotency);
  TickType ticks(TickOptions());

  http::Request keyed = Post("/ticks/a");
  keyed.set_principal(Key("0123456789ab"));
  REQUIRE(runner.Run(keyed, "tick", TickTwice(ticks, "a")).status == 200);
  CHECK(MetadataMember(store, "tick-a", "actor") ==
        std::vector<std::string>{"0123456789ab", "0123456789ab"});
  CHECK(MetadataMember(store, "tick-a", "on_behalf_of") ==
        std::vector<std::string>{"<none>", "<none>"});

  SECTION("without a principal: anonymous") {
    http::Request open = Post("/ticks/b");
    REQUIRE(runner.Run(open, "tick", TickTwice(ticks, "b")).status == 200);
    CHECK(MetadataMember(store, "tick-b", "actor") ==
          std::vector<std::string>{"anonymous", "anonymous"});
  }

  SECTION("an Idempotency-Key replay keeps the first execution's actor") {
    http::Request first = Post("/ticks/c", {{"Idempotency-Key", "k-1"}});
    first.set_principal(Key("aaaaaaaaaaaa"));
    http::Response ran = runner.Run(first, "tick", TickTwice(ticks, "c"));
    REQUIRE(ran.status == 200);
    CHECK(!ran.Header("Idempotent-Replayed").has_value());

    http::Request retry = Post("/ticks/c", {{"Idempotency-Key", "k-1"}});
    retry.set_principal(Key("bbbbbbbbbbbb"));
    http::Response replayed = runner.Run(retry, "tick", TickTwice(ticks, "c"));
    CHECK(replayed.status == 200);
    CHECK(replayed.Header("Idempotent-Replayed") ==
          absl::optional<absl::string_view>("true"));
    CHECK(replayed.body == ran.body);
    CHECK(MetadataMember(store, "tick-c", "actor") ==
          std::vector<std::string>{"aaaaaaaaaaaa", "aaaaaaaaaaaa"});
  }
}

}  // namespace
}  // namespace cqrs::commands

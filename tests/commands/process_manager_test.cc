// A process manager's batch transaction gets its transaction id at its first
// write and appends to other streams later. An append of another writer
// that commits in between must not end up after the process manager's in
// the global order while its version is lower (issue 11, item 1): the
// append refuses, the runner runs the event again in a new transaction, and
// the stream keeps its order. Against the test PostgreSQL.
//
// And who did it: a process manager's commands name the process as actor
// and the outside caller the chain started from as on_behalf_of.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "commands/process_manager.h"
#include "eventstore/postgres_event_store.h"
#include "projections/runner.h"
#include "rapidjson/document.h"
#include "tests/support/test_database.h"
#include "tests/support/wait.h"

namespace cqrs::commands {
namespace {

using eventstore::ExpectedVersion;
using eventstore::NewEvent;

NewEvent Event(const std::string& type) {
  NewEvent e;
  e.event_type = type;
  return e;
}

using ::cqrs::testing::Eventually;

TEST_CASE("a process manager's late append keeps its stream in order",
          "[commands][pg]") {
  testing::TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(projections::ProjectionRunner::Migrate(schema.pool(), schema.name())
              .ok());
  REQUIRE(MigrateProcessManagers(schema.pool(), schema.name()).ok());
  REQUIRE(
      store->Append("acct-y", ExpectedVersion::NoStream(), {Event("Opened")})
          .ok());

  // On "Ordered": notes it in log-x (the transaction gets its id), then
  // charges acct-y. The first time, a deposit to acct-y commits in
  // between, from another session.
  std::atomic<int> deliveries{0};
  std::atomic<int> refusals{0};
  std::atomic<bool> deposited{false};
  ProcessManager pm;
  pm.name = "charger";
  pm.event_types = {"Ordered"};
  pm.handle = [&](ProcessContext& ctx,
                  const eventstore::RecordedEvent&) -> absl::Status {
    return ctx
        .Once("charge",
              [&](const CommandMetadata&) -> absl::Status {
                auto noted = ctx.store().Append("log-x", ExpectedVersion::Any(),
                                                {Event("Noted")});
                if (!noted.ok()) return noted.status();
                if (deliveries++ == 0) {
                  std::thread deposit([&] {
                    deposited = store
                                    ->Append("acct-y", ExpectedVersion::Any(),
                                             {Event("Deposited")})
                                    .ok();
                  });
                  deposit.join();
                }
                auto charged = ctx.store().Append(
                    "acct-y", ExpectedVersion::Any(), {Event("Charged")});
                if (eventstore::MustRetryTransaction(charged.status())) {
                  ++refusals;
                }
                return charged.status();
              })
        .status();
  };
  auto process_store = schema.NewEventStore();
  projections::ProjectionRunnerOptions options;
  options.schema = schema.name();
  options.poll_interval = absl::Milliseconds(100);
  auto runner = projections::ProjectionRunner::Create(
      &schema.pool(), store.get(),
      {AsProjection(pm, process_store.get(), schema.name())}, options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(
      store->Append("order-1", ExpectedVersion::NoStream(), {Event("Ordered")})
          .ok());

  REQUIRE(Eventually([&] {
    auto info = store->GetStreamInfo("acct-y");
    return info.ok() && info->version == 3;
  }));
  (*runner)->Stop();
  CHECK(deposited);
  // Before the fix the charge was accepted at version 3 with the older
  // transaction id: version 3 came before version 2 in the global order.
  CHECK(refusals == 1);
  CHECK(deliveries == 2);
  CHECK(schema.StreamOrderInversions() == 0);
  auto y = store->ReadStream("acct-y", eventstore::Direction::kForward, 1, 10);
  REQUIRE(y.ok());
  REQUIRE(y->size() == 3);
  CHECK((*y)[1].event_type == "Deposited");
  CHECK((*y)[2].event_type == "Charged");
  CHECK((*y)[1].position < (*y)[2].position);
  // The refused attempt rolled back with everything it wrote.
  CHECK(store->GetStreamInfo("log-x")->version == 1);
  for (const auto& status : (*runner)->Statuses()) {
    CHECK(status.state != "failed");
  }
}

// The string member `name` of the metadata of the first event of `stream`,
// or "<none>".
std::string FirstMetadataMember(eventstore::EventStore& store,
                                const std::string& stream, const char* name) {
  auto events = store.ReadStream(stream, eventstore::Direction::kForward, 1, 1);
  REQUIRE(events.ok());
  REQUIRE(events->size() == 1);
  rapidjson::Document doc;
  doc.Parse((*events)[0].metadata.data(), (*events)[0].metadata.size());
  REQUIRE(doc.IsObject());
  auto it = doc.FindMember(name);
  if (it == doc.MemberEnd() || !it->value.IsString()) return "<none>";
  return it->value.GetString();
}

TEST_CASE("a process manager's commands act on behalf of the chain's caller",
          "[commands][pg]") {
  testing::TestSchema schema;
  auto store = schema.NewEventStore();
  REQUIRE(projections::ProjectionRunner::Migrate(schema.pool(), schema.name())
              .ok());
  REQUIRE(MigrateProcessManagers(schema.pool(), schema.name()).ok());

  // "shipper" answers Ordered in order-<n> with Shipped in ship-<n>;
  // "invoicer" answers Shipped with Invoiced in invoice-<n>: a chain of two.
  auto relay = [](std::string prefix, std::string type) {
    return [prefix, type](ProcessContext& ctx,
                          const eventstore::RecordedEvent& e) -> absl::Status {
      const std::string n = e.stream_id.substr(e.stream_id.find('-') + 1);
      return ctx
          .Once("relay",
                [&](const CommandMetadata& meta) -> absl::Status {
                  NewEvent next = Event(type);
                  next.metadata = meta.ToJson();
                  return ctx.store()
                      .Append(prefix + n, ExpectedVersion::NoStream(),
                              {std::move(next)})
                      .status();
                })
          .status();
    };
  };
  ProcessManager shipper;
  shipper.name = "shipper";
  shipper.event_types = {"Ordered"};
  shipper.handle = relay("ship-", "Shipped");
  ProcessManager invoicer;
  invoicer.name = "invoicer";
  invoicer.event_types = {"Shipped"};
  invoicer.handle = relay("invoice-", "Invoiced");
  CHECK(ProcessActor("shipper") == "process:shipper");

  // Orders as a key, anonymously, and from before actors were recorded
  // (the metadata names no actor, or is empty).
  const std::vector<std::pair<std::string, std::string>> orders = {
      {"1", R"({"correlation_id":"c-1","actor":"0123456789ab"})"},
      {"2", R"({"correlation_id":"c-2","actor":"anonymous"})"},
      {"3", R"({"correlation_id":"c-3"})"},
      {"4", "{}"}};
  for (const auto& [n, metadata] : orders) {
    NewEvent ordered = Event("Ordered");
    ordered.metadata = metadata;
    REQUIRE(store
                ->Append(absl::StrCat("order-", n), ExpectedVersion::NoStream(),
                         {ordered})
                .ok());
  }

  auto process_store = schema.NewEventStore();
  projections::ProjectionRunnerOptions options;
  options.schema = schema.name();
  options.poll_interval = absl::Milliseconds(100);
  auto runner = projections::ProjectionRunner::Create(
      &schema.pool(), store.get(),
      {AsProjection(shipper, process_store.get(), schema.name()),
       AsProjection(invoicer, process_store.get(), schema.name())},
      options);
  REQUIRE(runner.ok());
  (*runner)->Start();
  REQUIRE(Eventually([&] {
    for (const auto& order : orders) {
      auto info = store->GetStreamInfo(absl::StrCat("invoice-", order.first));
      if (!info.ok() || info->version != 1) return false;
    }
    return true;
  }));
  (*runner)->Stop();

  auto member = [&](const std::string& stream, const char* name) {
    return FirstMetadataMember(*store, stream, name);
  };
  for (const auto& order : orders) {
    INFO("order " << order.first);
    CHECK(member("ship-" + order.first, "actor") == "process:shipper");
    CHECK(member("invoice-" + order.first, "actor") == "process:invoicer");
  }
  // The key that ordered, through both steps of the chain.
  CHECK(member("ship-1", "on_behalf_of") == "0123456789ab");
  CHECK(member("invoice-1", "on_behalf_of") == "0123456789ab");
  CHECK(member("invoice-1", "correlation_id") == "c-1");
  CHECK(member("ship-2", "on_behalf_of") == "anonymous");
  CHECK(member("invoice-2", "on_behalf_of") == "anonymous");
  // No actor at the start: the first process acts for nobody known, and
  // the second acts for the first (the only actor its trigger names).
  CHECK(member("ship-3", "on_behalf_of") == "<none>");
  CHECK(member("ship-3", "correlation_id") == "c-3");
  CHECK(member("invoice-3", "on_behalf_of") == "process:shipper");
  CHECK(member("ship-4", "on_behalf_of") == "<none>");
  CHECK(member("invoice-4", "on_behalf_of") == "process:shipper");
}

}  // namespace
}  // namespace cqrs::commands

// A process manager's batch transaction gets its transaction id at its first
// write and appends to other streams later. An append of another writer
// that commits in between must not end up after the process manager's in
// the global order while its version is lower (issue 11, item 1): the
// append refuses, the runner runs the event again in a new transaction, and
// the stream keeps its order. Against the test PostgreSQL.
#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "commands/process_manager.h"
#include "eventstore/postgres_event_store.h"
#include "projections/runner.h"
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

using ::cqrs::testing::WaitUntil;

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

  REQUIRE(WaitUntil([&] {
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

}  // namespace
}  // namespace cqrs::commands

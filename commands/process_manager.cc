#include "commands/process_manager.h"

#include <memory>
#include <optional>
#include <utility>

#include <pqxx/pqxx>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "framework/json_shape.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "rapidjson/document.h"

namespace cqrs::commands {
namespace {

constexpr char kComponent[] = "process_managers";
constexpr Migration kMigrations[] = {
    {1, "process manager command records", R"sql(
CREATE TABLE {s}.process_commands (
  command_id  text        PRIMARY KEY,
  process     text        NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now()
);
)sql"},
};

// What a process manager's commands inherit from their trigger's metadata.
// Each is empty when the metadata lacks it (events appended outside any
// command, or stored before actors were recorded) or is not a JSON object.
struct Trigger {
  std::string correlation_id;
  // The trigger's on_behalf_of, else its actor: the outside caller a chain
  // of process managers acts for.
  std::string original_actor;
};

std::string StringMember(const rapidjson::Value& object, const char* name) {
  auto it = object.FindMember(name);
  if (it == object.MemberEnd() || !it->value.IsString()) return "";
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

Trigger TriggerOf(const eventstore::RecordedEvent& e) {
  json::SmallDocument small;
  rapidjson::Document& doc = small.doc;
  doc.Parse(e.metadata.data(), e.metadata.size());
  if (doc.HasParseError() || !doc.IsObject()) return {};
  Trigger t;
  t.correlation_id = StringMember(doc, "correlation_id");
  t.original_actor = StringMember(doc, "on_behalf_of");
  if (t.original_actor.empty()) t.original_actor = StringMember(doc, "actor");
  return t;
}

class Context : public ProcessContext {
 public:
  Context(pqxx::transaction_base& tx, eventstore::EventStore& store,
          const std::string& process, const std::string& select_record,
          const std::string& insert_record)
      : tx_(tx),
        store_(store),
        process_(process),
        actor_(ProcessActor(process)),
        select_record_(select_record),
        insert_record_(insert_record) {}

  void set_event(const eventstore::RecordedEvent* event) {
    event_ = event;
    trigger_ = TriggerOf(*event);
  }

  eventstore::EventStore& store() override { return store_; }
  const eventstore::RecordedEvent& event() const override { return *event_; }

  CommandMetadata Metadata(absl::string_view step) const override {
    CommandMetadata m;
    m.command_id = absl::StrCat(process_, ":", event_->event_id, ":", step);
    // An event without one (appended outside any command) starts a chain.
    m.correlation_id = trigger_.correlation_id.empty()
                           ? event_->event_id
                           : trigger_.correlation_id;
    m.causation_id = event_->event_id;
    m.actor = actor_;
    m.on_behalf_of = trigger_.original_actor;
    return m;
  }

  absl::StatusOr<bool> Once(
      absl::string_view step,
      const std::function<absl::Status(const CommandMetadata&)>& command)
      override {
    const CommandMetadata meta = Metadata(step);
    if (!tx_.exec_params(select_record_, meta.command_id).empty()) {
      return false;  // ran before
    }
    RETURN_IF_ERROR(command(meta));
    // Recorded after the command: a write gives the batch's transaction its
    // id, and the later it gets it, the less likely another writer commits
    // to a stream in between, which would make the command's append refuse
    // (MustRetryTransaction). The runner's one owner and its checkpoint
    // check keep two deliveries from racing here; if one did, the batch
    // rolls back.
    if (tx_.exec_params(insert_record_, meta.command_id, process_)
            .affected_rows() == 0) {
      return absl::AbortedError(
          absl::StrCat("step ", meta.command_id, " was recorded concurrently"));
    }
    return true;
  }

 private:
  pqxx::transaction_base& tx_;
  eventstore::EventStore& store_;
  const std::string& process_;
  const std::string actor_;
  const std::string& select_record_;
  const std::string& insert_record_;
  const eventstore::RecordedEvent* event_ = nullptr;
  Trigger trigger_;
};

}  // namespace

std::string ProcessActor(absl::string_view process_name) {
  return absl::StrCat(kProcessActorPrefix, process_name);
}

absl::Status MigrateProcessManagers(PgPool& pool, absl::string_view schema) {
  return ApplyMigrations(pool, schema, kComponent, kMigrations);
}

projections::Projection AsProjection(ProcessManager pm,
                                     eventstore::PostgresEventStore* store,
                                     std::string schema) {
  projections::Projection p;
  p.name = pm.name;
  p.kind = projections::ProjectionKind::kProcessManager;
  p.version = pm.version;
  p.event_types = pm.event_types;
  p.on_error = pm.on_error;
  p.max_attempts = pm.max_attempts;
  p.batch_size = pm.batch_size;
  const std::string insert_record =
      absl::StrCat("INSERT INTO ", schema,
                   ".process_commands (command_id, process) VALUES ($1, $2) "
                   "ON CONFLICT (command_id) DO NOTHING");
  const std::string select_record = absl::StrCat(
      "SELECT 1 FROM ", schema, ".process_commands WHERE command_id = $1");
  p.apply = [store, name = pm.name, handle = std::move(pm.handle),
             select_record,
             insert_record](projections::ProjectionContext& ctx,
                            projections::EventBatch events) -> absl::Status {
    std::unique_ptr<eventstore::PostgresEventStore::TransactionEventStore>
        in_tx = store->InTransaction(ctx.tx());
    Context context(ctx.tx(), *in_tx, name, select_record, insert_record);
    for (const eventstore::RecordedEvent& e : events) {
      context.set_event(&e);
      absl::Status handled = handle(context, e);
      if (!handled.ok()) {
        // The payloads stay: the runner recognizes MustRetryTransaction().
        absl::Status described(
            handled.code(),
            absl::StrCat("event ", e.event_type, " at ", e.position.ToToken(),
                         ": ", handled.message()));
        handled.ForEachPayload(
            [&](absl::string_view url, const absl::Cord& payload) {
              described.SetPayload(url, payload);
            });
        return described;
      }
      // A database error the handler did not pass on still means that the
      // batch cannot commit; the runner retries it (transient errors,
      // MustRetryTransaction) or applies the error policy.
      if (in_tx->failed()) return in_tx->failure();
    }
    // The commands' events count (and, with Notify::kAfterCommit, wake the
    // store's subscribers) once the batch has committed.
    if (std::optional<eventstore::Position> last = in_tx->last_appended()) {
      ctx.AfterCommit([store, last = *last, n = in_tx->appended_events()] {
        store->NotifyCommitted(last, n);
      });
    }
    return absl::OkStatus();
  };
  return p;
}

}  // namespace cqrs::commands

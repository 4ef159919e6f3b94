#include "integration/webhook_store.h"

#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"

namespace cqrs::integration {
namespace {

constexpr char kComponent[] = "webhooks";

// webhook_endpoints.cursor and webhook_deliveries.position are position
// tokens (eventstore::Position::ToToken()). A delivered event's row is
// deleted; the endpoint's counters keep the totals.
constexpr Migration kMigrations[] = {
    {1, "webhook endpoints, deliveries and attempts", R"sql(
CREATE TABLE {s}.webhook_endpoints (
  id                    text        PRIMARY KEY,
  url                   text        NOT NULL,
  types                 text[]      NOT NULL DEFAULT '{}',
  categories            text[]      NOT NULL DEFAULT '{}',
  description           text        NOT NULL DEFAULT '',
  secret                text        NOT NULL,
  previous_secret       text,
  previous_secret_until timestamptz,
  enabled               boolean     NOT NULL DEFAULT true,
  disabled_reason       text,
  disabled_at           timestamptz,
  failing_since         timestamptz,
  cursor                text        NOT NULL,
  revision              bigint      NOT NULL DEFAULT 1,
  delivered             bigint      NOT NULL DEFAULT 0,
  failed_attempts       bigint      NOT NULL DEFAULT 0,
  last_success_at       timestamptz,
  last_failure_at       timestamptz,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {s}.webhook_deliveries (
  endpoint_id     text        NOT NULL
                  REFERENCES {s}.webhook_endpoints (id) ON DELETE CASCADE,
  seq             bigint      GENERATED ALWAYS AS IDENTITY,
  event_id        uuid        NOT NULL,
  position        text        NOT NULL,
  stream_id       text        NOT NULL,
  stream_version  bigint      NOT NULL,
  event_type      text        NOT NULL,
  recorded_at     timestamptz NOT NULL,
  body            text        NOT NULL,
  state           text        NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'parked')),
  attempts        integer     NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_status     integer,
  last_error      text,
  parked_at       timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (endpoint_id, seq),
  CONSTRAINT webhook_deliveries_event_key UNIQUE (endpoint_id, event_id)
);
CREATE TABLE {s}.webhook_attempts (
  endpoint_id  text        NOT NULL
               REFERENCES {s}.webhook_endpoints (id) ON DELETE CASCADE,
  seq          bigint      GENERATED ALWAYS AS IDENTITY,
  event_id     uuid        NOT NULL,
  attempt      integer     NOT NULL,
  attempted_at timestamptz NOT NULL,
  duration_ms  integer     NOT NULL,
  status       integer,
  outcome      text        NOT NULL,
  error        text,
  PRIMARY KEY (endpoint_id, seq)
);
)sql"},
};

}  // namespace

absl::Status WebhookStore::Migrate(PgPool& pool, absl::string_view schema) {
  return ApplyMigrations(pool, schema, kComponent, kMigrations);
}

absl::StatusOr<std::unique_ptr<WebhookStore>> WebhookStore::Create(
    PgPool* pool, std::string schema, WebhookStoreOptions options) {
  RETURN_IF_ERROR(ValidateSchemaName(schema));
  if (options.publication == nullptr || options.events == nullptr) {
    return absl::InvalidArgumentError(
        "WebhookStore needs the publication and the event store");
  }
  ASSIGN_OR_RETURN(int version, MigratedVersion(*pool, schema, kComponent));
  if (version < kMigrations[std::size(kMigrations) - 1].version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "schema '", schema, "' has no webhook tables: run migrate"));
  }
  return std::unique_ptr<WebhookStore>(
      new WebhookStore(pool, std::move(schema), std::move(options)));
}

WebhookStore::WebhookStore(PgPool* pool, std::string schema,
                           WebhookStoreOptions options)
    : pool_(pool), schema_(std::move(schema)), options_(std::move(options)) {}

}  // namespace cqrs::integration

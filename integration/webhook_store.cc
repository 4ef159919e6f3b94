#include "integration/webhook_store.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include <pqxx/pqxx>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "framework/auth/crypto.h"
#include "framework/error_code.h"
#include "framework/json_writer.h"
#include "framework/migrations.h"
#include "framework/status_macros.h"
#include "integration/webhook_signature.h"

namespace cqrs::integration {
namespace {

constexpr char kComponent[] = "webhooks";

bool EndpointExists(pqxx::transaction_base& tx, const std::string& schema,
                    absl::string_view id) {
  return !tx.exec_params(absl::StrCat("SELECT 1 FROM ", schema,
                                      ".webhook_endpoints WHERE id = $1"),
                         std::string(id))
              .empty();
}

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

constexpr size_t kIdBytes = 8;  // 16 hex digits
constexpr int kMaxListLimit = 1000;

// Types and categories are stored as text[] and travel as "a,b": both are
// checked to be words without commas before they are stored. Times travel
// as microseconds since the epoch.
constexpr char kColumns[] =
    "id, url, array_to_string(types, ','), "
    "array_to_string(categories, ','), description, enabled, "
    "coalesce(disabled_reason, ''), "
    "(extract(epoch FROM disabled_at) * 1000000)::bigint, "
    "(extract(epoch FROM failing_since) * 1000000)::bigint, "
    "cursor, revision, "
    "(extract(epoch FROM created_at) * 1000000)::bigint, "
    "(extract(epoch FROM updated_at) * 1000000)::bigint, "
    "secret, coalesce(previous_secret, ''), "
    "(extract(epoch FROM previous_secret_until) * 1000000)::bigint";

std::optional<absl::Time> TimeOf(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return absl::FromUnixMicros(f.as<int64_t>());
}

std::vector<std::string> SplitList(const pqxx::field& f) {
  return absl::StrSplit(f.as<std::string>(), ',', absl::SkipEmpty());
}

std::string ArrayLiteral(const std::vector<std::string>& words) {
  return absl::StrCat("{", absl::StrJoin(words, ","), "}");
}

WebhookEndpoint EndpointOf(const pqxx::row& r) {
  WebhookEndpoint e;
  e.id = r[0].as<std::string>();
  e.url = r[1].as<std::string>();
  e.types = SplitList(r[2]);
  e.categories = SplitList(r[3]);
  e.description = r[4].as<std::string>();
  e.enabled = r[5].as<bool>();
  e.disabled_reason = r[6].as<std::string>();
  e.disabled_at = TimeOf(r[7]);
  e.failing_since = TimeOf(r[8]);
  // A damaged cursor reads as the start: replaying is safer than skipping.
  e.cursor = eventstore::Position::FromToken(r[9].as<std::string>())
                 .value_or(eventstore::Position::Start());
  e.revision = r[10].as<int64_t>();
  e.created_at = *TimeOf(r[11]);
  e.updated_at = *TimeOf(r[12]);
  e.secret = r[13].as<std::string>();
  e.previous_secret = r[14].as<std::string>();
  e.previous_secret_until = TimeOf(r[15]);
  return e;
}

absl::Status NotFound(absl::string_view id) {
  return WithErrorCode(
      absl::NotFoundError(absl::StrCat("no webhook endpoint '", id, "'")),
      "webhook_not_found");
}

bool IsWord(absl::string_view s) {
  return !s.empty() && s.size() <= 64 &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return absl::ascii_islower(c) || absl::ascii_isdigit(c) ||
                  c == '_' || c == '-';
         });
}

absl::Status CheckLimit(int limit) {
  if (limit < 1 || limit > kMaxListLimit) {
    return InvalidRequest(
        absl::StrCat("limit must be from 1 to ", kMaxListLimit));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckWebhookUrlSyntax(absl::string_view url) {
  if (url.size() > kMaxWebhookUrl) {
    return InvalidRequest(absl::StrCat("field \"url\" must be at most ",
                                       kMaxWebhookUrl, " bytes"));
  }
  for (char c : url) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) {
      return InvalidRequest(
          "field \"url\" must not contain spaces or control characters");
    }
  }
  absl::string_view rest = url;
  const std::string lower = absl::AsciiStrToLower(url.substr(0, 8));
  if (absl::StartsWith(lower, "https://")) {
    rest.remove_prefix(8);
  } else if (absl::StartsWith(lower, "http://")) {
    rest.remove_prefix(7);
  } else {
    return InvalidRequest("field \"url\" must be an http:// or https:// URL");
  }
  const absl::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (absl::StrContains(authority, '@')) {
    return InvalidRequest(
        "field \"url\" must not carry user information (user:password@)");
  }
  absl::string_view host = authority;
  if (absl::StartsWith(host, "[")) {  // IPv6 literal
    const size_t close = host.find(']');
    host = close == absl::string_view::npos ? absl::string_view()
                                            : host.substr(1, close - 1);
  } else {
    host = host.substr(0, host.find(':'));
  }
  if (host.empty()) return InvalidRequest("field \"url\" must name a host");
  return absl::OkStatus();
}

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

absl::Status WebhookStore::Validate(const WebhookEndpointPatch& patch) const {
  if (patch.url.has_value()) {
    RETURN_IF_ERROR(CheckWebhookUrlSyntax(*patch.url));
    if (options_.check_url) {
      absl::Status checked = options_.check_url(*patch.url);
      // Whatever the check says (a private address, a name that does not
      // resolve), it is about the caller's input.
      if (!checked.ok()) {
        return absl::IsInvalidArgument(checked) && !ErrorCodeOf(checked).empty()
                   ? checked
                   : InvalidRequest(
                         absl::StrCat("field \"url\": ", checked.message()));
      }
    }
  }
  if (patch.types.has_value()) {
    if (patch.types->size() > kMaxWebhookFilters) {
      return InvalidRequest(absl::StrCat("field \"types\" must have at most ",
                                         kMaxWebhookFilters, " entries"));
    }
    for (const std::string& type : *patch.types) {
      bool published =
          options_.publication->FindCloudEventType(type) != nullptr;
      for (const PublishedType& t : options_.publication->types()) {
        if (t.public_type == type) published = true;
      }
      if (!published) {
        return InvalidRequest(absl::StrCat(
            "field \"types\": '", type,
            "' is not a published event type: <public type>.v<n>, or the "
            "public type alone for every version"));
      }
    }
  }
  if (patch.categories.has_value()) {
    if (patch.categories->size() > kMaxWebhookFilters) {
      return InvalidRequest(
          absl::StrCat("field \"categories\" must have at most ",
                       kMaxWebhookFilters, " entries"));
    }
    for (const std::string& category : *patch.categories) {
      if (!IsWord(category)) {
        return InvalidRequest(
            absl::StrCat("field \"categories\": '", category,
                         "' is not a category (1 to 64 of a-z, 0-9, _ and -)"));
      }
    }
  }
  if (patch.description.has_value()) {
    if (patch.description->size() > kMaxWebhookDescription) {
      return InvalidRequest(
          absl::StrCat("field \"description\" must be at most ",
                       kMaxWebhookDescription, " bytes"));
    }
    if (absl::StrContains(*patch.description, '\0')) {
      return InvalidRequest("field \"description\" must not contain NUL");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<NewWebhook> WebhookStore::Add(WebhookEndpointInput input) {
  WebhookEndpointPatch all;
  all.url = input.url;
  all.types = input.types;
  all.categories = input.categories;
  all.description = input.description;
  RETURN_IF_ERROR(Validate(all));
  ASSIGN_OR_RETURN(std::string hex, auth::RandomHex(kIdBytes));
  const std::string id = absl::StrCat("wh_", hex);
  ASSIGN_OR_RETURN(std::string secret, NewWebhookSecret());
  ASSIGN_OR_RETURN(eventstore::Position head, options_.events->HeadPosition());
  NewWebhook out;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
        pqxx::nontransaction tx(conn);
        out.endpoint = EndpointOf(tx.exec_params1(
            absl::StrCat("INSERT INTO ", schema_,
                         ".webhook_endpoints (id, url, types, categories, "
                         "description, secret, cursor) VALUES ($1, $2, "
                         "$3::text[], $4::text[], $5, $6, $7) RETURNING ",
                         kColumns),
            id, input.url, ArrayLiteral(input.types),
            ArrayLiteral(input.categories), input.description, secret,
            head.ToToken()));
        return absl::OkStatus();
      }));
  out.secret = out.endpoint.secret;
  return out;
}

absl::StatusOr<std::vector<WebhookEndpoint>> WebhookStore::List() {
  std::vector<WebhookEndpoint> all;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection,
      [&](pqxx::connection& conn) -> absl::Status {
        all.clear();
        pqxx::nontransaction tx(conn);
        for (const pqxx::row& r :
             tx.exec(absl::StrCat("SELECT ", kColumns, " FROM ", schema_,
                                  ".webhook_endpoints ORDER BY created_at, "
                                  "id"))) {
          all.push_back(EndpointOf(r));
        }
        return absl::OkStatus();
      }));
  return all;
}

absl::StatusOr<WebhookEndpoint> WebhookStore::Get(absl::string_view id) {
  std::optional<WebhookEndpoint> found;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection,
      [&](pqxx::connection& conn) -> absl::Status {
        pqxx::nontransaction tx(conn);
        const pqxx::result rows =
            tx.exec_params(absl::StrCat("SELECT ", kColumns, " FROM ", schema_,
                                        ".webhook_endpoints WHERE id = $1"),
                           std::string(id));
        if (!rows.empty()) found = EndpointOf(rows[0]);
        return absl::OkStatus();
      }));
  if (!found.has_value()) return NotFound(id);
  return *std::move(found);
}

absl::StatusOr<WebhookStats> WebhookStore::Stats(absl::string_view id) {
  std::optional<WebhookStats> stats;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection,
      [&](pqxx::connection& conn) -> absl::Status {
        pqxx::nontransaction tx(conn);
        const pqxx::result rows = tx.exec_params(
            absl::StrCat(
                "SELECT e.delivered, e.failed_attempts, "
                "(extract(epoch FROM e.last_success_at) * 1000000)::bigint, "
                "(extract(epoch FROM e.last_failure_at) * 1000000)::bigint, "
                "d.pending, d.parked, "
                "(extract(epoch FROM d.oldest) * 1000000)::bigint FROM ",
                schema_,
                ".webhook_endpoints e CROSS JOIN LATERAL (SELECT "
                "count(*) FILTER (WHERE state = 'pending') AS pending, "
                "count(*) FILTER (WHERE state = 'parked') AS parked, "
                "min(recorded_at) FILTER (WHERE state = 'pending') AS oldest "
                "FROM ",
                schema_,
                ".webhook_deliveries WHERE endpoint_id = e.id) d "
                "WHERE e.id = $1"),
            std::string(id));
        if (rows.empty()) return absl::OkStatus();
        const pqxx::row& r = rows[0];
        WebhookStats s;
        s.delivered = r[0].as<int64_t>();
        s.failed_attempts = r[1].as<int64_t>();
        s.last_success_at = TimeOf(r[2]);
        s.last_failure_at = TimeOf(r[3]);
        s.pending = r[4].as<int64_t>();
        s.parked = r[5].as<int64_t>();
        s.oldest_pending_at = TimeOf(r[6]);
        stats = s;
        return absl::OkStatus();
      }));
  if (!stats.has_value()) return NotFound(id);
  return *stats;
}

absl::StatusOr<WebhookEndpoint> WebhookStore::Change(
    absl::string_view id, absl::string_view set,
    const std::vector<std::optional<std::string>>& params) {
  std::optional<WebhookEndpoint> changed;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
        pqxx::nontransaction tx(conn);
        const std::string sql = absl::StrCat(
            "UPDATE ", schema_, ".webhook_endpoints SET ", set,
            ", revision = revision + 1, updated_at = now() WHERE id = $1 "
            "RETURNING ",
            kColumns);
        pqxx::result rows;
        switch (params.size()) {
          case 0:
            rows = tx.exec_params(sql, std::string(id));
            break;
          case 1:
            rows = tx.exec_params(sql, std::string(id), params[0]);
            break;
          case 2:
            rows = tx.exec_params(sql, std::string(id), params[0], params[1]);
            break;
          case 4:
            rows = tx.exec_params(sql, std::string(id), params[0], params[1],
                                  params[2], params[3]);
            break;
          default:
            return absl::InternalError("unexpected parameter count");
        }
        if (!rows.empty()) changed = EndpointOf(rows[0]);
        return absl::OkStatus();
      }));
  if (!changed.has_value()) return NotFound(id);
  return *std::move(changed);
}

absl::StatusOr<WebhookEndpoint> WebhookStore::Update(
    absl::string_view id, WebhookEndpointPatch patch) {
  RETURN_IF_ERROR(Validate(patch));
  std::optional<std::string> types;
  if (patch.types.has_value()) types = ArrayLiteral(*patch.types);
  std::optional<std::string> categories;
  if (patch.categories.has_value()) {
    categories = ArrayLiteral(*patch.categories);
  }
  return Change(id,
                "url = coalesce($2, url), "
                "types = coalesce($3::text[], types), "
                "categories = coalesce($4::text[], categories), "
                "description = coalesce($5, description)",
                {patch.url, types, categories, patch.description});
}

absl::Status WebhookStore::Delete(absl::string_view id) {
  bool found = false;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
        pqxx::nontransaction tx(conn);
        found = !tx.exec_params(absl::StrCat("DELETE FROM ", schema_,
                                             ".webhook_endpoints WHERE id = "
                                             "$1 RETURNING id"),
                                std::string(id))
                     .empty();
        return absl::OkStatus();
      }));
  if (!found) return NotFound(id);
  return absl::OkStatus();
}

absl::StatusOr<WebhookEndpoint> WebhookStore::Disable(
    absl::string_view id, absl::string_view reason) {
  if (reason != "manual" && reason != "gone" && reason != "failing") {
    return InvalidRequest(absl::StrCat("unknown reason '", reason,
                                       "' (manual, gone or failing)"));
  }
  // An endpoint disabled already keeps the time it stopped.
  return Change(id,
                "disabled_at = CASE WHEN enabled THEN now() ELSE "
                "disabled_at END, enabled = false, disabled_reason = $2",
                {std::string(reason)});
}

absl::StatusOr<WebhookEndpoint> WebhookStore::Enable(absl::string_view id) {
  return Change(id,
                "enabled = true, disabled_reason = NULL, disabled_at = NULL, "
                "failing_since = NULL",
                {});
}

absl::StatusOr<NewWebhook> WebhookStore::RotateSecret(absl::string_view id) {
  ASSIGN_OR_RETURN(std::string secret, NewWebhookSecret());
  NewWebhook out;
  ASSIGN_OR_RETURN(
      out.endpoint,
      Change(id,
             "previous_secret = secret, previous_secret_until = now() + "
             "$3::int8 * interval '1 microsecond', secret = $2",
             {secret, std::to_string(absl::ToInt64Microseconds(
                          options_.rotation_grace))}));
  out.secret = out.endpoint.secret;
  return out;
}

absl::StatusOr<std::vector<WebhookAttempt>> WebhookStore::Attempts(
    absl::string_view id, int limit) {
  RETURN_IF_ERROR(CheckLimit(limit));
  bool found = false;
  std::vector<WebhookAttempt> attempts;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection,
      [&](pqxx::connection& conn) -> absl::Status {
        attempts.clear();
        pqxx::read_transaction tx(conn);
        found = EndpointExists(tx, schema_, id);
        if (!found) return absl::OkStatus();
        for (const pqxx::row& r : tx.exec_params(
                 absl::StrCat(
                     "SELECT event_id::text, attempt, "
                     "(extract(epoch FROM attempted_at) * 1000000)::bigint, "
                     "duration_ms, coalesce(status, 0), outcome, "
                     "coalesce(error, '') FROM ",
                     schema_,
                     ".webhook_attempts WHERE endpoint_id = $1 "
                     "ORDER BY seq DESC LIMIT $2"),
                 std::string(id), limit)) {
          WebhookAttempt a;
          a.event_id = r[0].as<std::string>();
          a.attempt = r[1].as<int>();
          a.at = *TimeOf(r[2]);
          a.duration = absl::Milliseconds(r[3].as<int64_t>());
          a.status = r[4].as<int>();
          a.outcome = r[5].as<std::string>();
          a.error = r[6].as<std::string>();
          attempts.push_back(std::move(a));
        }
        return absl::OkStatus();
      }));
  if (!found) return NotFound(id);
  return attempts;
}

absl::StatusOr<WebhookEndpoint> WebhookStore::Replay(
    absl::string_view id, eventstore::Position after) {
  ASSIGN_OR_RETURN(eventstore::Position head, options_.events->HeadPosition());
  if (head < after) {
    return InvalidRequest(absl::StrCat("position ", after.ToToken(),
                                       " is beyond the head of the log (",
                                       head.ToToken(), ")"));
  }
  return Change(id, "cursor = $2", {after.ToToken()});
}

absl::StatusOr<WebhookEndpoint> WebhookStore::ReplayFrom(absl::string_view id,
                                                         absl::Time time) {
  ASSIGN_OR_RETURN(eventstore::Position before,
                   options_.events->PositionBefore(time));
  ASSIGN_OR_RETURN(eventstore::Position head, options_.events->HeadPosition());
  // An event whose transaction still ends later than some running one is
  // beyond the head: the head is just before it as far as readers go.
  return Change(id, "cursor = $2", {std::min(before, head).ToToken()});
}

absl::StatusOr<std::vector<ParkedDelivery>> WebhookStore::Parked(
    absl::string_view id, int limit) {
  RETURN_IF_ERROR(CheckLimit(limit));
  bool found = false;
  std::vector<ParkedDelivery> parked;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kOnBrokenConnection,
      [&](pqxx::connection& conn) -> absl::Status {
        parked.clear();
        pqxx::read_transaction tx(conn);
        found = EndpointExists(tx, schema_, id);
        if (!found) return absl::OkStatus();
        // Stream order within each stream (a replay can queue an older
        // event after a newer one).
        for (const pqxx::row& r : tx.exec_params(
                 absl::StrCat(
                     "SELECT event_id::text, event_type, stream_id, "
                     "stream_version, position, attempts, "
                     "coalesce(last_status, 0), coalesce(last_error, ''), "
                     "(extract(epoch FROM coalesce(parked_at, created_at)) "
                     "* 1000000)::bigint FROM ",
                     schema_,
                     ".webhook_deliveries WHERE endpoint_id = $1 AND state = "
                     "'parked' ORDER BY min(seq) OVER (PARTITION BY "
                     "stream_id), "
                     "stream_version LIMIT $2"),
                 std::string(id), limit)) {
          ParkedDelivery p;
          p.event_id = r[0].as<std::string>();
          p.type = r[1].as<std::string>();
          p.stream_id = r[2].as<std::string>();
          p.stream_version = r[3].as<int64_t>();
          p.position = eventstore::Position::FromToken(r[4].as<std::string>())
                           .value_or(eventstore::Position::Start());
          p.attempts = r[5].as<int>();
          p.last_status = r[6].as<int>();
          p.last_error = r[7].as<std::string>();
          p.parked_at = *TimeOf(r[8]);
          parked.push_back(std::move(p));
        }
        return absl::OkStatus();
      }));
  if (!found) return NotFound(id);
  return parked;
}

absl::StatusOr<int64_t> WebhookStore::ChangeParked(
    absl::string_view id, absl::string_view statement) {
  bool found = false;
  int64_t changed = 0;
  RETURN_IF_ERROR(pool_->Run(
      PgPool::Retry::kNever, [&](pqxx::connection& conn) -> absl::Status {
        pqxx::work tx(conn);
        // The endpoint's row first: it is locked until the commit, so the
        // count and the revision go together.
        found = !tx.exec_params(absl::StrCat("UPDATE ", schema_,
                                             ".webhook_endpoints SET revision "
                                             "= revision + 1, updated_at = "
                                             "now() WHERE id = $1 RETURNING "
                                             "id"),
                                std::string(id))
                     .empty();
        if (!found) return absl::OkStatus();
        changed = static_cast<int64_t>(
            tx.exec_params(absl::StrCat(statement, " AND endpoint_id = $1"),
                           std::string(id))
                .affected_rows());
        tx.commit();
        return absl::OkStatus();
      }));
  if (!found) return NotFound(id);
  return changed;
}

absl::StatusOr<int64_t> WebhookStore::ReplayParked(absl::string_view id) {
  return ChangeParked(
      id, absl::StrCat("UPDATE ", schema_,
                       ".webhook_deliveries SET state = 'pending', attempts = "
                       "0, next_attempt_at = now(), parked_at = NULL WHERE "
                       "state = 'parked'"));
}

absl::StatusOr<int64_t> WebhookStore::SkipParked(absl::string_view id) {
  return ChangeParked(id, absl::StrCat("DELETE FROM ", schema_,
                                       ".webhook_deliveries WHERE state = "
                                       "'parked'"));
}

namespace {

void WriteString(JsonWriter& w, absl::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

void WriteStringOrNull(JsonWriter& w, absl::string_view s) {
  if (s.empty()) {
    w.Null();
  } else {
    WriteString(w, s);
  }
}

void WriteTime(JsonWriter& w, const std::optional<absl::Time>& t) {
  if (!t.has_value()) {
    w.Null();
    return;
  }
  WriteString(
      w, absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", *t, absl::UTCTimeZone()));
}

void WriteStrings(JsonWriter& w, const std::vector<std::string>& items) {
  w.StartArray();
  for (const std::string& s : items) WriteString(w, s);
  w.EndArray();
}

void WriteStats(JsonWriter& w, const WebhookStats& s) {
  w.StartObject();
  w.Key("pending");
  w.Int64(s.pending);
  w.Key("parked");
  w.Int64(s.parked);
  w.Key("delivered");
  w.Int64(s.delivered);
  w.Key("failed_attempts");
  w.Int64(s.failed_attempts);
  w.Key("last_success_at");
  WriteTime(w, s.last_success_at);
  w.Key("last_failure_at");
  WriteTime(w, s.last_failure_at);
  w.Key("oldest_pending_at");
  WriteTime(w, s.oldest_pending_at);
  w.EndObject();
}

void WriteEndpoint(JsonWriter& w, const WebhookEndpoint& e,
                   const WebhookStats* stats, absl::string_view secret) {
  w.StartObject();
  w.Key("id");
  WriteString(w, e.id);
  w.Key("url");
  WriteString(w, e.url);
  w.Key("types");
  WriteStrings(w, e.types);
  w.Key("categories");
  WriteStrings(w, e.categories);
  w.Key("description");
  WriteString(w, e.description);
  w.Key("state");
  w.String(e.enabled ? "enabled" : "disabled");
  w.Key("disabled_reason");
  WriteStringOrNull(w, e.disabled_reason);
  w.Key("disabled_at");
  WriteTime(w, e.disabled_at);
  w.Key("failing_since");
  WriteTime(w, e.failing_since);
  w.Key("cursor");
  WriteString(w, e.cursor.ToToken());
  w.Key("created_at");
  WriteTime(w, e.created_at);
  w.Key("updated_at");
  WriteTime(w, e.updated_at);
  w.Key("previous_secret_expires_at");
  WriteTime(w,
            e.previous_secret.empty() ? std::nullopt : e.previous_secret_until);
  if (stats != nullptr) {
    w.Key("stats");
    WriteStats(w, *stats);
  }
  if (!secret.empty()) {
    w.Key("secret");
    WriteString(w, secret);
  }
  w.EndObject();
}

std::string TextOf(const JsonBuffer& buffer) {
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace

std::string WebhookEndpointJson(const WebhookEndpoint& endpoint,
                                const WebhookStats* stats,
                                absl::string_view secret) {
  JsonBuffer buffer;
  JsonWriter w(buffer);
  WriteEndpoint(w, endpoint, stats, secret);
  return TextOf(buffer);
}

std::string WebhookEndpointPageJson(
    const std::vector<WebhookEndpoint>& endpoints) {
  JsonBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("items");
  w.StartArray();
  for (const WebhookEndpoint& e : endpoints) WriteEndpoint(w, e, nullptr, "");
  w.EndArray();
  w.EndObject();
  return TextOf(buffer);
}

std::string WebhookAttemptsJson(const std::vector<WebhookAttempt>& attempts) {
  JsonBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("items");
  w.StartArray();
  for (const WebhookAttempt& a : attempts) {
    w.StartObject();
    w.Key("event_id");
    WriteString(w, a.event_id);
    w.Key("attempt");
    w.Int(a.attempt);
    w.Key("at");
    WriteTime(w, a.at);
    w.Key("duration_ms");
    w.Int64(absl::ToInt64Milliseconds(a.duration));
    w.Key("status");
    if (a.status == 0) {
      w.Null();
    } else {
      w.Int(a.status);
    }
    w.Key("outcome");
    WriteString(w, a.outcome);
    w.Key("error");
    WriteStringOrNull(w, a.error);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return TextOf(buffer);
}

std::string ParkedDeliveriesJson(const std::vector<ParkedDelivery>& parked) {
  JsonBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("items");
  w.StartArray();
  for (const ParkedDelivery& p : parked) {
    w.StartObject();
    w.Key("event_id");
    WriteString(w, p.event_id);
    w.Key("type");
    WriteString(w, p.type);
    w.Key("stream_id");
    WriteString(w, p.stream_id);
    w.Key("stream_version");
    w.Int64(p.stream_version);
    w.Key("position");
    WriteString(w, p.position.ToToken());
    w.Key("attempts");
    w.Int(p.attempts);
    w.Key("last_status");
    if (p.last_status == 0) {
      w.Null();
    } else {
      w.Int(p.last_status);
    }
    w.Key("last_error");
    WriteStringOrNull(w, p.last_error);
    w.Key("parked_at");
    WriteTime(w, p.parked_at);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return TextOf(buffer);
}

}  // namespace cqrs::integration

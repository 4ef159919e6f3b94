// Webhook endpoints: where an app pushes its published events
// (integration/cloud_events.h), kept in the app's schema, and the
// administration of their deliveries (what `APP webhooks ...` and the
// /webhooks routes do). The deliveries themselves are made by
// integration/webhook_deliverer.h, in the process that owns them.
//
//   ASSIGN_OR_RETURN(auto hooks, WebhookStore::Create(pool, "bank", options));
//   ASSIGN_OR_RETURN(NewWebhook made, hooks->Add({.url = "https://x/hook"}));
//   std::cout << made.secret;            // whsec_...; shown once
//
// An endpoint has a URL, filters (CloudEvents types — "<public>.v<n>", or
// the public name alone for every version — and categories; empty: all),
// a description, a signing secret (Standard Webhooks `whsec_<base64>`; the
// previous one also signs until previous_secret_until after a rotation), a
// state (enabled, or disabled with a reason: "manual", "gone" after a 410,
// "failing" after failing continuously too long) and a cursor: the events
// after it are not queued for it yet. A new endpoint starts at the head of
// the log: it gets the events committed after it was created; Replay()
// moves the cursor (back or forward).
//
// Every change made here bumps the endpoint's `revision`; the deliverer
// looks at the revisions every second, so a change takes effect in the
// owning process within a second.
//
// Tables (docs/webhooks.md): <schema>.webhook_endpoints,
// <schema>.webhook_deliveries (one row per event waiting for an endpoint:
// state pending or parked; a delivered event's row is deleted) and
// <schema>.webhook_attempts (the recent attempts of every endpoint).
//
// Thread-safety: thread-safe. `pool` and the options' pointers must outlive
// the store.
#ifndef INTEGRATION_WEBHOOK_STORE_H_
#define INTEGRATION_WEBHOOK_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "eventstore/event_store.h"
#include "eventstore/position.h"
#include "eventstore/postgres_event_store.h"
#include "framework/pg_pool.h"
#include "integration/cloud_events.h"

namespace cqrs::integration {

// Bounds of an endpoint's fields (400 invalid_request beyond them).
inline constexpr size_t kMaxWebhookUrl = 2048;
inline constexpr size_t kMaxWebhookDescription = 1000;
inline constexpr size_t kMaxWebhookFilters = 100;  // types, categories each

struct WebhookEndpoint {
  std::string id;  // "wh_" and 16 hex digits
  std::string url;
  std::vector<std::string> types;
  std::vector<std::string> categories;
  std::string description;
  bool enabled = true;
  std::string disabled_reason;  // "" when enabled; manual, gone, failing
  std::optional<absl::Time> disabled_at;
  // Since when every attempt failed (unset after a success).
  std::optional<absl::Time> failing_since;
  eventstore::Position cursor;
  int64_t revision = 0;
  absl::Time created_at;
  absl::Time updated_at;
  // The signing secrets; only the deliverer uses them, no JSON shows them
  // (but the one Add() and RotateSecret() return).
  std::string secret;
  std::string previous_secret;  // "" when none
  std::optional<absl::Time> previous_secret_until;
};

// What has happened to an endpoint's deliveries.
struct WebhookStats {
  int64_t pending = 0;  // waiting (for their turn, a retry, or enabling)
  int64_t parked = 0;   // failed every attempt; see ReplayParked()
  int64_t delivered = 0;
  int64_t failed_attempts = 0;
  std::optional<absl::Time> last_success_at;
  std::optional<absl::Time> last_failure_at;
  // Recorded time of the oldest pending event (its lag).
  std::optional<absl::Time> oldest_pending_at;
};

struct WebhookAttempt {
  std::string event_id;
  int attempt = 0;  // 1 for the first
  absl::Time at;
  absl::Duration duration;
  int status = 0;  // HTTP status; 0 when none came
  // success, http_error, timeout, connect_error, blocked, tls_error, error
  std::string outcome;
  std::string error;  // "" on success
};

struct ParkedDelivery {
  std::string event_id;
  std::string type;  // CloudEvents type
  std::string stream_id;
  int64_t stream_version = 0;
  eventstore::Position position;
  int attempts = 0;
  int last_status = 0;
  std::string last_error;
  absl::Time parked_at;
};

struct WebhookEndpointInput {
  std::string url;
  std::vector<std::string> types;
  std::vector<std::string> categories;
  std::string description;
};

// A change of an endpoint; unset members stay.
struct WebhookEndpointPatch {
  std::optional<std::string> url;
  std::optional<std::vector<std::string>> types;
  std::optional<std::vector<std::string>> categories;
  std::optional<std::string> description;
};

struct NewWebhook {
  WebhookEndpoint endpoint;
  std::string secret;  // == endpoint.secret
};

struct WebhookStoreOptions {
  // The app's published types: filters must name them. Required.
  const Publication* publication = nullptr;
  // The app's event store: the head for new endpoints, positions of times
  // for ReplayFrom() (PostgresEventStore::PositionBefore). Required.
  eventstore::PostgresEventStore* events = nullptr;
  // Checks a URL when an endpoint is added or changed (scheme, host,
  // resolved addresses: http::CheckUrl with the app's address policy),
  // after CheckWebhookUrlSyntax(); a failure is reported as invalid_request.
  // Unset: any URL CheckWebhookUrlSyntax() accepts.
  std::function<absl::Status(absl::string_view url)> check_url;
  // How long the previous secret keeps signing after RotateSecret().
  absl::Duration rotation_grace = absl::Hours(24);
};

// The endpoint as JSON: id, url, types, categories, description, state
// ("enabled" / "disabled"), disabled_reason, disabled_at, failing_since,
// cursor (position token), created_at, updated_at (RFC 3339 UTC, null when
// unset), previous_secret_expires_at, "stats" when `stats` is given, and
// "secret" last when `secret` is not empty.
std::string WebhookEndpointJson(const WebhookEndpoint& endpoint,
                                const WebhookStats* stats = nullptr,
                                absl::string_view secret = "");
// OK for an absolute http:// or https:// URL of at most kMaxWebhookUrl bytes
// with a host, without user information ("user:pass@"), spaces or control
// characters; otherwise kInvalidArgument (code invalid_request) saying
// why. The store checks every URL with it before options.check_url.
absl::Status CheckWebhookUrlSyntax(absl::string_view url);

// {"items": [WebhookEndpointJson(e) ...]}.
std::string WebhookEndpointPageJson(
    const std::vector<WebhookEndpoint>& endpoints);
// {"items": [{event_id, attempt, at, duration_ms, status, outcome, error}]}.
std::string WebhookAttemptsJson(const std::vector<WebhookAttempt>& attempts);
// {"items": [{event_id, type, stream_id, stream_version, position,
// attempts, last_status, last_error, parked_at}]}.
std::string ParkedDeliveriesJson(const std::vector<ParkedDelivery>& parked);

class WebhookStore {
 public:
  // Creates or upgrades the webhook tables in `schema` (idempotent).
  static absl::Status Migrate(PgPool& pool, absl::string_view schema);

  // kInvalidArgument without a publication or event store;
  // kFailedPrecondition when the schema is not migrated.
  static absl::StatusOr<std::unique_ptr<WebhookStore>> Create(
      PgPool* pool, std::string schema, WebhookStoreOptions options);

  // A new enabled endpoint with a new secret, its cursor at the head of
  // the log. kInvalidArgument (code invalid_request, nothing stored) for a
  // bad URL (check_url), a filter naming no published type or a malformed
  // category, more than kMaxWebhookFilters filters, or fields beyond their
  // bounds.
  absl::StatusOr<NewWebhook> Add(WebhookEndpointInput input);

  // Every endpoint, oldest first.
  absl::StatusOr<std::vector<WebhookEndpoint>> List();
  // kNotFound (code webhook_not_found) for an unknown id.
  absl::StatusOr<WebhookEndpoint> Get(absl::string_view id);
  absl::StatusOr<WebhookStats> Stats(absl::string_view id);

  // kNotFound as Get(); kInvalidArgument as Add(), nothing changed.
  absl::StatusOr<WebhookEndpoint> Update(absl::string_view id,
                                         WebhookEndpointPatch patch);
  // Deletes the endpoint and its deliveries and attempts. kNotFound.
  absl::Status Delete(absl::string_view id);

  // Disable() stops deliveries (those in flight finish); the events keep
  // their place: Enable() resumes where it stopped. `reason`: manual, gone
  // or failing (kInvalidArgument otherwise). Enable() also clears
  // failing_since. kNotFound.
  absl::StatusOr<WebhookEndpoint> Disable(absl::string_view id,
                                          absl::string_view reason = "manual");
  absl::StatusOr<WebhookEndpoint> Enable(absl::string_view id);

  // A new secret; the current one becomes the previous one and keeps
  // signing for rotation_grace. Returns the endpoint with its new secret.
  absl::StatusOr<NewWebhook> RotateSecret(absl::string_view id);

  // The newest `limit` (1..1000) attempts, newest first. kNotFound;
  // kInvalidArgument for a limit out of range.
  absl::StatusOr<std::vector<WebhookAttempt>> Attempts(absl::string_view id,
                                                       int limit);

  // Moves the cursor to `after` (events after it are queued again, also
  // those already delivered, with their original webhook-id) or, with
  // ReplayFrom(time), to just before the first event recorded at or after
  // `time` (the head when none was). Events already waiting are not queued
  // twice. kNotFound; kInvalidArgument (code invalid_request) for a
  // position beyond the head.
  absl::StatusOr<WebhookEndpoint> Replay(absl::string_view id,
                                         eventstore::Position after);
  absl::StatusOr<WebhookEndpoint> ReplayFrom(absl::string_view id,
                                             absl::Time time);

  // The parked deliveries, at most `limit` (1..1000): streams in the
  // order they were first queued, each in stream order. kNotFound;
  // kInvalidArgument as Attempts().
  absl::StatusOr<std::vector<ParkedDelivery>> Parked(absl::string_view id,
                                                     int limit);
  // Puts every parked delivery back in the queue with a fresh schedule
  // (they go in stream order, before the later events of their streams);
  // returns how many. kNotFound.
  absl::StatusOr<int64_t> ReplayParked(absl::string_view id);
  // Drops every parked delivery (never delivered); the later events of
  // their streams go on. Returns how many. kNotFound.
  absl::StatusOr<int64_t> SkipParked(absl::string_view id);

 private:
  WebhookStore(PgPool* pool, std::string schema, WebhookStoreOptions options);
  // InvalidRequest naming the first field of `patch` that is set and bad.
  absl::Status Validate(const WebhookEndpointPatch& patch) const;
  // UPDATE webhook_endpoints SET `set` (with $1 the id and $2.. `params`),
  // bumping the revision; the endpoint afterwards, or kNotFound.
  absl::StatusOr<WebhookEndpoint> Change(
      absl::string_view id, absl::string_view set,
      const std::vector<std::optional<std::string>>& params);
  // Runs `statement` (on webhook_deliveries, ending in a WHERE clause) for
  // the endpoint's rows, bumping its revision; the rows it touched.
  absl::StatusOr<int64_t> ChangeParked(absl::string_view id,
                                       absl::string_view statement);

  PgPool* const pool_;
  const std::string schema_;
  const WebhookStoreOptions options_;
};

}  // namespace cqrs::integration

#endif  // INTEGRATION_WEBHOOK_STORE_H_

// Published events: which stored event types leave the process, under which
// public name and version, and their CloudEvents 1.0 form (JSON structured
// mode) for the feed, Server-Sent Events, webhooks and brokers.
//
//   Publication pub("https://bank.example/");        // CloudEvents source
//   RETURN_IF_ERROR(pub.Add({.stored_type = "MoneyDeposited",
//                            .public_type = "bank.account.deposited"}));
//   ASSIGN_OR_RETURN(std::optional<std::string> ce, pub.Encode(recorded));
//   // {"specversion":"1.0","id":"<event id>","source":"https://bank.example/",
//   //  "type":"bank.account.deposited.v1","subject":"42", ...,"data":{...}}
//
// Only types added here are published: Encode() of any other is nullopt,
// so an internal event never leaves the process by accident. A public type
// can differ from the stored one (`to_public` maps the payload), so the
// internals can change without breaking consumers.
//
// The CloudEvent: `specversion` "1.0"; `id` the stored event id (the same on
// every read and replay: consumers de-duplicate on source + id); `source`;
// `type` "<public_type>.v<version>"; `subject` the aggregate id (the stream
// id without its "<category>-"); `time` the recorded time (RFC 3339 UTC);
// `datacontenttype` "application/json"; `data` the payload; extension
// attributes (lower-case letters and digits only, as CloudEvents requires)
// `position` (the position token commands return and the feed resumes
// from), `streamversion`, `category`, and `correlationid` / `causationid`
// when the event's metadata has them.
//
// Thread-safety: Add() before use; then const methods from any thread.
#ifndef INTEGRATION_CLOUD_EVENTS_H_
#define INTEGRATION_CLOUD_EVENTS_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "eventstore/event_store.h"

namespace cqrs::integration {

struct PublishedType {
  // The event type as stored.
  std::string stored_type;
  // The public name: lower-case words separated by '.', e.g.
  // "bank.account.opened".
  std::string public_type;
  int version = 1;
  // The public payload (a JSON object) of a stored event; unset: the stored
  // data as it is. An error fails the read that meets the event.
  std::function<absl::StatusOr<std::string>(const eventstore::RecordedEvent&)>
      to_public;
  // The payload's JSON Schema, for the AsyncAPI document; may be empty.
  std::string data_schema;

  // "<public_type>.v<version>": the CloudEvents type.
  std::string CloudEventType() const;
};

class Publication {
 public:
  // `source` is the CloudEvents source of every event: a URI reference
  // (e.g. "https://bank.example/" or "/bank"), 1..200 printable ASCII
  // characters without spaces. Checked by Add() through status().
  explicit Publication(std::string source);

  // kInvalidArgument for an empty stored type, a public type that is not
  // lower-case words separated by '.', a version below 1, or a bad source;
  // kAlreadyExists for a stored type or CloudEvents type added twice.
  absl::Status Add(PublishedType type);

  // The published type of a stored event type, or nullptr.
  const PublishedType* Find(absl::string_view stored_type) const;
  // The published type with CloudEvents type `cloud_event_type`, or
  // nullptr.
  const PublishedType* FindCloudEventType(
      absl::string_view cloud_event_type) const;
  const std::vector<PublishedType>& types() const { return types_; }
  const std::string& source() const { return source_; }

  // The CloudEvent JSON of `event`; nullopt when its type is not published.
  // Errors: kInvalidArgument when to_public fails or its result (or the
  // stored data) is not a JSON object.
  absl::StatusOr<std::optional<std::string>> Encode(
      const eventstore::RecordedEvent& event) const;

 private:
  std::string source_;
  std::vector<PublishedType> types_;
  std::vector<std::string> cloud_event_types_;  // of types_[i]
  absl::flat_hash_map<std::string, size_t> by_stored_type_;
  absl::flat_hash_map<std::string, size_t> by_cloud_event_type_;
};

// The aggregate id of a stream: the part after the first '-' ("account-42"
// -> "42"); the whole id when it has none.
absl::string_view SubjectOf(absl::string_view stream_id);

}  // namespace cqrs::integration

#endif  // INTEGRATION_CLOUD_EVENTS_H_

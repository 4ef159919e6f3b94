#include "eventstore/event_store.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "eventstore/internal/validation.h"
#include "framework/json.h"
#include "framework/uuid.h"

namespace cqrs::eventstore {
bool ExpectedVersion::IsSatisfiedBy(int64_t current) const {
  switch (kind_) {
    case Kind::kAny:
      return true;
    case Kind::kNoStream:
      return current == 0;
    case Kind::kStreamExists:
      return current > 0;
    case Kind::kExactly:
      return current == version_;
  }
  return false;
}

std::string ExpectedVersion::ToString() const {
  switch (kind_) {
    case Kind::kAny:
      return "any";
    case Kind::kNoStream:
      return "no stream";
    case Kind::kStreamExists:
      return "stream exists";
    case Kind::kExactly:
      return absl::StrCat("exactly ", version_);
  }
  return "?";
}

std::optional<int64_t> ConflictActualVersion(const absl::Status& status) {
  if (!absl::IsAborted(status)) return std::nullopt;
  auto payload = status.GetPayload(eventstore_internal::kActualVersionPayload);
  if (!payload.has_value()) return std::nullopt;
  int64_t version = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &version)) return std::nullopt;
  return version;
}

bool IsDeletedStream(const absl::Status& status) {
  return absl::IsNotFound(status) &&
         status.GetPayload(eventstore_internal::kDeletedStreamPayload)
             .has_value();
}

bool MustRetryTransaction(const absl::Status& status) {
  return absl::IsAborted(status) &&
         status.GetPayload(eventstore_internal::kRetryTransactionPayload)
             .has_value();
}

absl::string_view CategoryOf(absl::string_view stream_id) {
  return stream_id.substr(0, stream_id.find('-'));
}

}  // namespace cqrs::eventstore

namespace cqrs::eventstore_internal {

using eventstore::ExpectedVersion;
using eventstore::NewEvent;

absl::Status ValidateStreamId(absl::string_view stream_id) {
  if (stream_id.empty() || stream_id.size() > eventstore::kMaxStreamIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("stream id must be 1 to ", eventstore::kMaxStreamIdLength,
                     " characters, got ", stream_id.size()));
  }
  for (unsigned char c : stream_id) {
    if (c < 0x20 || c == 0x7F) {
      return absl::InvalidArgumentError(
          "stream id must not contain control characters");
    }
  }
  if (!IsValidUtf8(stream_id)) {
    return absl::InvalidArgumentError("stream id must be valid UTF-8");
  }
  return absl::OkStatus();
}

absl::Status ValidateExpectedVersion(const ExpectedVersion& expected) {
  if (expected.kind() == ExpectedVersion::Kind::kExactly &&
      expected.version() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected version must not be negative, got ", expected.version()));
  }
  return absl::OkStatus();
}

absl::Status ValidateLimit(int limit) {
  if (limit < 1 || limit > eventstore::kMaxReadLimit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "limit must be 1 to ", eventstore::kMaxReadLimit, ", got ", limit));
  }
  return absl::OkStatus();
}

absl::Status ValidateAppend(absl::string_view stream_id,
                            std::vector<NewEvent>& events) {
  if (absl::Status s = ValidateStreamId(stream_id); !s.ok()) return s;
  if (events.empty() || events.size() > eventstore::kMaxEventsPerAppend) {
    return absl::InvalidArgumentError(
        absl::StrCat("an append takes 1 to ", eventstore::kMaxEventsPerAppend,
                     " events, got ", events.size()));
  }
  size_t bytes = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    NewEvent& e = events[i];
    auto bad = [i](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("event ", i, ": ", what));
    };
    if (e.event_id.empty()) {
      e.event_id = NewUuid();
    } else if (!IsUuid(e.event_id)) {
      return bad("event id must be a UUID (8-4-4-4-12 hex digits)");
    }
    if (e.event_type.empty() ||
        e.event_type.size() > eventstore::kMaxEventTypeLength) {
      return bad(absl::StrCat("event type must be 1 to ",
                              eventstore::kMaxEventTypeLength, " characters"));
    }
    for (unsigned char c : e.event_type) {
      if (c < 0x20 || c == 0x7F) {
        return bad("event type must not contain control characters");
      }
    }
    if (!IsValidUtf8(e.event_type)) return bad("event type must be UTF-8");
    if (e.schema_version < 1) return bad("schema version must be at least 1");
    bytes += e.data.size() + e.metadata.size() + e.event_type.size();
    if (bytes > eventstore::kMaxAppendBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("an append takes at most ", eventstore::kMaxAppendBytes,
                       " bytes of event data"));
    }
    if (!IsJsonObject(e.data)) return bad("data must be a JSON object");
    if (!IsJsonObject(e.metadata)) return bad("metadata must be a JSON object");
  }
  // Ids must be unique within the call too; compare case-insensitively, as
  // UUIDs are.
  for (NewEvent& e : events) {
    for (char& c : e.event_id) {
      if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
    }
  }
  absl::flat_hash_set<absl::string_view> seen;
  seen.reserve(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    if (!seen.insert(events[i].event_id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("event ", i, ": duplicate event id in one append"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSnapshot(const eventstore::Snapshot& snapshot) {
  if (absl::Status s = ValidateStreamId(snapshot.stream_id); !s.ok()) return s;
  if (snapshot.stream_version < 1) {
    return absl::InvalidArgumentError("snapshot stream version must be >= 1");
  }
  if (snapshot.schema_version < 1) {
    return absl::InvalidArgumentError("snapshot schema version must be >= 1");
  }
  if (!IsJsonObject(snapshot.state)) {
    return absl::InvalidArgumentError("snapshot state must be a JSON object");
  }
  return absl::OkStatus();
}

absl::Status VersionConflict(absl::string_view stream_id,
                             const ExpectedVersion& expected, int64_t actual) {
  absl::Status status = absl::AbortedError(
      absl::StrCat("version conflict on stream '", stream_id, "': expected ",
                   expected.ToString(), ", actual version ", actual));
  status.SetPayload(kActualVersionPayload, absl::Cord(absl::StrCat(actual)));
  return status;
}

absl::Status RetryTransaction(absl::string_view message) {
  absl::Status status = absl::AbortedError(message);
  status.SetPayload(kRetryTransactionPayload, absl::Cord("1"));
  return status;
}

absl::Status StreamNotFound(absl::string_view stream_id) {
  return absl::NotFoundError(
      absl::StrCat("stream '", stream_id, "' not found"));
}

absl::Status DeletedStreamNotFound(absl::string_view stream_id) {
  absl::Status status = absl::NotFoundError(
      absl::StrCat("stream '", stream_id, "' not found (it was deleted)"));
  status.SetPayload(kDeletedStreamPayload, absl::Cord("1"));
  return status;
}

absl::Status NoSnapshot(absl::string_view stream_id) {
  return absl::NotFoundError(
      absl::StrCat("no snapshot for stream '", stream_id, "'"));
}

absl::Status StreamDeleted(absl::string_view stream_id) {
  return absl::FailedPreconditionError(
      absl::StrCat("stream '", stream_id, "' was deleted"));
}

absl::Status EventIdConflict(absl::string_view event_id) {
  return absl::AlreadyExistsError(absl::StrCat(
      "event id ", event_id,
      " is already stored, and the call is not an exact retry of the append "
      "that stored it"));
}

}  // namespace cqrs::eventstore_internal

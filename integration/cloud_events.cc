#include "integration/cloud_events.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::integration {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void String(Writer& w, absl::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

bool IsPublicType(absl::string_view type) {
  if (type.empty() || type.size() > 200) return false;
  for (absl::string_view word : absl::StrSplit(type, '.')) {
    if (word.empty()) return false;
    for (char c : word) {
      if (!absl::ascii_islower(static_cast<unsigned char>(c)) &&
          !absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '_' &&
          c != '-') {
        return false;
      }
    }
  }
  return true;
}

bool IsSource(absl::string_view source) {
  if (source.empty() || source.size() > 200) return false;
  for (char c : source) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

// A string member of the metadata object, or empty.
absl::string_view Member(const rapidjson::Document& doc, const char* name) {
  if (!doc.IsObject()) return {};
  auto it = doc.FindMember(name);
  if (it == doc.MemberEnd() || !it->value.IsString()) return {};
  return absl::string_view(it->value.GetString(), it->value.GetStringLength());
}

}  // namespace

std::string PublishedType::CloudEventType() const {
  return absl::StrCat(public_type, ".v", version);
}

absl::string_view SubjectOf(absl::string_view stream_id) {
  const size_t dash = stream_id.find('-');
  return dash == absl::string_view::npos ? stream_id
                                         : stream_id.substr(dash + 1);
}

Publication::Publication(std::string source) : source_(std::move(source)) {}

absl::Status Publication::Add(PublishedType type) {
  if (!IsSource(source_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CloudEvents source must be a URI reference of 1..200 printable "
        "characters without spaces, not '",
        source_, "'"));
  }
  if (type.stored_type.empty()) {
    return absl::InvalidArgumentError("a published type needs its stored type");
  }
  if (!IsPublicType(type.public_type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("public type '", type.public_type,
                     "' must be lower-case words separated by '.' (e.g. "
                     "bank.account.opened)"));
  }
  if (type.version < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "public type '", type.public_type, "' needs a version >= 1"));
  }
  if (by_stored_type_.contains(type.stored_type)) {
    return absl::AlreadyExistsError(
        absl::StrCat("event type '", type.stored_type, "' is published twice"));
  }
  const std::string cloud_event_type = type.CloudEventType();
  if (by_cloud_event_type_.contains(cloud_event_type)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "public type '", cloud_event_type, "' is published twice"));
  }
  by_stored_type_[type.stored_type] = types_.size();
  by_cloud_event_type_[cloud_event_type] = types_.size();
  types_.push_back(std::move(type));
  return absl::OkStatus();
}

const PublishedType* Publication::Find(absl::string_view stored_type) const {
  auto it = by_stored_type_.find(stored_type);
  return it == by_stored_type_.end() ? nullptr : &types_[it->second];
}

const PublishedType* Publication::FindCloudEventType(
    absl::string_view cloud_event_type) const {
  auto it = by_cloud_event_type_.find(cloud_event_type);
  return it == by_cloud_event_type_.end() ? nullptr : &types_[it->second];
}

absl::StatusOr<std::optional<std::string>> Publication::Encode(
    const eventstore::RecordedEvent& event) const {
  const PublishedType* type = Find(event.event_type);
  if (type == nullptr) return std::optional<std::string>();
  std::string mapped;
  absl::string_view data = event.data;
  if (type->to_public) {
    absl::StatusOr<std::string> out = type->to_public(event);
    if (!out.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("event ", event.event_id, " (", event.event_type,
                       ") has no public form: ", out.status().message()));
    }
    rapidjson::Document check;
    check.Parse(out->data(), out->size());
    if (check.HasParseError() || !check.IsObject()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the public form of event ", event.event_id,
                       " is not a JSON object"));
    }
    mapped = *std::move(out);
    data = mapped;
  }
  rapidjson::Document metadata;
  metadata.Parse(event.metadata.data(), event.metadata.size());

  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("specversion");
  w.String("1.0");
  w.Key("id");
  String(w, event.event_id);
  w.Key("source");
  String(w, source_);
  w.Key("type");
  String(w, type->CloudEventType());
  w.Key("subject");
  String(w, SubjectOf(event.stream_id));
  w.Key("time");
  String(w, absl::FormatTime("%Y-%m-%d%ET%H:%M:%E*SZ", event.recorded_at,
                             absl::UTCTimeZone()));
  w.Key("datacontenttype");
  w.String("application/json");
  w.Key("position");
  String(w, event.position.ToToken());
  w.Key("streamversion");
  w.Int64(event.stream_version);
  w.Key("category");
  String(w, eventstore::CategoryOf(event.stream_id));
  // (metadata member, extension attribute)
  constexpr std::pair<const char*, const char*> kTrace[] = {
      {"correlation_id", "correlationid"}, {"causation_id", "causationid"}};
  for (const auto& [member, attribute] : kTrace) {
    const absl::string_view value = Member(metadata, member);
    if (value.empty()) continue;
    w.Key(attribute);
    String(w, value);
  }
  w.Key("data");
  w.RawValue(data.data(), data.size(), rapidjson::kObjectType);
  w.EndObject();
  return std::optional<std::string>(
      std::string(buffer.GetString(), buffer.GetSize()));
}

}  // namespace cqrs::integration

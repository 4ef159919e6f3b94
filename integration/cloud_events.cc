#include "integration/cloud_events.h"

#include <charconv>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "framework/json_writer.h"
#include "rapidjson/document.h"
#include "rapidjson/reader.h"

namespace cqrs::integration {
namespace {

using Writer = JsonWriter;

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

// (metadata member, extension attribute)
constexpr std::pair<const char*, const char*> kTrace[] = {
    {"correlation_id", "correlationid"}, {"causation_id", "causationid"}};
constexpr int kTraceCount = 2;

// Reads the kTrace members of a metadata object as a DOM lookup
// (FindMember: the first member of that name, used when it is a string)
// would, without building the DOM: the SAX events of the top-level
// object's members.
class TraceReader
    : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, TraceReader> {
 public:
  // Parses `metadata`; false when it is not JSON (then nothing was found,
  // as a DOM that failed to parse is null).
  bool Read(absl::string_view metadata) {
    for (int i = 0; i < kTraceCount; ++i) {
      seen_[i] = false;
      values_[i].clear();
    }
    depth_ = 0;
    pending_ = -1;
    // Parsed in place (no copy of each string) in a copy of its own. Like
    // the length-bounded parse, this ends the text at a NUL byte.
    text_.assign(metadata.data(), metadata.size());
    rapidjson::InsituStringStream is(&text_[0]);
    if (reader_.Parse<rapidjson::kParseInsituFlag>(is, *this).IsError()) {
      for (std::string& v : values_) v.clear();
      return false;
    }
    return true;
  }
  // The string value of kTrace[i]'s member, or empty.
  absl::string_view value(int i) const { return values_[i]; }

  // The handler.
  bool Default() {
    pending_ = -1;
    return true;
  }
  bool String(const char* s, rapidjson::SizeType length, bool) {
    if (pending_ >= 0) values_[pending_].assign(s, length);
    pending_ = -1;
    return true;
  }
  bool Key(const char* s, rapidjson::SizeType length, bool) {
    pending_ = -1;
    if (depth_ != 1) return true;
    const absl::string_view key(s, length);
    for (int i = 0; i < kTraceCount; ++i) {
      if (!seen_[i] && key == kTrace[i].first) {
        seen_[i] = true;
        pending_ = i;
      }
    }
    return true;
  }
  bool StartObject() {
    pending_ = -1;
    ++depth_;
    return true;
  }
  bool EndObject(rapidjson::SizeType) {
    --depth_;
    return true;
  }
  bool StartArray() { return StartObject(); }
  bool EndArray(rapidjson::SizeType n) { return EndObject(n); }

 private:
  // Reused: the copy and the reader's stack keep their capacity.
  std::string text_;
  rapidjson::Reader reader_;
  int depth_ = 0;
  int pending_ = -1;  // the kTrace member whose value comes next
  bool seen_[kTraceCount] = {};
  std::string values_[kTraceCount];
};

// "<transaction id>.<global position>", as Position::ToToken() writes it.
void WritePosition(Writer& w, const eventstore::Position& p) {
  char text[48];
  char* end = std::to_chars(text, text + 20, p.transaction_id).ptr;
  *end++ = '.';
  end = std::to_chars(end, text + sizeof(text), p.global_position).ptr;
  w.String(text, static_cast<rapidjson::SizeType>(end - text));
}

// Scratch output buffers up to this size stay allocated for the next event.
constexpr size_t kKeptScratchBytes = 64 * 1024;

constexpr char kTimeFormat[] = "%Y-%m-%d%ET%H:%M:%E*SZ";

// RFC 3339 in UTC exactly as absl::FormatTime(kTimeFormat) writes it (the
// fraction without trailing zeros, none for whole seconds), written by hand
// for years 1000..9999 and whole nanoseconds (the store records
// microseconds); FormatTime for anything else. FormatTime cost more than
// the rest of the event's encoding.
void WriteTime(Writer& w, absl::Time t) {
  const absl::TimeZone::CivilInfo at = absl::UTCTimeZone().At(t);
  const absl::CivilSecond& cs = at.cs;
  const int64_t nanos = absl::ToInt64Nanoseconds(at.subsecond);
  if (cs.year() < 1000 || cs.year() > 9999 ||
      absl::Nanoseconds(nanos) != at.subsecond) {
    String(w, absl::FormatTime(kTimeFormat, t, absl::UTCTimeZone()));
    return;
  }
  char text[32];
  char* p = text;
  const auto two = [&p](int v) {
    *p++ = static_cast<char>('0' + v / 10);
    *p++ = static_cast<char>('0' + v % 10);
  };
  const int year = static_cast<int>(cs.year());
  two(year / 100);
  two(year % 100);
  *p++ = '-';
  two(cs.month());
  *p++ = '-';
  two(cs.day());
  *p++ = 'T';
  two(cs.hour());
  *p++ = ':';
  two(cs.minute());
  *p++ = ':';
  two(cs.second());
  if (nanos != 0) {
    char digits[9];
    int64_t rest = nanos;
    for (int i = 8; i >= 0; --i) {
      digits[i] = static_cast<char>('0' + rest % 10);
      rest /= 10;
    }
    int n = 9;
    while (digits[n - 1] == '0') --n;
    *p++ = '.';
    std::memcpy(p, digits, static_cast<size_t>(n));
    p += n;
  }
  *p++ = 'Z';
  w.String(text, static_cast<rapidjson::SizeType>(p - text));
}

// What Encode() reuses on each thread, so that an event costs no allocation
// but its result: the output buffer and the writer's stack keep their
// capacity, and so does the metadata reader's.
struct Scratch {
  JsonBuffer buffer;
  Writer writer{buffer};
  TraceReader trace;
};

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
  cloud_event_types_.push_back(cloud_event_type);
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
  thread_local Scratch scratch;
  TraceReader& trace = scratch.trace;
  trace.Read(event.metadata);
  JsonBuffer& buffer = scratch.buffer;
  buffer.Clear();
  Writer& w = scratch.writer;
  w.Reset(buffer);
  w.StartObject();
  w.Key("specversion");
  w.String("1.0");
  w.Key("id");
  String(w, event.event_id);
  w.Key("source");
  String(w, source_);
  w.Key("type");
  String(w, cloud_event_types_[static_cast<size_t>(type - types_.data())]);
  w.Key("subject");
  String(w, SubjectOf(event.stream_id));
  w.Key("time");
  WriteTime(w, event.recorded_at);
  w.Key("datacontenttype");
  w.String("application/json");
  w.Key("position");
  WritePosition(w, event.position);
  w.Key("streamversion");
  w.Int64(event.stream_version);
  w.Key("category");
  String(w, eventstore::CategoryOf(event.stream_id));
  for (int i = 0; i < kTraceCount; ++i) {
    const absl::string_view value = trace.value(i);
    if (value.empty()) continue;
    w.Key(kTrace[i].second);
    String(w, value);
  }
  w.Key("data");
  w.RawValue(data.data(), data.size(), rapidjson::kObjectType);
  w.EndObject();
  std::optional<std::string> out(
      std::string(buffer.GetString(), buffer.GetSize()));
  // A rare large event's buffer is not kept for the thread's lifetime.
  if (buffer.GetSize() > kKeptScratchBytes) {
    buffer.Clear();
    buffer.ShrinkToFit();
  }
  return out;
}

}  // namespace cqrs::integration

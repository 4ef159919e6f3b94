#include "framework/json_shape.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "framework/error_code.h"
#include "framework/json.h"
#include "rapidjson/encodedstream.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"

namespace cqrs {
namespace json {
namespace json_internal {
namespace {

constexpr char kReplacementCharacter[] = "\xEF\xBF\xBD";  // U+FFFD

// The length of the UTF-8 sequence that starts with `lead`, or 0 when no
// well-formed sequence starts with it.
size_t SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// `text` with every byte that is not part of a well-formed UTF-8 sequence
// replaced by U+FFFD; `text` itself when it is valid.
absl::string_view ValidUtf8(absl::string_view text, std::string* scratch) {
  if (IsValidUtf8(text)) return text;
  scratch->clear();
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t length = SequenceLength(static_cast<unsigned char>(text[pos]));
    if (length != 0 && pos + length <= text.size() &&
        IsValidUtf8(text.substr(pos, length))) {
      scratch->append(text.data() + pos, length);
      pos += length;
    } else {
      scratch->append(kReplacementCharacter);
      ++pos;
    }
  }
  return *scratch;
}

// A key as shown inside an error message: control characters as \u00XX and
// invalid UTF-8 as U+FFFD, so that the message is always printable text.
void AppendDisplayKey(absl::string_view key, std::string* out) {
  std::string scratch;
  for (char c : ValidUtf8(key, &scratch)) {
    if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\u%04X",
                    static_cast<unsigned>(c));
      out->append(escaped);
    } else {
      out->push_back(c);
    }
  }
}

void AppendKeySegment(absl::string_view key, std::string* path) {
  if (!path->empty()) path->push_back('.');
  AppendDisplayKey(key, path);
}

void AppendIndexSegment(size_t index, std::string* path) {
  absl::StrAppend(path, "[", index, "]");
}

size_t CodePoints(absl::string_view text) {
  size_t count = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++count;
  }
  return count;
}

absl::string_view StringOf(const rapidjson::Value& value) {
  return absl::string_view(value.GetString(), value.GetStringLength());
}

// One object or array met by WalkTree(). Scalars are never stored.
struct Node {
  const rapidjson::Value* value;
  int parent;                    // Index in the node list; -1 at the root.
  const rapidjson::Value* name;  // The member name, or null in an array.
  rapidjson::SizeType index;     // The array index when `name` is null.
  int depth;                     // 1 at the root.
};

std::string NodePath(const std::vector<Node>& nodes, int i,
                     absl::string_view prefix) {
  std::vector<int> chain;
  for (; i > 0; i = nodes[i].parent) chain.push_back(i);
  std::string path(prefix);
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const Node& node = nodes[*it];
    if (node.name != nullptr) {
      AppendKeySegment(StringOf(*node.name), &path);
    } else {
      AppendIndexSegment(node.index, &path);
    }
  }
  return path;
}

// The index of the first member of `object` whose name an earlier member
// already has, or -1.
int64_t DuplicateMember(const rapidjson::Value& object) {
  const rapidjson::SizeType count = object.MemberCount();
  if (count < 2) return -1;
  const auto members = object.MemberBegin();
  // Most objects are small: comparing all pairs costs less than sorting.
  constexpr rapidjson::SizeType kPairwiseLimit = 16;
  if (count <= kPairwiseLimit) {
    for (rapidjson::SizeType i = 1; i < count; ++i) {
      for (rapidjson::SizeType j = 0; j < i; ++j) {
        if (StringOf(members[i].name) == StringOf(members[j].name)) return i;
      }
    }
    return -1;
  }
  std::vector<std::pair<absl::string_view, rapidjson::SizeType>> names;
  names.reserve(count);
  for (rapidjson::SizeType i = 0; i < count; ++i) {
    names.emplace_back(StringOf(members[i].name), i);
  }
  std::sort(names.begin(), names.end());
  int64_t first = -1;
  for (size_t i = 1; i < names.size(); ++i) {
    // Sorted by (name, index): a repeated name's later occurrences follow
    // its first one.
    if (names[i].first == names[i - 1].first &&
        (first < 0 || names[i].second < first)) {
      first = names[i].second;
    }
  }
  return first;
}

struct Problem {
  enum Kind { kNone, kDuplicate, kTooDeep } kind = kNone;
  std::string path;
};

enum class DepthLimit { kNone, kMaxJsonDepth };

// Walks every object and array under `root` with an explicit stack (so any
// depth is safe) and returns the first duplicate member name or, with
// kMaxJsonDepth, the first value nested too deep.
Problem WalkTree(const rapidjson::Value& root, absl::string_view prefix,
                 DepthLimit limit) {
  std::vector<Node> nodes;
  std::vector<int> pending;
  if (!root.IsObject() && !root.IsArray()) return {};
  nodes.push_back({&root, -1, nullptr, 0, 1});
  pending.push_back(0);
  while (!pending.empty()) {
    const int i = pending.back();
    pending.pop_back();
    const Node node = nodes[i];  // Copied: push_back below may reallocate.
    if (limit == DepthLimit::kMaxJsonDepth && node.depth > kMaxJsonDepth) {
      // The whole path may be a hundred segments long: name the top-level
      // field it starts from.
      int top = i;
      while (nodes[top].parent > 0) top = nodes[top].parent;
      return {Problem::kTooDeep, NodePath(nodes, top, prefix)};
    }
    const auto push = [&](const rapidjson::Value& child,
                          const rapidjson::Value* name,
                          rapidjson::SizeType index) {
      if (!child.IsObject() && !child.IsArray()) return;
      nodes.push_back({&child, i, name, index, node.depth + 1});
      pending.push_back(static_cast<int>(nodes.size() - 1));
    };
    if (node.value->IsObject()) {
      const int64_t duplicate = DuplicateMember(*node.value);
      if (duplicate >= 0) {
        std::string path = NodePath(nodes, i, prefix);
        AppendKeySegment(StringOf(node.value->MemberBegin()[duplicate].name),
                         &path);
        return {Problem::kDuplicate, std::move(path)};
      }
      for (auto it = node.value->MemberBegin(); it != node.value->MemberEnd();
           ++it) {
        push(it->value, &it->name, 0);
      }
    } else {
      for (rapidjson::SizeType k = 0; k < node.value->Size(); ++k) {
        push((*node.value)[k], nullptr, k);
      }
    }
  }
  return {};
}

std::string DoubleText(double value) { return absl::StrCat(value); }

}  // namespace

const Rules& NoRules() {
  static const Rules* const rules = new Rules();
  return *rules;
}

std::string Path::ToString() const {
  std::vector<const Path*> chain;
  const Path* root = this;
  for (; root->parent_ != nullptr; root = root->parent_) chain.push_back(root);
  std::string path(root->text_);
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    if ((*it)->index_plus_one_ == 0) {
      AppendKeySegment((*it)->text_, &path);
    } else {
      AppendIndexSegment((*it)->index_plus_one_ - 1, &path);
    }
  }
  return path;
}

absl::Status FieldError(const Path& path, absl::string_view predicate) {
  return InvalidRequest(
      absl::StrCat("field \"", path.ToString(), "\" ", predicate));
}

absl::Status MustBe(const Path& path, absl::string_view expected) {
  return FieldError(path, absl::StrCat("must be ", expected));
}

absl::Status NotAnObject(const Path& path) {
  const std::string text = path.ToString();
  if (text.empty()) return InvalidRequest("expected a JSON object");
  return MustBe(path, "an object");
}

absl::Status UnknownField(const Path& path) {
  return InvalidRequest(
      absl::StrCat("unknown field \"", path.ToString(), "\""));
}

absl::Status RequiredField(const Path& path) {
  return FieldError(path, "is required");
}

// A SAX handler that builds `doc` as RapidJSON's own parse would, except
// for numbers: they arrive as text (kParseNumbersAsStringsFlag) and absl's
// correctly rounded conversions turn them into the same integer or double
// kinds. RapidJSON 1.1's full-precision strtod reads past the end of its
// table of powers of ten for a long number with a large exponent
// (9998...899800e301, found by fuzz/json_codec); here such a number, like
// any beyond a double's range, is "number too big".
class ExactNumbers {
 public:
  explicit ExactNumbers(rapidjson::Document& doc) : doc_(doc) {}

  bool too_big() const { return too_big_; }

  bool Null() { return doc_.Null(); }
  bool Bool(bool value) { return doc_.Bool(value); }
  // With kParseNumbersAsStringsFlag every number comes through RawNumber;
  // the reader still needs these.
  bool Int(int value) { return doc_.Int(value); }
  bool Uint(unsigned value) { return doc_.Uint(value); }
  bool Int64(int64_t value) { return doc_.Int64(value); }
  bool Uint64(uint64_t value) { return doc_.Uint64(value); }
  bool Double(double value) { return doc_.Double(value); }
  bool RawNumber(const char* text, rapidjson::SizeType length, bool) {
    const absl::string_view number(text, length);
    // The kinds RapidJSON gives: an integer that fits 32 bits is Int or
    // Uint, one that fits 64 bits Int64 or Uint64, anything else a double.
    if (number.find_first_of(".eE") == absl::string_view::npos) {
      if (number[0] == '-') {
        int64_t value;
        if (absl::SimpleAtoi(number, &value)) {
          return value >= std::numeric_limits<int>::min()
                     ? doc_.Int(static_cast<int>(value))
                     : doc_.Int64(value);
        }
      } else {
        uint64_t value;
        if (absl::SimpleAtoi(number, &value)) {
          return value <= std::numeric_limits<unsigned>::max()
                     ? doc_.Uint(static_cast<unsigned>(value))
                     : doc_.Uint64(value);
        }
      }
    }
    double value;
    if (!absl::SimpleAtod(number, &value) || !std::isfinite(value)) {
      too_big_ = true;
      return false;
    }
    return doc_.Double(value);
  }
  bool String(const char* text, rapidjson::SizeType length, bool copy) {
    return doc_.String(text, length, copy);
  }
  bool StartObject() { return doc_.StartObject(); }
  bool Key(const char* text, rapidjson::SizeType length, bool copy) {
    return doc_.Key(text, length, copy);
  }
  bool EndObject(rapidjson::SizeType members) {
    return doc_.EndObject(members);
  }
  bool StartArray() { return doc_.StartArray(); }
  bool EndArray(rapidjson::SizeType elements) {
    return doc_.EndArray(elements);
  }

 private:
  rapidjson::Document& doc_;
  bool too_big_ = false;
};

absl::Status ParseText(absl::string_view text, rapidjson::Document* doc) {
  // RapidJSON reads a NUL byte as the end of its input even when given the
  // length, so {"amount":5}\0garbage would parse as {"amount":5}.
  const size_t nul = text.find('\0');
  if (nul != absl::string_view::npos) {
    return InvalidRequest(absl::StrCat(
        "JSON text must not contain a NUL byte (one at offset ", nul, ")"));
  }
  // Iterative parsing: a text of a million '[' must not exhaust the stack.
  constexpr unsigned kFlags = rapidjson::kParseValidateEncodingFlag |
                              rapidjson::kParseIterativeFlag |
                              rapidjson::kParseNumbersAsStringsFlag;
  ExactNumbers handler(*doc);
  rapidjson::ParseResult result;
  // Populate() hands the document's own stack to the handler's calls and
  // takes the finished root from it.
  auto parse = [&](rapidjson::Document&) {
    rapidjson::MemoryStream memory(text.data(), text.size());
    rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream>
        input(memory);
    rapidjson::Reader reader;
    result = reader.Parse<kFlags>(input, handler);
    return !result.IsError();
  };
  doc->Populate(parse);
  if (result.IsError()) {
    const rapidjson::ParseErrorCode code =
        handler.too_big() ? rapidjson::kParseErrorNumberTooBig : result.Code();
    return WithErrorCode(absl::InvalidArgumentError(absl::StrCat(
                             "malformed JSON at offset ", result.Offset(), ": ",
                             rapidjson::GetParseError_En(code))),
                         "invalid_json");
  }
  return absl::OkStatus();
}

absl::Status CheckTree(const rapidjson::Value& root, absl::string_view prefix) {
  Problem problem = WalkTree(root, prefix, DepthLimit::kMaxJsonDepth);
  switch (problem.kind) {
    case Problem::kNone:
      return absl::OkStatus();
    case Problem::kDuplicate:
      return InvalidRequest(
          absl::StrCat("duplicate field \"", problem.path, "\""));
    case Problem::kTooDeep:
      return InvalidRequest(absl::StrCat("field \"", problem.path,
                                         "\" nests objects and arrays more "
                                         "than ",
                                         kMaxJsonDepth, " deep"));
  }
  return absl::OkStatus();
}

void WriteString(absl::string_view text, JsonWriter& writer) {
  std::string scratch;
  const absl::string_view valid = ValidUtf8(text, &scratch);
  writer.String(valid.data(), static_cast<rapidjson::SizeType>(valid.size()));
}

void WriteKey(absl::string_view text, JsonWriter& writer) {
  std::string scratch;
  const absl::string_view valid = ValidUtf8(text, &scratch);
  writer.Key(valid.data(), static_cast<rapidjson::SizeType>(valid.size()));
}

void WriteType(const char* type, bool nullable, JsonWriter& writer) {
  writer.Key("type");
  if (!nullable) {
    writer.String(type);
    return;
  }
  writer.StartArray();
  writer.String(type);
  writer.String("null");
  writer.EndArray();
}

std::shared_ptr<const std::regex> CompilePattern(const std::string& pattern) {
  try {
    return std::make_shared<const std::regex>(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    DieBadShape(absl::StrCat("Pattern(\"", pattern,
                             "\") is not a valid "
                             "ECMAScript regex: ",
                             e.what()));
  }
}

void DieBadShape(absl::string_view message) {
  std::fprintf(stderr, "cqrs::json::Shape: %.*s\n",
               static_cast<int>(message.size()), message.data());
  std::abort();
}

std::string ItemsExpectation(const char* container, const char* unit,
                             const Rules& rules) {
  if (!rules.has_items) return container;
  return absl::StrCat(container, " of ", rules.min_items, " to ",
                      rules.max_items, " ", unit);
}

void WriteItemsSchema(const char* min_key, const char* max_key,
                      const Rules& rules, JsonWriter& writer) {
  if (!rules.has_items) return;
  writer.Key(min_key);
  writer.Uint64(rules.min_items);
  writer.Key(max_key);
  writer.Uint64(rules.max_items);
}

absl::Status CheckMapKey(absl::string_view key, const Path& path) {
  if (std::memchr(key.data(), '\0', key.size()) != nullptr ||
      !IsValidUtf8(key)) {
    return FieldError(path,
                      "has a name that is not valid UTF-8 without U+0000");
  }
  return absl::OkStatus();
}

// ---- bool ----

void Codec<bool>::Write(bool value, JsonWriter& writer) { writer.Bool(value); }

absl::Status Codec<bool>::Read(const rapidjson::Value& in, const Path& path,
                               const Rules&, bool* out) {
  if (!in.IsBool()) return MustBe(path, "true or false");
  *out = in.GetBool();
  return absl::OkStatus();
}

void Codec<bool>::SchemaBody(JsonWriter& writer, const Rules&, bool nullable) {
  WriteType("boolean", nullable, writer);
}

// ---- integers ----

namespace {

struct IntBounds {
  int64_t min;
  int64_t max;
};

IntBounds Effective(const Rules& rules, int64_t type_min, int64_t type_max) {
  if (!rules.has_range) return {type_min, type_max};
  return {std::max(rules.int_min, type_min), std::min(rules.int_max, type_max)};
}

absl::Status ReadInteger(const rapidjson::Value& in, const Path& path,
                         IntBounds bounds, int64_t* out) {
  // RapidJSON keeps numbers written with a fraction or exponent as doubles,
  // so IsInt64() refuses 1.0 and 1e3 as well as values beyond int64.
  if (!in.IsInt64() || in.GetInt64() < bounds.min ||
      in.GetInt64() > bounds.max) {
    return MustBe(
        path, absl::StrCat("an integer from ", bounds.min, " to ", bounds.max));
  }
  *out = in.GetInt64();
  return absl::OkStatus();
}

void IntegerSchema(JsonWriter& writer, bool nullable, bool with_bounds,
                   IntBounds bounds) {
  WriteType("integer", nullable, writer);
  if (!with_bounds) return;
  writer.Key("minimum");
  writer.Int64(bounds.min);
  writer.Key("maximum");
  writer.Int64(bounds.max);
}

constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

}  // namespace

void Codec<int32_t>::Write(int32_t value, JsonWriter& writer) {
  writer.Int(value);
}

absl::Status Codec<int32_t>::Read(const rapidjson::Value& in, const Path& path,
                                  const Rules& rules, int32_t* out) {
  int64_t value = 0;
  absl::Status status =
      ReadInteger(in, path, Effective(rules, kInt32Min, kInt32Max), &value);
  if (status.ok()) *out = static_cast<int32_t>(value);
  return status;
}

void Codec<int32_t>::SchemaBody(JsonWriter& writer, const Rules& rules,
                                bool nullable) {
  // Without a Range() the schema still tells clients the 32-bit limits.
  IntegerSchema(writer, nullable, /*with_bounds=*/true,
                Effective(rules, kInt32Min, kInt32Max));
}

void Codec<int64_t>::Write(int64_t value, JsonWriter& writer) {
  writer.Int64(value);
}

absl::Status Codec<int64_t>::Read(const rapidjson::Value& in, const Path& path,
                                  const Rules& rules, int64_t* out) {
  return ReadInteger(in, path, Effective(rules, kInt64Min, kInt64Max), out);
}

void Codec<int64_t>::SchemaBody(JsonWriter& writer, const Rules& rules,
                                bool nullable) {
  IntegerSchema(writer, nullable, /*with_bounds=*/rules.has_range,
                Effective(rules, kInt64Min, kInt64Max));
}

// ---- double ----

void Codec<double>::Write(double value, JsonWriter& writer) {
  // RapidJSON would write the key and then nothing for NaN or infinity.
  if (!std::isfinite(value)) {
    writer.Null();
    return;
  }
  writer.Double(value);
}

absl::Status Codec<double>::Read(const rapidjson::Value& in, const Path& path,
                                 const Rules& rules, double* out) {
  if (!in.IsNumber() ||
      (rules.has_range && (in.GetDouble() < rules.double_min ||
                           in.GetDouble() > rules.double_max))) {
    if (!rules.has_range) return MustBe(path, "a number");
    return MustBe(path,
                  absl::StrCat("a number from ", DoubleText(rules.double_min),
                               " to ", DoubleText(rules.double_max)));
  }
  *out = in.GetDouble();
  return absl::OkStatus();
}

void Codec<double>::SchemaBody(JsonWriter& writer, const Rules& rules,
                               bool nullable) {
  WriteType("number", nullable, writer);
  if (!rules.has_range) return;
  writer.Key("minimum");
  writer.Double(rules.double_min);
  writer.Key("maximum");
  writer.Double(rules.double_max);
}

// ---- std::string ----

namespace {

std::string StringExpectation(const Rules& rules) {
  if (!rules.has_length) return "a string";
  return absl::StrCat("a string of ", rules.min_length, " to ",
                      rules.max_length, " characters");
}

bool IsAnchored(absl::string_view pattern) {
  // A final "\$" is an escaped dollar, not an anchor.
  return pattern.size() >= 2 && pattern.front() == '^' &&
         pattern.back() == '$' && pattern[pattern.size() - 2] != '\\';
}

}  // namespace

void Codec<std::string>::Write(const std::string& value, JsonWriter& writer) {
  WriteString(value, writer);
}

absl::Status Codec<std::string>::Read(const rapidjson::Value& in,
                                      const Path& path, const Rules& rules,
                                      std::string* out) {
  if (!in.IsString()) return MustBe(path, StringExpectation(rules));
  const absl::string_view text = StringOf(in);
  if (std::memchr(text.data(), '\0', text.size()) != nullptr) {
    return FieldError(path, "must not contain U+0000");
  }
  // Parsing validated the bytes, but an escaped lone surrogate ("\udc00")
  // decodes to a surrogate code point, which is not valid UTF-8.
  if (!IsValidUtf8(text)) {
    return FieldError(path, "must be valid Unicode (no lone surrogates)");
  }
  if (rules.has_length) {
    const size_t length = CodePoints(text);
    if (length < rules.min_length || length > rules.max_length) {
      return MustBe(path, StringExpectation(rules));
    }
  }
  if (!rules.one_of.empty() &&
      std::find(rules.one_of.begin(), rules.one_of.end(), text) ==
          rules.one_of.end()) {
    std::vector<std::string> quoted;
    for (const std::string& value : rules.one_of) {
      quoted.push_back(absl::StrCat("\"", value, "\""));
    }
    return MustBe(path, absl::StrCat("one of ", absl::StrJoin(quoted, ", ")));
  }
  if (rules.regex != nullptr &&
      (text.size() > kMaxPatternBytes ||
       !std::regex_match(text.begin(), text.end(), *rules.regex))) {
    return FieldError(path, absl::StrCat("must match ", rules.pattern));
  }
  out->assign(text.data(), text.size());
  return absl::OkStatus();
}

void Codec<std::string>::SchemaBody(JsonWriter& writer, const Rules& rules,
                                    bool nullable) {
  WriteType("string", nullable, writer);
  if (rules.has_length) {
    writer.Key("minLength");
    writer.Uint64(rules.min_length);
    writer.Key("maxLength");
    writer.Uint64(rules.max_length);
  }
  if (!rules.pattern.empty()) {
    writer.Key("pattern");
    WriteString(IsAnchored(rules.pattern)
                    ? rules.pattern
                    : absl::StrCat("^(?:", rules.pattern, ")$"),
                writer);
  }
  if (!rules.one_of.empty()) {
    writer.Key("enum");
    writer.StartArray();
    for (const std::string& value : rules.one_of) WriteString(value, writer);
    // "enum" restricts every type, null included.
    if (nullable) writer.Null();
    writer.EndArray();
  }
}

// ---- absl::Time ----

namespace {

constexpr char kRfc3339Utc[] = "%Y-%m-%d%ET%H:%M:%E*SZ";
constexpr char kRfc3339[] = "%Y-%m-%d%ET%H:%M:%E*S%Ez";

}  // namespace

void Codec<absl::Time>::Write(absl::Time value, JsonWriter& writer) {
  WriteString(absl::FormatTime(kRfc3339Utc, value, absl::UTCTimeZone()),
              writer);
}

absl::Status Codec<absl::Time>::Read(const rapidjson::Value& in,
                                     const Path& path, const Rules&,
                                     absl::Time* out) {
  absl::Time time;
  std::string error;
  // absl::ParseTime() also accepts "infinite-future" and surrounding
  // whitespace; an RFC 3339 date-time starts and ends with a digit or "Z".
  const absl::string_view text =
      in.IsString() ? StringOf(in) : absl::string_view();
  if (text.size() < 20 || text.front() < '0' || text.front() > '9' ||
      text.back() == ' ' || text.back() == '\t' || text.back() == '\n' ||
      text.back() == '\r' ||
      !absl::ParseTime(kRfc3339, std::string(text), &time, &error)) {
    return MustBe(path,
                  "an RFC 3339 date-time such as \"2024-01-31T12:00:00Z\"");
  }
  *out = time;
  return absl::OkStatus();
}

void Codec<absl::Time>::SchemaBody(JsonWriter& writer, const Rules&,
                                   bool nullable) {
  WriteType("string", nullable, writer);
  writer.Key("format");
  writer.String("date-time");
}

}  // namespace json_internal

absl::optional<std::string> FindDuplicateKey(const rapidjson::Value& value) {
  json_internal::Problem problem =
      json_internal::WalkTree(value, "", json_internal::DepthLimit::kNone);
  if (problem.kind != json_internal::Problem::kDuplicate) return absl::nullopt;
  return std::move(problem.path);
}

}  // namespace json
}  // namespace cqrs

// Declarative JSON: a type describes its JSON shape once, and the framework
// derives encoding, strict decoding and a JSON Schema from it. RapidJSON does
// the reading and writing.
//
//   struct Deposited {
//     int64_t amount = 0;
//     std::optional<std::string> note;
//     static auto Json() {
//       return cqrs::json::Shape<Deposited>("Deposited")
//           .Field("amount", &Deposited::amount, cqrs::json::Range(1, 1000))
//           .Field("note", &Deposited::note, cqrs::json::Length(0, 200));
//     }
//   };
//   std::string text = cqrs::json::Encode(Deposited{5});  // {"amount":5}
//   absl::StatusOr<Deposited> d = cqrs::json::Decode<Deposited>(text);
//   std::string schema = cqrs::json::SchemaOf<Deposited>();
//
// Where the shape comes from: `static Shape<T> Json()` in T (any return type
// that is a Shape<T>, usually `auto`), or, for a type that cannot be changed,
// a free function `cqrs::json::Shape<T> JsonShape(const T*)` in T's namespace
// (found by argument-dependent lookup; the pointer is always null). ShapeOf<T>
// builds it once.
//
// Member types: bool, int32_t, int64_t, double, std::string, absl::Time,
// std::vector<X>, std::map<std::string, X> (a JSON object with any keys),
// a type with a shape of its own (a nested object), and std::optional<X> or
// absl::optional<X> of any of these. A member of optional type is an optional
// field: missing or null decodes to nullopt, and an empty optional is left out
// when encoding (never written as null). Inside an array or a map an empty
// optional is written as null. Every other member is a required field.
// Decoding starts from a value-initialized T (`T{}`), so T must be default
// constructible; members without a Field() keep that value.
//
// Rules, after the member pointer of Field(), in any number and order. They
// apply to the member (to X for an optional<X>), never to the elements of a
// vector or map; a rule that does not fit the member's type fails to compile.
//   Range(min, max)     int32_t, int64_t (integer bounds), double; inclusive.
//   Length(min, max)    std::string; inclusive, in characters (Unicode code
//                       points), not bytes.
//   Pattern("^[A-Z]+$") std::string; ECMAScript std::regex that must match the
//                       whole string. Checked after Length; strings longer
//                       than kMaxPatternBytes never match (std::regex recurses
//                       once per character and would exhaust the stack).
//   OneOf({"EUR","USD"}) std::string; the value must be one of these.
//   Items(min, max)     std::vector (number of items) and std::map (number of
//                       entries); inclusive.
//   Description("...")  any; written to the schema only.
// Building a shape with two fields of one name, or with a Pattern that is not
// a valid regex, aborts the process: a programming error that the first test
// touching the type reveals.
//
// Encoding never fails. Fields come in declaration order, map entries in key
// order. Strings are written as UTF-8 with quotes, backslashes and every
// control character U+0000..U+001F escaped; bytes that are not part of a
// well-formed UTF-8 sequence (in strings or map keys) are each replaced with
// U+FFFD, so the output is always valid JSON. A string holding U+0000 is
// written as "\u0000" although Decode() refuses it (PostgreSQL cannot store
// it). int64 values are written exactly; a NaN or infinite double is written
// as null (which Decode() refuses for a double); absl::Time is written as an
// RFC 3339 string in UTC with as many fractional digits as needed
// ("2024-01-31T12:00:00.25Z"); absl::InfiniteFuture() and InfinitePast() are
// written as "infinite-future" and "infinite-past", which Decode() refuses.
//
// Decoding is strict. The top level must be an object. Integers must be
// written without fraction or exponent (1.0 and 1e3 are refused) and fit the
// member; a double accepts any JSON number. Strings must not hold U+0000 or a
// lone surrogate escape ("\udc00"). A required field that is null is refused
// like one of the wrong type. Objects and arrays may nest at most
// kMaxJsonDepth (framework/json.h) deep, and no object may name a member
// twice, at any depth (even inside a field that is then refused as unknown).
// Every error is kInvalidArgument carrying an error code
// (framework/error_code.h), so the HTTP layer answers 400:
//   "invalid_json"    the text is not one JSON document in valid UTF-8; the
//                     message names the offset.
//   "invalid_request" the JSON has the wrong shape; the message names the
//                     field by its path ("lines[2].sku", "prices.EUR"):
//     field "lines[2].sku" must be a string of 1 to 64 characters
//     field "by" must be an integer from 1 to 1000
//     field "by" is required
//     unknown field "colour"
//     duplicate field "owner"
// There is no size limit beyond these: callers bound the input (the HTTP
// server's body limit), and Length/Items bound what a field may hold.
//
// The schema (JSON Schema draft 2020-12) has "type":"object", "properties" in
// declaration order, "required", "additionalProperties":false, and per field
// minimum/maximum, minLength/maxLength/pattern/enum, "format":"date-time" for
// absl::Time, items/minItems/maxItems for vectors, additionalProperties
// (the value schema)/minProperties/maxProperties for maps, and description.
// Nested shapes are written inline, with "title" when the Shape has one. An
// optional field's type also allows null (["string","null"], and null is
// added to its enum), as Decode() accepts. A Pattern is written as given when
// it is anchored with ^...$, and as ^(?:...)$ otherwise, because a schema
// pattern matches anywhere in the string. Recursive types (a type holding a
// vector of itself) encode and decode but have no schema: SchemaOf() would
// not terminate.
//
// Thread-safety: a Shape is immutable once built; ShapeOf<T>() builds it once
// (a function-local static), and every function here may be called
// concurrently.
#ifndef FRAMEWORK_JSON_SHAPE_H_
#define FRAMEWORK_JSON_SHAPE_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs {
namespace json {

// The writer every function here writes with.
using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// Strings longer than this (in bytes) never match a Pattern().
inline constexpr size_t kMaxPatternBytes = 1024;

template <typename T>
class Shape;

// ---- Rules (see the header comment) ----

template <typename N>
struct RangeRule {
  N min;
  N max;
};
template <typename A, typename B>
RangeRule<std::common_type_t<A, B>> Range(A min, B max) {
  static_assert(std::is_arithmetic<A>::value && std::is_arithmetic<B>::value &&
                    !std::is_same<A, bool>::value &&
                    !std::is_same<B, bool>::value,
                "Range() takes numbers");
  return {min, max};
}

struct LengthRule {
  size_t min;
  size_t max;
};
inline LengthRule Length(size_t min, size_t max) { return {min, max}; }

struct PatternRule {
  std::string regex;
};
inline PatternRule Pattern(absl::string_view ecmascript_regex) {
  return {std::string(ecmascript_regex)};
}

struct OneOfRule {
  std::vector<std::string> values;
};
inline OneOfRule OneOf(std::vector<std::string> values) {
  return {std::move(values)};
}

struct ItemsRule {
  size_t min;
  size_t max;
};
inline ItemsRule Items(size_t min, size_t max) { return {min, max}; }

struct DescriptionRule {
  std::string text;
};
inline DescriptionRule Description(absl::string_view text) {
  return {std::string(text)};
}

// The path of the first member name found twice in one object of `value`, at
// any depth ("owner", "lines[2].sku"), or nullopt when there is none. Walks
// without recursion, so any depth is safe.
absl::optional<std::string> FindDuplicateKey(const rapidjson::Value& value);

namespace json_internal {

// The rules of one field, merged.
struct Rules {
  bool has_range = false;
  int64_t int_min = 0;
  int64_t int_max = 0;
  double double_min = 0;
  double double_max = 0;
  bool has_length = false;
  size_t min_length = 0;
  size_t max_length = 0;
  std::string pattern;
  std::shared_ptr<const std::regex> regex;
  std::vector<std::string> one_of;
  bool has_items = false;
  size_t min_items = 0;
  size_t max_items = 0;
  std::string description;
};
const Rules& NoRules();

// Where a value sits in the document, for error messages. A Path refers to
// its parent: it lives on the stack while its children are read.
class Path {
 public:
  explicit Path(absl::string_view prefix) : text_(prefix) {}
  Path Key(absl::string_view key) const { return Path(this, key, 0); }
  Path Index(size_t index) const { return Path(this, {}, index + 1); }
  // "lines[2].sku"; control characters and invalid UTF-8 in keys are shown
  // as \u00XX and U+FFFD.
  std::string ToString() const;

 private:
  Path(const Path* parent, absl::string_view key, size_t index_plus_one)
      : parent_(parent), text_(key), index_plus_one_(index_plus_one) {}

  const Path* parent_ = nullptr;
  absl::string_view text_;     // The prefix at the root, else a key.
  size_t index_plus_one_ = 0;  // 0 for a key.
};

// invalid_request errors naming `path`.
absl::Status FieldError(const Path& path, absl::string_view predicate);
absl::Status MustBe(const Path& path, absl::string_view expected);
absl::Status NotAnObject(const Path& path);
absl::Status UnknownField(const Path& path);
absl::Status RequiredField(const Path& path);

// Parses `text`; invalid_json when it is not one JSON document,
// invalid_request when it holds a NUL byte (RapidJSON would stop there).
absl::Status ParseText(absl::string_view text, rapidjson::Document* doc);
// Depth and duplicate members of the whole tree under `root`.
absl::Status CheckTree(const rapidjson::Value& root, absl::string_view prefix);

// A key or string, with bytes outside well-formed UTF-8 replaced by U+FFFD.
void WriteString(absl::string_view text, JsonWriter& writer);
void WriteKey(absl::string_view text, JsonWriter& writer);
// "type":"x" or "type":["x","null"].
void WriteType(const char* type, bool nullable, JsonWriter& writer);

std::shared_ptr<const std::regex> CompilePattern(const std::string& pattern);
[[noreturn]] void DieBadShape(absl::string_view message);

template <typename X>
struct IsStdOptional : std::false_type {};
template <typename X>
struct IsStdOptional<std::optional<X>> : std::true_type {};
#ifndef ABSL_USES_STD_OPTIONAL
template <typename X>
struct IsAbslOptional : std::false_type {};
template <typename X>
struct IsAbslOptional<absl::optional<X>> : std::true_type {};
#else
template <typename X>
struct IsAbslOptional : std::false_type {};
#endif
template <typename X>
struct IsOptional : std::integral_constant<bool, IsStdOptional<X>::value ||
                                                     IsAbslOptional<X>::value> {
};

// The type the rules of a member apply to: X for an optional<X>.
template <typename M, typename = void>
struct Unwrap {
  using type = M;
};
template <typename M>
struct Unwrap<M, std::enable_if_t<IsOptional<M>::value>> {
  using type = typename M::value_type;
};

template <typename X>
struct IsVector : std::false_type {};
template <typename X>
struct IsVector<std::vector<X>> : std::true_type {};
template <typename X>
struct IsMap : std::false_type {};
template <typename X>
struct IsMap<std::map<std::string, X>> : std::true_type {};

template <typename V, typename = void>
struct HasMemberShape : std::false_type {};
template <typename V>
struct HasMemberShape<V, std::void_t<decltype(V::Json())>>
    : std::is_same<std::decay_t<decltype(V::Json())>, Shape<V>> {};
template <typename V, typename = void>
struct HasAdlShape : std::false_type {};
template <typename V>
struct HasAdlShape<
    V, std::void_t<decltype(JsonShape(static_cast<const V*>(nullptr)))>>
    : std::is_same<
          std::decay_t<decltype(JsonShape(static_cast<const V*>(nullptr)))>,
          Shape<V>> {};
template <typename V>
struct HasShape : std::integral_constant<bool, HasMemberShape<V>::value ||
                                                   HasAdlShape<V>::value> {};

template <typename V, typename = void>
struct IsSupported : std::false_type {};
template <typename V>
struct IsSupported<
    V, std::enable_if_t<
           std::is_same<V, bool>::value || std::is_same<V, int32_t>::value ||
           std::is_same<V, int64_t>::value || std::is_same<V, double>::value ||
           std::is_same<V, std::string>::value ||
           std::is_same<V, absl::Time>::value || HasShape<V>::value>>
    : std::true_type {};
template <typename X>
struct IsSupported<std::optional<X>> : IsSupported<X> {};
#ifndef ABSL_USES_STD_OPTIONAL
template <typename X>
struct IsSupported<absl::optional<X>> : IsSupported<X> {};
#endif
template <typename X>
struct IsSupported<std::vector<X>> : IsSupported<X> {};
template <typename X>
struct IsSupported<std::map<std::string, X>> : IsSupported<X> {};

template <typename N>
int64_t SaturatingInt64(N value) {
  if constexpr (std::is_unsigned<N>::value) {
    if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return std::numeric_limits<int64_t>::max();
    }
  }
  return static_cast<int64_t>(value);
}

template <typename V, typename N>
void AddRule(Rules* rules, const RangeRule<N>& rule) {
  constexpr bool kInteger =
      std::is_same<V, int32_t>::value || std::is_same<V, int64_t>::value;
  static_assert(kInteger || std::is_same<V, double>::value,
                "Range() applies to int32_t, int64_t and double members");
  static_assert(!kInteger || std::is_integral<N>::value,
                "Range() on an integer member takes integer bounds");
  rules->has_range = true;
  if constexpr (kInteger) {
    rules->int_min = SaturatingInt64(rule.min);
    rules->int_max = SaturatingInt64(rule.max);
  } else {
    rules->double_min = static_cast<double>(rule.min);
    rules->double_max = static_cast<double>(rule.max);
  }
}
template <typename V>
void AddRule(Rules* rules, const LengthRule& rule) {
  static_assert(std::is_same<V, std::string>::value,
                "Length() applies to std::string members");
  rules->has_length = true;
  rules->min_length = rule.min;
  rules->max_length = rule.max;
}
template <typename V>
void AddRule(Rules* rules, const PatternRule& rule) {
  static_assert(std::is_same<V, std::string>::value,
                "Pattern() applies to std::string members");
  rules->pattern = rule.regex;
  rules->regex = CompilePattern(rule.regex);
}
template <typename V>
void AddRule(Rules* rules, const OneOfRule& rule) {
  static_assert(std::is_same<V, std::string>::value,
                "OneOf() applies to std::string members");
  rules->one_of = rule.values;
}
template <typename V>
void AddRule(Rules* rules, const ItemsRule& rule) {
  static_assert(IsVector<V>::value || IsMap<V>::value,
                "Items() applies to std::vector and std::map members");
  rules->has_items = true;
  rules->min_items = rule.min;
  rules->max_items = rule.max;
}
template <typename V>
void AddRule(Rules* rules, const DescriptionRule& rule) {
  rules->description = rule.text;
}

// Codec<V> reads, writes and describes one value of type V:
//   static void Write(const V&, JsonWriter&);
//   static absl::Status Read(const rapidjson::Value&, const Path&,
//                            const Rules&, V*);
//   static void SchemaBody(JsonWriter&, const Rules&, bool nullable);
// SchemaBody() writes the members of the value's schema object (the caller
// opens and closes it). Unsupported types have no Codec.
template <typename V, typename = void>
struct Codec;

template <>
struct Codec<bool> {
  static void Write(bool value, JsonWriter& writer);
  static absl::Status Read(const rapidjson::Value& in, const Path& path,
                           const Rules& rules, bool* out);
  static void SchemaBody(JsonWriter& writer, const Rules& rules, bool nullable);
};
template <>
struct Codec<int32_t> {
  static void Write(int32_t value, JsonWriter& writer);
  static absl::Status Read(const rapidjson::Value& in, const Path& path,
                           const Rules& rules, int32_t* out);
  static void SchemaBody(JsonWriter& writer, const Rules& rules, bool nullable);
};
template <>
struct Codec<int64_t> {
  static void Write(int64_t value, JsonWriter& writer);
  static absl::Status Read(const rapidjson::Value& in, const Path& path,
                           const Rules& rules, int64_t* out);
  static void SchemaBody(JsonWriter& writer, const Rules& rules, bool nullable);
};
template <>
struct Codec<double> {
  static void Write(double value, JsonWriter& writer);
  static absl::Status Read(const rapidjson::Value& in, const Path& path,
                           const Rules& rules, double* out);
  static void SchemaBody(JsonWriter& writer, const Rules& rules, bool nullable);
};
template <>
struct Codec<std::string> {
  static void Write(const std::string& value, JsonWriter& writer);
  static absl::Status Read(const rapidjson::Value& in, const Path& path,
                           const Rules& rules, std::string* out);
  static void SchemaBody(JsonWriter& writer, const Rules& rules, bool nullable);
};
template <>
struct Codec<absl::Time> {
  static void Write(absl::Time value, JsonWriter& writer);
  static absl::Status Read(const rapidjson::Value& in, const Path& path,
                           const Rules& rules, absl::Time* out);
  static void SchemaBody(JsonWriter& writer, const Rules& rules, bool nullable);
};

template <typename O>
struct Codec<O, std::enable_if_t<IsOptional<O>::value>> {
  using X = typename O::value_type;
  static void Write(const O& value, JsonWriter& writer) {
    if (value.has_value()) {
      Codec<X>::Write(*value, writer);
    } else {
      writer.Null();
    }
  }
  static absl::Status Read(const rapidjson::Value& in, const Path& path,
                           const Rules& rules, O* out) {
    if (in.IsNull()) {
      out->reset();
      return absl::OkStatus();
    }
    X value{};
    absl::Status status = Codec<X>::Read(in, path, rules, &value);
    if (!status.ok()) return status;
    *out = std::move(value);
    return absl::OkStatus();
  }
  static void SchemaBody(JsonWriter& writer, const Rules& rules, bool) {
    Codec<X>::SchemaBody(writer, rules, /*nullable=*/true);
  }
};

// "an array of 1 to 10 items" and the like.
std::string ItemsExpectation(const char* container, const char* unit,
                             const Rules& rules);
void WriteItemsSchema(const char* min_key, const char* max_key,
                      const Rules& rules, JsonWriter& writer);
// The key of a map entry: valid UTF-8 without U+0000.
absl::Status CheckMapKey(absl::string_view key, const Path& path);

template <typename X>
struct Codec<std::vector<X>> {
  static void Write(const std::vector<X>& value, JsonWriter& writer) {
    writer.StartArray();
    for (const auto& item : value) Codec<X>::Write(item, writer);
    writer.EndArray();
  }
  static absl::Status Read(const rapidjson::Value& in, const Path& path,
                           const Rules& rules, std::vector<X>* out) {
    if (!in.IsArray() || (rules.has_items && (in.Size() < rules.min_items ||
                                              in.Size() > rules.max_items))) {
      return MustBe(path, ItemsExpectation("an array", "items", rules));
    }
    out->clear();
    out->reserve(in.Size());
    for (rapidjson::SizeType i = 0; i < in.Size(); ++i) {
      X item{};
      absl::Status status =
          Codec<X>::Read(in[i], path.Index(i), NoRules(), &item);
      if (!status.ok()) return status;
      out->push_back(std::move(item));
    }
    return absl::OkStatus();
  }
  static void SchemaBody(JsonWriter& writer, const Rules& rules,
                         bool nullable) {
    WriteType("array", nullable, writer);
    writer.Key("items");
    writer.StartObject();
    Codec<X>::SchemaBody(writer, NoRules(), /*nullable=*/false);
    writer.EndObject();
    WriteItemsSchema("minItems", "maxItems", rules, writer);
  }
};

template <typename X>
struct Codec<std::map<std::string, X>> {
  static void Write(const std::map<std::string, X>& value, JsonWriter& writer) {
    writer.StartObject();
    for (const auto& entry : value) {
      WriteKey(entry.first, writer);
      Codec<X>::Write(entry.second, writer);
    }
    writer.EndObject();
  }
  static absl::Status Read(const rapidjson::Value& in, const Path& path,
                           const Rules& rules, std::map<std::string, X>* out) {
    if (!in.IsObject() ||
        (rules.has_items && (in.MemberCount() < rules.min_items ||
                             in.MemberCount() > rules.max_items))) {
      return MustBe(path, ItemsExpectation("an object", "entries", rules));
    }
    out->clear();
    for (auto it = in.MemberBegin(); it != in.MemberEnd(); ++it) {
      const absl::string_view key(it->name.GetString(),
                                  it->name.GetStringLength());
      const Path entry_path = path.Key(key);
      absl::Status status = CheckMapKey(key, entry_path);
      if (!status.ok()) return status;
      X item{};
      status = Codec<X>::Read(it->value, entry_path, NoRules(), &item);
      if (!status.ok()) return status;
      out->emplace(std::string(key), std::move(item));
    }
    return absl::OkStatus();
  }
  static void SchemaBody(JsonWriter& writer, const Rules& rules,
                         bool nullable) {
    WriteType("object", nullable, writer);
    writer.Key("additionalProperties");
    writer.StartObject();
    Codec<X>::SchemaBody(writer, NoRules(), /*nullable=*/false);
    writer.EndObject();
    WriteItemsSchema("minProperties", "maxProperties", rules, writer);
  }
};

// One Field() of a Shape<T>.
template <typename T>
class FieldBase {
 public:
  FieldBase(std::string name, Rules rules, bool required)
      : name_(std::move(name)), rules_(std::move(rules)), required_(required) {}
  virtual ~FieldBase() = default;

  // False for an empty optional: the field is left out.
  virtual bool Present(const T& object) const = 0;
  virtual void Write(const T& object, JsonWriter& writer) const = 0;
  virtual absl::Status Read(const rapidjson::Value& in, const Path& path,
                            T* object) const = 0;
  // Sets an optional member to nullopt (the field is missing).
  virtual void Clear(T* object) const = 0;
  virtual void SchemaBody(JsonWriter& writer) const = 0;

  const std::string& name() const { return name_; }
  const Rules& rules() const { return rules_; }
  bool required() const { return required_; }

 private:
  const std::string name_;
  const Rules rules_;
  const bool required_;
};

template <typename T, typename M>
class MemberField final : public FieldBase<T> {
 public:
  MemberField(std::string name, Rules rules, M T::*member)
      : FieldBase<T>(std::move(name), std::move(rules), !IsOptional<M>::value),
        member_(member) {}

  bool Present(const T& object) const override {
    if constexpr (IsOptional<M>::value) {
      return (object.*member_).has_value();
    } else {
      return true;
    }
  }
  void Write(const T& object, JsonWriter& writer) const override {
    Codec<M>::Write(object.*member_, writer);
  }
  absl::Status Read(const rapidjson::Value& in, const Path& path,
                    T* object) const override {
    return Codec<M>::Read(in, path, this->rules(), &(object->*member_));
  }
  void Clear(T* object) const override {
    if constexpr (IsOptional<M>::value) (object->*member_).reset();
  }
  void SchemaBody(JsonWriter& writer) const override {
    Codec<M>::SchemaBody(writer, this->rules(), /*nullable=*/false);
  }

 private:
  M T::*const member_;
};

}  // namespace json_internal

// The JSON shape of T: its fields in order, each bound to a member of T.
// Built with Field() calls, usually in `static auto T::Json()`.
template <typename T>
class Shape {
 public:
  // `title`, when not empty, becomes the schema's "title".
  explicit Shape(absl::string_view title = {}) : title_(title) {}

  // Adds the field `name` bound to `member`, checked by `rules` (Range(),
  // Length(), Pattern(), OneOf(), Items(), Description()).
  template <typename M, typename... R>
  Shape& Field(absl::string_view name, M T::*member, const R&... rules) & {
    static_assert(json_internal::IsSupported<M>::value,
                  "Field(): the member must be bool, int32_t, int64_t, "
                  "double, std::string, absl::Time, std::vector<X>, "
                  "std::map<std::string, X>, a type with a Json() or "
                  "JsonShape() shape, or an optional of one of these");
    json_internal::Rules merged;
    (json_internal::AddRule<typename json_internal::Unwrap<M>::type>(&merged,
                                                                     rules),
     ...);
    for (const auto& field : fields_) {
      if (field->name() == name) {
        json_internal::DieBadShape("two fields named \"" + std::string(name) +
                                   "\"");
      }
    }
    fields_.push_back(std::make_shared<const json_internal::MemberField<T, M>>(
        std::string(name), std::move(merged), member));
    return *this;
  }
  template <typename M, typename... R>
  Shape&& Field(absl::string_view name, M T::*member, const R&... rules) && {
    return std::move(Field(name, member, rules...));
  }

  // The building blocks of Write(), DecodeValue() and WriteSchema() below,
  // which apps call instead.
  void WriteObject(const T& value, JsonWriter& writer) const {
    writer.StartObject();
    for (const auto& field : fields_) {
      if (!field->Present(value)) continue;
      writer.Key(field->name().data(),
                 static_cast<rapidjson::SizeType>(field->name().size()));
      field->Write(value, writer);
    }
    writer.EndObject();
  }
  absl::Status ReadObject(const rapidjson::Value& in,
                          const json_internal::Path& path, T* out) const {
    if (!in.IsObject()) return json_internal::NotAnObject(path);
    std::vector<bool> seen(fields_.size(), false);
    for (auto it = in.MemberBegin(); it != in.MemberEnd(); ++it) {
      const absl::string_view name(it->name.GetString(),
                                   it->name.GetStringLength());
      const json_internal::Path field_path = path.Key(name);
      size_t index = 0;
      while (index < fields_.size() && fields_[index]->name() != name) ++index;
      if (index == fields_.size()) {
        return json_internal::UnknownField(field_path);
      }
      seen[index] = true;
      absl::Status status = fields_[index]->Read(it->value, field_path, out);
      if (!status.ok()) return status;
    }
    for (size_t i = 0; i < fields_.size(); ++i) {
      if (seen[i]) continue;
      if (fields_[i]->required()) {
        return json_internal::RequiredField(path.Key(fields_[i]->name()));
      }
      fields_[i]->Clear(out);
    }
    return absl::OkStatus();
  }
  void WriteSchemaBody(JsonWriter& writer, bool nullable) const {
    if (!title_.empty()) {
      writer.Key("title");
      json_internal::WriteString(title_, writer);
    }
    json_internal::WriteType("object", nullable, writer);
    writer.Key("properties");
    writer.StartObject();
    for (const auto& field : fields_) {
      writer.Key(field->name().data(),
                 static_cast<rapidjson::SizeType>(field->name().size()));
      writer.StartObject();
      if (!field->rules().description.empty()) {
        writer.Key("description");
        json_internal::WriteString(field->rules().description, writer);
      }
      field->SchemaBody(writer);
      writer.EndObject();
    }
    writer.EndObject();
    writer.Key("required");
    writer.StartArray();
    for (const auto& field : fields_) {
      if (!field->required()) continue;
      writer.String(field->name().data(),
                    static_cast<rapidjson::SizeType>(field->name().size()));
    }
    writer.EndArray();
    writer.Key("additionalProperties");
    writer.Bool(false);
  }

 private:
  std::string title_;
  std::vector<std::shared_ptr<const json_internal::FieldBase<T>>> fields_;
};

// The shape of T, built once from T::Json() or JsonShape(const T*).
template <typename T>
const Shape<T>& ShapeOf() {
  static_assert(json_internal::HasShape<T>::value,
                "T needs `static Shape<T> Json()` or a free function "
                "`Shape<T> JsonShape(const T*)` in its namespace");
  static const Shape<T>* const shape = [] {
    if constexpr (json_internal::HasMemberShape<T>::value) {
      return new Shape<T>(T::Json());
    } else {
      return new Shape<T>(JsonShape(static_cast<const T*>(nullptr)));
    }
  }();
  return *shape;
}

namespace json_internal {

template <typename V>
struct Codec<V, std::enable_if_t<HasShape<V>::value>> {
  static void Write(const V& value, JsonWriter& writer) {
    ShapeOf<V>().WriteObject(value, writer);
  }
  static absl::Status Read(const rapidjson::Value& in, const Path& path,
                           const Rules&, V* out) {
    return ShapeOf<V>().ReadObject(in, path, out);
  }
  static void SchemaBody(JsonWriter& writer, const Rules&, bool nullable) {
    ShapeOf<V>().WriteSchemaBody(writer, nullable);
  }
};

}  // namespace json_internal

// A rapidjson::Document whose first 2 KiB of values live inside this
// object (on the stack, for a local): a default Document takes a 64 KiB
// block from malloc for its first value, which showed in the profile of
// every command and every projected event. Larger documents grow in 16 KiB
// blocks. Neither copyable nor movable (the document points into it).
//
//   json::SmallDocument small;
//   small.doc.Parse(text.data(), text.size());
class SmallDocument {
 public:
  SmallDocument() = default;
  SmallDocument(const SmallDocument&) = delete;
  SmallDocument& operator=(const SmallDocument&) = delete;

 private:
  char buffer_[2048];
  rapidjson::MemoryPoolAllocator<> allocator_{buffer_, sizeof(buffer_),
                                              16 * 1024};

 public:
  rapidjson::Document doc{&allocator_, 256};
};

// Writes `value` as a JSON object into `writer`, e.g. as one member of a
// larger document. Never fails (see the header comment on encoding).
template <typename T>
void Write(const T& value, JsonWriter& writer) {
  ShapeOf<T>().WriteObject(value, writer);
}

// `value` as JSON text: {"by":5}.
template <typename T>
std::string Encode(const T& value) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  Write(value, writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

// Reads a T from `value`, an already parsed JSON object. `path` is prepended
// to the field paths in error messages ("body" gives "body.lines[2].sku").
// Returns kInvalidArgument with code "invalid_request" naming the field when
// `value` does not have T's shape (see the header comment); the caller should
// pass the error on to the client unchanged.
template <typename T>
absl::StatusOr<T> DecodeValue(const rapidjson::Value& value,
                              absl::string_view path = {}) {
  absl::Status status = json_internal::CheckTree(value, path);
  if (!status.ok()) return status;
  T out{};
  status = ShapeOf<T>().ReadObject(value, json_internal::Path(path), &out);
  if (!status.ok()) return status;
  return out;
}

// Reads a T from the JSON text `json`. Returns kInvalidArgument with code
// "invalid_json" when `json` is not one JSON document in valid UTF-8 (the
// message names the offset), with code "invalid_request" when it holds a
// raw NUL byte, and with code "invalid_request" naming the field when it
// does not have T's shape; the caller should pass the error on
// to the client unchanged.
template <typename T>
absl::StatusOr<T> Decode(absl::string_view json) {
  SmallDocument small;
  absl::Status status = json_internal::ParseText(json, &small.doc);
  if (!status.ok()) return status;
  return DecodeValue<T>(small.doc);
}

// Writes the JSON Schema of T, without "$schema", as one value into
// `writer` (e.g. into an OpenAPI document).
template <typename T>
void WriteSchema(JsonWriter& writer) {
  writer.StartObject();
  ShapeOf<T>().WriteSchemaBody(writer, /*nullable=*/false);
  writer.EndObject();
}

// The JSON Schema (draft 2020-12) of T as text, with "$schema".
template <typename T>
std::string SchemaOf() {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  writer.Key("$schema");
  writer.String("https://json-schema.org/draft/2020-12/schema");
  ShapeOf<T>().WriteSchemaBody(writer, /*nullable=*/false);
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace json
}  // namespace cqrs

#endif  // FRAMEWORK_JSON_SHAPE_H_
